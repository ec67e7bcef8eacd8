"""``evaluate``: top-1/top-5 of a run or a kcnn weights file on a dataset split, single- or 10-crop.

Single crop is training's validation, recomputed: the same pipeline
(``ClassificationData.pipeline``) with the evaluation transform the weights file records
(``kcnn.weights.eval_transform_of``: "center_crop" after ImageNet-style recipes and for imported
ImageNet weights, else "resize"; a run directory and its ``model.weights.h5`` alike), the same
:class:`~kcnn.train.validation.Validator`, hence the same loss (cross-entropy of the logits).
``ten_crop`` is AlexNet's test procedure (``kcnn.data.augment.ten_crops``): the four corner crops
and the center crop of the central window of the image resized as "center_crop" does (the shorter
side, aspect ratio kept), and their mirror images; softmax averaged, the loss that of the average.
"""

import os

import keras
import tensorflow as tf

from kcnn import data
from kcnn.tasks import ImageClassifier
from kcnn.train.task_data import ClassificationData
from kcnn.train.validation import Validator
from kcnn.weights import Preprocessing, eval_transform_of, read_metadata


def _weights_path(source):
    source = os.fspath(source)
    path = os.path.join(source, "model.weights.h5") if os.path.isdir(source) else source
    if not os.path.isfile(path):
        raise ValueError(f"{source!r} is neither a run directory with model.weights.h5 nor a weights file")
    return path


def evaluate(source, dataset, *, split="val", ten_crop=False, batch_size=64, data_dir=None, manual_dir=None):
    """``{"top1", "top5", "loss", "count"}`` (percentages, mean loss, images) of ``source`` (a run directory or
    a kcnn weights file) on ``dataset``'s ``split``."""
    path = _weights_path(source)
    metadata = read_metadata(path)
    if metadata is None:
        raise ValueError(f"{path!r} has no kcnn metadata (architecture, classes, preprocessing): "
                         "evaluate a kcnn run or a file from `kcnn weights import`")
    model = ImageClassifier(metadata["architecture"], metadata["classes"], input_shape=metadata["input_shape"],
                            backbone_options=metadata["options"], backbone_weights=path)
    task_data = ClassificationData(dataset, input_shape=metadata["input_shape"],
                                   preprocessing=Preprocessing.from_dict(metadata["preprocessing"]),
                                   eval_transform=eval_transform_of(metadata), data_dir=data_dir,
                                   manual_dir=manual_dir)
    if task_data.info.num_classes != metadata["classes"]:
        raise ValueError(f"{dataset!r} has {task_data.info.num_classes} classes, the model {metadata['classes']}")
    if ten_crop:
        return _ten_crop(model, task_data, split, batch_size)
    validate = Validator(model, task_data, tf.distribute.get_strategy(), split)
    metrics = validate(task_data.pipeline(split, training=False, seed=0, batch_size=batch_size))
    return {**metrics, "count": int(validate.sums["count"].numpy())}


def _ten_crop(model, task_data, split, batch_size):
    height, width, channels = task_data.input_shape
    batches, _ = data.load_classification(task_data.dataset, split, image_size=(height, width), channels=channels,
                                          batch_size=batch_size, training=False, ten_crop=True,
                                          data_dir=task_data.data_dir, manual_dir=task_data.manual_dir)

    @tf.function
    def probabilities(crops):  # [B, 10, H, W, C] -> [B, classes]
        per_crop = tf.transpose(task_data.preprocessing(crops), [1, 0, 2, 3, 4])
        scores = tf.map_fn(lambda crop: model.decode(model(crop, training=False)), per_crop,
                           fn_output_signature=tf.float32)
        return tf.reduce_mean(scores, axis=0)

    totals = {}
    for crops, labels in batches:
        scores = probabilities(crops)
        sums = {"loss": tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, scores)),
                **model.statistics(labels, scores)}
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    metrics = {key: float(value) for key, value in model.summarize(totals).items()}
    count = int(totals.get("count", 0))
    return {**metrics, "loss": totals.get("loss", float("nan")) / max(count, 1), "count": count}
