"""TF Serving warmup records: real ``PredictionLog`` protos (tensorflow-serving-api) of a sample request.

TF Serving replays ``assets.extra/tf_serving_warmup_requests`` (a TFRecord file of
``PredictionLog``) when it loads a version, so the first user request does not pay for
graph warm-up. The sample image is generated (a gradient with a disc), encoded as JPEG.
"""

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

WARMUP_FILE = "tf_serving_warmup_requests"


def sample_jpeg(height, width):
    """A JPEG of a colour gradient with a bright disc, ``height`` x ``width``."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), np.full_like(x, 96)], axis=-1)
    disc = (y - height / 2) ** 2 + (x - width / 2) ** 2 < (min(height, width) / 4) ** 2
    image[disc] = (250, 240, 40)
    return tf.io.encode_jpeg(image.astype(np.uint8)).numpy()


def prediction_logs(model_name, images, *, signature="serving_default", input_name="image_bytes"):
    """One ``PredictionLog`` per batch size 1..len(images): the request TF Serving replays."""
    logs = []
    for count in range(1, len(images) + 1):
        request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model_name,
                                                                            signature_name=signature))
        request.inputs[input_name].CopyFrom(tf.make_tensor_proto(images[:count], dtype=tf.string))
        logs.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return logs


def write(path, logs):
    with tf.io.TFRecordWriter(path) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def read(path):
    """The ``PredictionLog`` protos of a warmup file."""
    logs = []
    for record in tf.data.TFRecordDataset(path):
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(record.numpy())
        logs.append(log)
    return logs
