"""Serving signatures: decoding, resizing and the weights' normalisation inside the graph, outputs per task.

Two signatures per model:

- ``serving_default(image_bytes: string [N])``: JPEG or PNG files (TF Serving's REST
  ``{"b64": ...}`` instances and gRPC ``DT_STRING`` tensors both arrive here), each decoded
  to RGB and resized to the network's input;
- ``serving_images(images: uint8 [N, H, W, 3])``: pixels of one size.

Outputs are float32 (or int32 ids) whatever the training precision:

- classification: ``probabilities`` [N, classes], ``classes`` [N, k] (top-k ids),
  ``labels`` [N, k] (their names), ``scores`` [N, k];
- segmentation: ``segmentation_mask`` int32 [N, H, W] at each input image's own size (a
  batch of files of several sizes is padded with 255 at the bottom/right to the largest),
  ``image_size`` int32 [N, 2] (height, width of each image) and ``probabilities`` [N, h, w,
  classes] at the network's size;
- detection (the TF Object Detection API's names): ``detection_boxes`` [N, max, 4] normalised
  (ymin, xmin, ymax, xmax) to the input image, ``detection_scores``, ``detection_classes``
  (float ids), ``num_detections`` int32, ``detection_labels`` (names).

A batch with no image, or a string that is neither JPEG nor PNG, fails with an
``InvalidArgumentError`` that says so.
"""

import tensorflow as tf

from kcnn.tasks.detection import anchors_for
from kcnn.tasks.nms import decode_detections

EVAL_CROP_FRACTION = 0.875  # ImageNet evaluation: resize to size / 0.875, center crop
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_batch(count):
    tf.debugging.assert_positive(count, message="empty batch: send at least one image")


def _decode(encoded):
    """One JPEG/PNG string -> RGB float32 [H, W, 3] (0..255); anything else fails naming the problem."""
    is_png = tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    tf.debugging.Assert(tf.logical_or(tf.image.is_jpeg(encoded), is_png),
                        ["image_bytes holds a string that is neither a JPEG nor a PNG image"])
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.cast(image, tf.float32)


class ServingModule(tf.Module):
    """The model, its preprocessing and its task's post-processing, as two tf.functions."""

    def __init__(self, model, *, task, preprocessing, class_names, center_crop=False, top_k=5):
        super().__init__()
        self.model, self.task, self.preprocessing = model, task, preprocessing
        self.height, self.width, self.channels = (int(d) for d in model.input.shape[1:])
        self.class_names = tf.constant(list(class_names))
        self.center_crop, self.top_k = center_crop, min(top_k, len(class_names))
        if task == "detection":
            self.anchors = anchors_for(model)

    def signatures(self):
        images = tf.function(self.serve_images, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        files = tf.function(self.serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        return {"serving_default": files, "serving_images": images}

    def _to_network(self, images):
        """RGB float [N, H, W, 3] (0..255) -> the network's input: its size, channels and normalisation."""
        if self.center_crop:
            larger = (round(self.height / EVAL_CROP_FRACTION), round(self.width / EVAL_CROP_FRACTION))
            images = tf.image.resize(images, larger)
            top, left = (larger[0] - self.height) // 2, (larger[1] - self.width) // 2
            images = images[:, top:top + self.height, left:left + self.width, :]
        else:
            images = tf.image.resize(images, (self.height, self.width))
        if self.channels == 1:
            images = tf.image.rgb_to_grayscale(images)
        return self.preprocessing(images)

    def serve_images(self, images):
        _check_batch(tf.shape(images)[0])
        images = tf.cast(images, tf.float32)
        size = tf.shape(images)[1:3]
        sizes = tf.tile(size[None], [tf.shape(images)[0], 1])
        return self._outputs(self._to_network(images), sizes)

    def serve_bytes(self, image_bytes):
        _check_batch(tf.size(image_bytes))
        sizes = tf.map_fn(lambda encoded: tf.shape(_decode(encoded))[:2], image_bytes,
                          fn_output_signature=tf.TensorSpec([2], tf.int32))
        network_input = tf.map_fn(
            lambda encoded: self._to_network(_decode(encoded)[None])[0], image_bytes,
            fn_output_signature=tf.TensorSpec([self.height, self.width, self.channels], tf.float32))
        return self._outputs(network_input, sizes)

    def _outputs(self, network_input, sizes):
        outputs = self.model(network_input, training=False)
        if self.task == "classification":
            return self._classification(outputs)
        if self.task == "segmentation":
            return self._segmentation(outputs, sizes)
        return self._detection(outputs)

    def _classification(self, logits):
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
        scores, classes = tf.math.top_k(probabilities, k=self.top_k)
        return {"probabilities": probabilities, "classes": classes, "scores": scores,
                "labels": tf.gather(self.class_names, classes)}

    def _segmentation(self, logits, sizes):
        logits = tf.cast(logits, tf.float32)
        largest = tf.reduce_max(sizes, axis=0)

        def mask(example):
            image_logits, size = example
            resized = tf.image.resize(image_logits[None], size)[0]
            labels = tf.argmax(resized, axis=-1, output_type=tf.int32)
            return tf.pad(labels, [[0, largest[0] - size[0]], [0, largest[1] - size[1]]], constant_values=255)

        masks = tf.map_fn(mask, (logits, sizes), fn_output_signature=tf.TensorSpec([None, None], tf.int32))
        return {"segmentation_mask": masks, "image_size": sizes, "probabilities": tf.nn.softmax(logits)}

    def _detection(self, outputs):
        found = decode_detections(outputs, self.anchors, image_size=(self.height, self.width))
        labels = tf.gather(self.class_names, tf.cast(found["detection_classes"], tf.int32))
        return {**found, "detection_labels": labels}
