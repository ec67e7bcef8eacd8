"""Task models: a zoo network with its task's head, loss, metrics and decoding, as Keras models.

Each class builds its network from a zoo name (keras-hub's Task habit): the model
carries its loss (``compute_loss``) and metrics (``compute_metrics``), so a user can
``compile(optimizer)``, ``fit``, ``evaluate``, ``predict`` (decoded outputs) and
``save("x.keras")`` / ``keras.saving.load_model("x.keras")`` it the Keras way; calling
the model returns raw outputs (logits, or RetinaNet's per-anchor outputs).

Inputs are normalised images (``kcnn.weights.PRESETS``; the zoo models' convention).
``kcnn pretrain``/``finetune`` drive the same models with ``per_example_loss`` and
``statistics`` (additive sums a distributed loop can add up across replicas), so the
numbers of ``fit`` and of the CLI come from one definition.

>>> import numpy as np
>>> model = ImageSegmenter("resnet20", 3, image_size=(32, 32), head="fcn", head_options={"width": 8})
>>> model.compile(optimizer="adam")
>>> images, masks = np.zeros((4, 32, 32, 3), "float32"), np.zeros((4, 32, 32), "int32")
>>> history = model.fit(images, masks, epochs=1, verbose=0)
>>> sorted(history.history)
['loss', 'mean_iou', 'pixel_accuracy']
>>> model.predict(images, verbose=0).shape  # per-pixel classes
(4, 32, 32)
"""

import os

import keras
import tensorflow as tf
from keras import ops

from kcnn import registry
from kcnn.backbone import backbone as build_backbone
from kcnn.models import build, deep_graph_recursion
from kcnn.tasks import segmentation
from kcnn.tasks.anchors import encode_targets
from kcnn.tasks.detection import anchors_for, build_retinanet, retinanet_loss
from kcnn.tasks.masks import paste_masks
from kcnn.tasks.nms import decode_detections
from kcnn.tasks.rcnn import build_rcnn

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers (Szegedy et al. 2014, section 5)
BACKBONE_OPTIONS_BY_FAMILY = {"output_stride": ("resnet",)}  # what a task may ask of some backbones only


class TaskMetrics(keras.metrics.Metric):
    """A task's additive ``statistics`` summed over batches, reported as its ``summarize`` (``fit``'s metrics)."""

    def __init__(self, task, name="task_metrics", **kwargs):
        super().__init__(name=name, **kwargs)
        # the task's functions, not the model itself: saving walks a metric's attributes
        self._statistics, self._summarize = task.statistics, task.summarize
        self.sums = {key: self.add_variable(shape, initializer="zeros", name=key)
                     for key, shape in task.statistics_shapes().items()}

    def update_state(self, y_true, y_pred, sample_weight=None):
        for key, value in self._statistics(y_true, y_pred).items():
            self.sums[key].assign_add(ops.cast(value, self.sums[key].dtype))

    def result(self):
        return self._summarize({key: ops.convert_to_tensor(variable) for key, variable in self.sums.items()})


class Task(keras.Model):
    """The common part of the task models: config, loss and metrics hooks, decoded ``predict``.

    Subclasses give ``per_example_loss(y, y_pred) -> [B]``, ``statistics(y, y_pred)`` (additive
    float32 tensors), ``statistics_shapes()``, ``summarize(sums)`` and ``decode(y_pred)``. A batch's
    loss is the mean of ``per_example_loss``, or, where ``loss_weights(y)`` gives per-example weights
    (a segmenter's labelled pixels), the sum of ``per_example_loss`` over the sum of the weights.
    """

    task = None
    key_metric = None

    def __init__(self, network, arguments, *, backbone_layers, **kwargs):
        with deep_graph_recursion():
            super().__init__(inputs=network.input, outputs=network.output, **kwargs)
        self.arguments = arguments  # the constructor's arguments: get_config
        self.num_classes = arguments["num_classes"]
        self.backbone_layers = backbone_layers  # names of the layers that came from the zoo network
        self.task_metrics = TaskMetrics(self)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, **self.arguments}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        per_example = self.per_example_loss(y, y_pred)
        weights = self.loss_weights(y)
        if weights is None:
            weights = ops.ones_like(per_example)
        if sample_weight is not None:
            sample_weight = ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
            per_example, weights = per_example * sample_weight, weights * sample_weight
        mean = ops.sum(per_example) / ops.maximum(ops.sum(weights), 1e-12)
        total = self._aggregate_additional_loss(mean)  # Keras' distribution scaling
        for extra in self.losses:
            total = total + self._aggregate_additional_loss(extra)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.task_metrics.update_state(y, y_pred)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.decode(self(x, training=False))

    def loss_weights(self, y):
        """Per-example weights of the batch's loss mean, or ``None``: every example weighs one."""
        return None

    def statistics_shapes(self):
        return {}

    def statistics(self, y, y_pred):
        return {}

    def summarize(self, sums):
        return {}


def _zoo_name(name):
    return registry.get(name).name


@keras.saving.register_keras_serializable(package="kcnn")
class ImageClassifier(Task):
    """A zoo network with its paper's classifier, on ``num_classes`` classes: logits out, softmax ``predict``.

    GoogLeNet with ``backbone_options={"aux_logits": True}`` adds its auxiliary losses (weight 0.3).

    >>> model = ImageClassifier("lenet5", 10)
    >>> model.output_shape, model.key_metric
    ((None, 10), 'top1')
    """

    task = "classification"
    key_metric = "top1"

    def __init__(self, backbone, num_classes, *, input_shape=None, backbone_options=None, backbone_weights=None,
                 **kwargs):
        backbone, options = _zoo_name(backbone), dict(backbone_options or {})
        shape = tuple(input_shape) if input_shape else None
        if backbone_weights is not None:
            options["weights"] = os.fspath(backbone_weights)
        network = build(backbone, classes=num_classes, input_shape=shape, classifier_activation=None, **options)
        options.pop("weights", None)
        kwargs.setdefault("name", network.name)
        super().__init__(network, {"backbone": backbone, "num_classes": int(num_classes),
                                   "input_shape": list(network.input.shape[1:]), "backbone_options": options},
                         backbone_layers=[layer.name for layer in network.layers], **kwargs)

    def per_example_loss(self, y, y_pred):
        logits, aux = _main_and_aux(y_pred)
        labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
        loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        for aux_logits in aux:
            loss += AUX_LOSS_WEIGHT * keras.losses.sparse_categorical_crossentropy(labels, aux_logits,
                                                                                   from_logits=True)
        return loss

    def statistics_shapes(self):
        return {"top1": (), "top5": (), "count": ()}

    def statistics(self, y, y_pred):
        logits, _ = _main_and_aux(y_pred)
        labels = tf.cast(tf.reshape(y, [-1]), tf.int32)
        return {"top1": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)),
                "top5": tf.reduce_sum(tf.cast(tf.math.in_top_k(labels, logits, min(5, logits.shape[-1])),
                                              tf.float32)),
                "count": tf.cast(tf.shape(labels)[0], tf.float32)}

    def summarize(self, sums):
        count = ops.maximum(sums["count"], 1.0)
        return {"top1": 100.0 * sums["top1"] / count, "top5": 100.0 * sums["top5"] / count}

    def decode(self, y_pred):
        logits, _ = _main_and_aux(y_pred)
        return tf.nn.softmax(logits)


def _main_and_aux(outputs):
    if isinstance(outputs, dict):
        return (tf.cast(outputs["predictions"], tf.float32),
                [tf.cast(v, tf.float32) for k, v in sorted(outputs.items()) if k != "predictions"])
    return tf.cast(outputs, tf.float32), []


def _check_backbone_options(name, options):
    family = registry.get(name).family
    for key in options:
        families = BACKBONE_OPTIONS_BY_FAMILY.get(key)
        if families is not None and family not in families:
            raise ValueError(f"{key} is an option of {', '.join(families)} backbones, not of {name} ({family})")


def _features(backbone, image_size, options, weights):
    """(zoo name, backbone options as given, the multi-scale backbone at ``image_size``)."""
    name, options = _zoo_name(backbone), dict(options or {})
    _check_backbone_options(name, options)
    built = dict(options, weights=os.fspath(weights)) if weights is not None else options
    size = tuple(int(side) for side in image_size)
    return name, options, build_backbone(name, input_shape=(*size, registry.get(name).input_shape[2]), **built)


@keras.saving.register_keras_serializable(package="kcnn")
class ImageSegmenter(Task):
    """A segmentation head (``fcn``, ``deeplabv3``, ``unet``) on a zoo backbone: per-pixel logits,
    ``predict`` gives class ids; pixels labelled ``ignore_label`` count in neither loss nor metrics.

    Targets are masks [B, H, W] at the network's size (training crops), or, to score at each image's
    original resolution (evaluation), ``{"masks": [B, H, W] padded with ignore_label, "image_size":
    [B, 2]}``: the logits are resized bilinearly to each image's size first. The loss is the mean over
    the batch's labelled pixels."""

    task = "segmentation"
    key_metric = "mean_iou"

    def __init__(self, backbone, num_classes, *, image_size, head="fcn", backbone_options=None, head_options=None,
                 ignore_label=segmentation.IGNORE_LABEL, backbone_weights=None, **kwargs):
        self.ignore_label = int(ignore_label)
        name, options, features = _features(backbone, image_size, backbone_options, backbone_weights)
        network = segmentation.build_segmenter(features, num_classes, head=head, **dict(head_options or {}))
        kwargs.setdefault("name", network.name)
        super().__init__(network, {"backbone": name, "num_classes": int(num_classes),
                                   "image_size": list(features.input.shape[1:3]), "head": head,
                                   "backbone_options": options, "head_options": dict(head_options or {}),
                                   "ignore_label": int(ignore_label)},
                         backbone_layers=[layer.name for layer in features.layers], **kwargs)

    def per_example_loss(self, y, y_pred):
        masks, logits = self._at_labels(y, y_pred)
        return segmentation.segmentation_loss(masks, logits, ignore_label=self.ignore_label)

    def loss_weights(self, y):
        masks = y["masks"] if isinstance(y, dict) else y
        return segmentation.labelled_pixels(masks, ignore_label=self.ignore_label)

    def statistics_shapes(self):
        return {"confusion": (self.num_classes, self.num_classes)}

    def statistics(self, y, y_pred):
        masks, logits = self._at_labels(y, y_pred)
        return {"confusion": segmentation.confusion_matrix(masks, logits, self.num_classes,
                                                           ignore_label=self.ignore_label)}

    @staticmethod
    def _at_labels(y, y_pred):
        """(masks, logits) at the masks' resolution: evaluation's original-size labels, or the network's."""
        if isinstance(y, dict):
            return y["masks"], segmentation.at_label_resolution(y_pred, y["masks"], y["image_size"])
        return y, y_pred

    def summarize(self, sums):
        metrics = segmentation.confusion_metrics(sums["confusion"])
        return {key: metrics[key] for key in ("mean_iou", "pixel_accuracy")}

    def decode(self, y_pred):
        return tf.argmax(y_pred, axis=-1, output_type=tf.int32)


@keras.saving.register_keras_serializable(package="kcnn")
class ObjectDetector(Task):
    """A detector on a zoo backbone: RetinaNet (``head="retinanet"``) or Faster R-CNN (``"faster_rcnn"``).

    Targets are ground truth as kcnn's loaders give it: ``{"boxes": [B, M, 4] (ymin, xmin, ymax, xmax)
    normalised to [0, 1], "classes": [B, M] (-1 pads), "num_boxes": [B]}``; the loss matches them to the
    anchors (and, for Faster R-CNN, samples the RoIs) itself. Calling the model gives its raw outputs
    (RetinaNet's per-anchor outputs; Faster R-CNN's pyramid and RPN outputs); ``predict`` gives ``boxes``
    in input pixels, ``scores``, ``classes`` and ``num_detections`` after class-wise NMS.

    >>> import numpy as np
    >>> detector = ObjectDetector("resnet20", 2, image_size=(64, 64),
    ...                           head_options={"fpn_width": 16, "head_width": 16, "head_depth": 1})
    >>> detector.compile(optimizer="adam")
    >>> images = np.zeros((2, 64, 64, 3), "float32")
    >>> targets = {"boxes": np.array([[[0.1, 0.1, 0.5, 0.5]], [[0.2, 0.3, 0.9, 0.8]]], "float32"),
    ...            "classes": np.array([[0], [1]]), "num_boxes": np.array([1, 1])}
    >>> history = detector.fit(images, targets, epochs=1, verbose=0)
    >>> sorted(detector.predict(images, verbose=0))
    ['boxes', 'classes', 'num_detections', 'scores']
    >>> two_stage = ObjectDetector("resnet20", 2, image_size=(64, 64), head="faster_rcnn",
    ...                            head_options={"fpn_width": 16, "representation_size": 32, "sampled_rois": 64})
    >>> two_stage.compile(optimizer="adam")
    >>> history = two_stage.fit(images, targets, epochs=1, verbose=0)
    >>> two_stage.predict(images, verbose=0)["boxes"].shape
    (2, 100, 4)
    """

    task = "detection"
    key_metric = "mAP50"
    heads = ("retinanet", "faster_rcnn")

    def __init__(self, backbone, num_classes, *, image_size, head=None, backbone_options=None,
                 head_options=None, backbone_weights=None, **kwargs):
        head = self.heads[0] if head is None else head
        if head not in self.heads:
            raise ValueError(f"unknown {self.task} head {head!r}; accepted: {', '.join(self.heads)}")
        name, options, features = _features(backbone, image_size, backbone_options, backbone_weights)
        size, head_options = tuple(features.input.shape[1:3]), dict(head_options or {})
        if head == "retinanet":
            network, roi_heads = build_retinanet(features, num_classes, image_size=size, **head_options), None
        else:
            network, roi_heads = build_rcnn(features, num_classes, image_size=size, masks=head == "mask_rcnn",
                                            **head_options)
        kwargs.setdefault("name", network.name)
        super().__init__(network, {"backbone": name, "num_classes": int(num_classes), "image_size": list(size),
                                   "head": head, "backbone_options": options, "head_options": head_options},
                         backbone_layers=[layer.name for layer in features.layers], **kwargs)
        self.image_size, self.roi_heads = size, roi_heads  # the second stage, outside the functional graph
        self.anchors = anchors_for(self) if roi_heads is None else None

    def per_example_loss(self, y, y_pred):
        if self.roi_heads is not None:
            return self.roi_heads.loss(y, y_pred)

        def encode(example):
            boxes, classes, count = example
            return encode_targets(boxes, classes, count, self.anchors, image_size=self.image_size)

        class_targets, box_targets = tf.map_fn(
            encode, (tf.cast(y["boxes"], tf.float32), tf.cast(y["classes"], tf.int32),
                     tf.cast(y["num_boxes"], tf.int32)),
            fn_output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 4], tf.float32)))
        return retinanet_loss(class_targets, box_targets, y_pred)

    def detect(self, y_pred):
        """Detections with boxes normalised to [0, 1] (the TF Object Detection API's layout); Mask R-CNN adds
        ``detection_masks`` [B, 100, 28, 28], box-relative probabilities."""
        if self.roi_heads is not None:
            return self.roi_heads.detect(y_pred)
        return decode_detections(y_pred, self.anchors, image_size=self.image_size)

    def decode(self, y_pred):
        return self._in_pixels(self.detect(y_pred))

    def _in_pixels(self, found):
        """``predict``'s layout of :meth:`detect`'s detections: boxes in input pixels, int32 classes."""
        height, width = self.image_size
        return {"boxes": found["detection_boxes"] * [height, width, height, width],
                "scores": found["detection_scores"], "classes": tf.cast(found["detection_classes"], tf.int32),
                "num_detections": found["num_detections"]}


@keras.saving.register_keras_serializable(package="kcnn")
class InstanceSegmenter(ObjectDetector):
    """Mask R-CNN on a zoo backbone: :class:`ObjectDetector`'s targets plus ``"masks"`` ``[B, M, H, W]`` (each
    object's 0/1 mask at the input size); ``predict`` adds ``masks`` ``[B, 100, H, W]`` uint8, each detection's
    mask pasted into the input image (probability >= 0.5).

    >>> import numpy as np
    >>> model = InstanceSegmenter("resnet20", 1, image_size=(64, 64),
    ...                           head_options={"fpn_width": 8, "representation_size": 16, "mask_width": 8,
    ...                                         "sampled_rois": 32})
    >>> model.compile(optimizer="adam")
    >>> masks = np.zeros((1, 1, 64, 64), "uint8")
    >>> masks[0, 0, 8:40, 8:40] = 1
    >>> targets = {"boxes": np.array([[[0.125, 0.125, 0.625, 0.625]]], "float32"), "classes": np.array([[0]]),
    ...            "num_boxes": np.array([1]), "masks": masks}
    >>> history = model.fit(np.zeros((1, 64, 64, 3), "float32"), targets, epochs=1, verbose=0)
    >>> model.predict(np.zeros((1, 64, 64, 3), "float32"), verbose=0)["masks"].shape
    (1, 100, 64, 64)
    """

    task = "instance_segmentation"
    key_metric = "mask_mAP50"
    heads = ("mask_rcnn",)

    def decode(self, y_pred):
        found = self.detect(y_pred)  # once: the second stage is most of predict's work
        decoded = self._in_pixels(found)
        pasted = paste_masks(found["detection_masks"], decoded["boxes"], self.image_size)
        return {**decoded, "masks": tf.cast(pasted >= 0.5, tf.uint8)}


TASK_MODELS = {cls.task: cls for cls in (ImageClassifier, ImageSegmenter, ObjectDetector, InstanceSegmenter)}
