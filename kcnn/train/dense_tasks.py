"""What fine-tuning needs to know per task: its data, loss, validation metrics and figure.

A task adapter turns the loaders' batches into (normalised images, targets), gives
the per-image loss of the model's outputs, accumulates validation results batch by
batch and summarises them (``key_metric`` is the one printed and plotted).
"""

import numpy as np
import tensorflow as tf

from kcnn import data
from kcnn.tasks import segmentation
from kcnn.tasks.anchors import encode_targets
from kcnn.tasks.coco_eval import DetectionEvaluator
from kcnn.tasks.detection import anchors_for, retinanet_loss
from kcnn.tasks.nms import decode_detections
from kcnn.train import figures


def _as_model_input(images, channels, preprocessing):
    if channels == 1:
        images = tf.image.rgb_to_grayscale(images)
    return preprocessing(images)


class DenseTask:
    """A dataset at a fixed image size, seen through a backbone's channels and normalisation."""

    def __init__(self, info, *, dataset, image_size, channels, preprocessing, data_dir=None, manual_dir=None):
        self.info, self.dataset, self.image_size = info, dataset, tuple(image_size)
        self.channels, self.preprocessing = channels, preprocessing
        self.data_dir, self.manual_dir = data_dir, manual_dir

    def attach(self, model):
        """The task model the adapter serves (detection reads its anchors)."""
        self.model = model

    def model_input(self, images):
        """Loader images (RGB, 0..255) -> what the model takes (its channels, normalised)."""
        return _as_model_input(images, self.channels, self.preprocessing)

    def validate(self, predict, dataset):
        """Mean loss and the task's metrics of ``predict(images) -> outputs`` over ``dataset``."""
        results, loss, count = self.evaluation(), 0.0, 0
        for images, targets in dataset:
            outputs = predict(images)
            loss += float(tf.reduce_sum(self.loss(targets, outputs)))
            count += int(images.shape[0])
            results.add(targets, outputs)
        return {"loss": loss / max(count, 1), **results.result()}


class Segmentation(DenseTask):
    name = "segmentation"
    key_metric = "mean_iou"

    def pipeline(self, split, *, training, seed, batch_size):
        """Batches of (RGB images 0..255, masks); ``model_input`` normalises inside the step."""
        dataset, _ = data.load_segmentation(
            self.dataset, split, image_size=self.image_size, batch_size=batch_size, training=training,
            seed=seed, data_dir=self.data_dir, manual_dir=self.manual_dir)
        return dataset

    def loss(self, masks, logits):
        return segmentation.segmentation_loss(masks, logits, ignore_label=self.info.ignore_label)

    def evaluation(self):
        return SegmentationResults(self.info)

    def draw(self, images, masks, logits, path):
        predicted = tf.argmax(logits, axis=-1).numpy()
        return figures.masks(np.asarray(images), np.asarray(masks), predicted, self.info.class_names, path,
                             ignore_label=self.info.ignore_label)


class SegmentationResults:
    """The confusion matrix over a split, summarised as mean IoU, per-class IoU and pixel accuracy."""

    def __init__(self, info):
        self.info = info
        self.confusion = np.zeros((info.num_classes, info.num_classes))

    def add(self, masks, logits):
        self.confusion += segmentation.confusion_matrix(masks, logits, self.info.num_classes,
                                                        ignore_label=self.info.ignore_label).numpy()

    def result(self):
        return segmentation.segmentation_metrics(self.confusion, self.info.class_names)


class Detection(DenseTask):
    name = "detection"
    key_metric = "mAP50"
    max_boxes = 100

    def attach(self, model):
        super().attach(model)
        self.anchors = anchors_for(model)

    def pipeline(self, split, *, training, seed, batch_size):
        """Batches of (RGB images 0..255, ground truth + its anchor targets ``class_targets``, ``box_targets``)."""
        dataset, _ = data.load_detection(
            self.dataset, split, image_size=self.image_size, batch_size=batch_size, training=training, seed=seed,
            max_boxes=self.max_boxes, data_dir=self.data_dir, manual_dir=self.manual_dir)
        return dataset.map(self._with_targets, num_parallel_calls=tf.data.AUTOTUNE)

    def _with_targets(self, images, truth):
        def encode(example):
            boxes, classes, count = example
            return encode_targets(boxes, classes, count, self.anchors, image_size=self.image_size)

        class_targets, box_targets = tf.map_fn(
            encode, (truth["boxes"], truth["classes"], truth["num_boxes"]),
            fn_output_signature=(tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 4], tf.float32)))
        return images, {**truth, "class_targets": class_targets, "box_targets": box_targets}

    def loss(self, targets, outputs):
        return retinanet_loss(targets["class_targets"], targets["box_targets"], outputs)

    def detect(self, outputs):
        return decode_detections(outputs, self.anchors, image_size=self.image_size)

    def evaluation(self):
        return DetectionResults(self)

    def draw(self, images, targets, outputs, path):
        found = {k: np.asarray(v) for k, v in self.detect(outputs).items()}
        truth = [(np.asarray(targets["boxes"])[i, :n], np.asarray(targets["classes"])[i, :n])
                 for i, n in enumerate(np.asarray(targets["num_boxes"]))]
        predicted = [(found["detection_boxes"][i, :n], found["detection_scores"][i, :n],
                      found["detection_classes"][i, :n].astype(int)) for i, n in enumerate(found["num_detections"])]
        return figures.detections(np.asarray(images), truth, predicted, self.info.class_names, path)


class DetectionResults:
    """COCO mAP (pycocotools) over a split of the decoded, class-wise NMS detections."""

    def __init__(self, task):
        self.task = task
        self.evaluator = DetectionEvaluator(task.image_size, list(task.info.class_names))

    def add(self, targets, outputs):
        self.evaluator.add({k: targets[k].numpy() for k in ("boxes", "classes", "num_boxes")},
                           {k: v.numpy() for k, v in self.task.detect(outputs).items()})

    def result(self):
        return self.evaluator.result()


TASKS = {"segmentation": Segmentation, "detection": Detection}
