"""Serving signatures: decoding, the evaluation transform and the weights' normalisation inside the graph,
outputs per task.

Two signatures per model:

- ``serving_default(image_bytes: string [N])``: JPEG or PNG files (TF Serving's REST
  ``{"b64": ...}`` instances and gRPC ``DT_STRING`` tensors both arrive here), each decoded
  to RGB as training's folder pipeline decodes (``kcnn.data.sources.decode_image``);
- ``serving_images(images: uint8 [N, H, W, 3])``: RGB pixels of one size.

Each image then goes to the network's input exactly as in training's validation and ``kcnn
evaluate``: ``kcnn.data.augment.eval_transform`` (the network's channels first, then the
weights' evaluation transform: "center_crop", the shorter side to size/0.875 keeping the aspect
ratio and the central crop, or "resize"; segmenters and detectors resize), then the weights'
normalisation.

Outputs are float32 (or int32 ids) whatever the training precision:

- classification: ``probabilities`` [N, classes], ``classes`` [N, k] (top-k ids),
  ``labels`` [N, k] (their names), ``scores`` [N, k];
- segmentation: ``segmentation_mask`` int32 [N, H, W] at each input image's own size (a
  batch of files of several sizes is padded with 255 at the bottom/right to the largest),
  ``image_size`` int32 [N, 2] (height, width of each image) and ``probabilities`` [N, h, w,
  classes] at the network's size;
- detection (the TF Object Detection API's names): ``detection_boxes`` [N, max, 4] normalised
  (ymin, xmin, ymax, xmax) to the input image, ``detection_scores``, ``detection_classes``
  (float ids), ``num_detections`` int32, ``detection_labels`` (names); instance segmentation adds
  ``detection_masks`` uint8 [N, max, H, W], each detection's mask (probability >= 0.5, as the TF Object
  Detection API's reframed masks) pasted at each input image's own size (padded with 0 to the largest),
  and ``image_size`` int32 [N, 2].

A batch with no image, or a string that is neither JPEG nor PNG, fails with an
``InvalidArgumentError`` that says so.
"""

import tensorflow as tf

from kcnn.data.augment import check_eval_transform, eval_transform
from kcnn.data.sources import decode_image
from kcnn.tasks.masks import paste_masks

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_batch(count):
    tf.debugging.assert_positive(count, message="empty batch: send at least one image")


def _decode(encoded):
    """One JPEG/PNG string -> RGB float32 [H, W, 3] (0..255); anything else fails naming the problem."""
    is_png = tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    check = tf.debugging.Assert(tf.logical_or(tf.image.is_jpeg(encoded), is_png),
                                ["image_bytes holds a string that is neither a JPEG nor a PNG image"])
    with tf.control_dependencies([check]):  # before the decode, whose own error would come first otherwise
        return tf.cast(decode_image(encoded), tf.float32)


class ServingModule(tf.Module):
    """The model, its preprocessing and its task's post-processing, as two tf.functions."""

    def __init__(self, model, *, task, preprocessing, class_names, eval_transform="resize", top_k=5):
        super().__init__()
        self.model, self.task, self.preprocessing = model, task, preprocessing
        self.height, self.width, self.channels = (int(d) for d in model.input.shape[1:])
        self.class_names = tf.constant(list(class_names))
        self.eval_transform, self.top_k = check_eval_transform(eval_transform), min(top_k, len(class_names))

    def signatures(self):
        images = tf.function(self.serve_images, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        files = tf.function(self.serve_bytes, input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        return {"serving_default": files, "serving_images": images}

    def _to_network(self, image):
        """One RGB float image [H, W, 3] (0..255) -> the network's input and the image's (height, width)."""
        transformed = eval_transform(image, (self.height, self.width), self.eval_transform, channels=self.channels)
        return self.preprocessing(transformed), tf.shape(image)[:2]

    def _serve(self, to_network, inputs):
        """The outputs for a batch whose images ``to_network`` transforms one by one."""
        network_input, sizes = tf.map_fn(to_network, inputs, fn_output_signature=(
            tf.TensorSpec([self.height, self.width, self.channels], tf.float32), tf.TensorSpec([2], tf.int32)))
        return self._outputs(network_input, sizes)

    def serve_images(self, images):
        _check_batch(tf.shape(images)[0])
        return self._serve(lambda image: self._to_network(tf.cast(image, tf.float32)), images)

    def serve_bytes(self, image_bytes):
        _check_batch(tf.size(image_bytes))
        return self._serve(lambda encoded: self._to_network(_decode(encoded)), image_bytes)

    def _outputs(self, network_input, sizes):
        outputs = self.model(network_input, training=False)
        if self.task == "classification":
            return self._classification(outputs)
        if self.task == "segmentation":
            return self._segmentation(outputs, sizes)
        return self._detection(outputs, sizes)

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

    def _detection(self, outputs, sizes):
        found = self.model.detect(outputs)
        labels = tf.gather(self.class_names, tf.cast(found["detection_classes"], tf.int32))
        if "detection_masks" not in found:
            return {**found, "detection_labels": labels}
        largest = tf.reduce_max(sizes, axis=0)

        def pasted(example):
            masks, boxes, size = example
            pixels = boxes * tf.cast(tf.tile(size, [2]), tf.float32)
            binary = tf.cast(paste_masks(masks[None], pixels[None], (size[0], size[1]))[0] >= 0.5, tf.uint8)
            return tf.pad(binary, [[0, 0], [0, largest[0] - size[0]], [0, largest[1] - size[1]]])

        masks = tf.map_fn(pasted, (found["detection_masks"], found["detection_boxes"], sizes),
                          fn_output_signature=tf.TensorSpec([None, None, None], tf.uint8))
        return {**found, "detection_masks": masks, "detection_labels": labels, "image_size": sizes}
