"""What the training loop needs to know per task besides the model: data, host-side evaluation, figures.

A task's data gives batches of (normalised model inputs, targets) of a split, the raw
images for figures, the count of skipped samples, and, for detection, the evaluation
that needs the whole split on the host (COCO mAP by pycocotools; VOC's AP on VOC) against
the split's ground truth in original pixels. Loss and additive metrics belong to the task
model (:mod:`kcnn.tasks.models`).
"""

import numpy as np
import tensorflow as tf

from kcnn import data
from kcnn.data.instances import encode_masks
from kcnn.tasks.coco_eval import coco_metrics
from kcnn.tasks.masks import paste_masks
from kcnn.tasks.segmentation import segmentation_metrics
from kcnn.tasks.voc_eval import voc_metrics
from kcnn.train import figures

MAX_BOXES = 100  # ground-truth boxes per image the detection loss learns from (evaluation keeps all)


class TaskData:
    """A dataset at a fixed input shape, normalised as the model expects."""

    figure = None

    def __init__(self, dataset, *, input_shape, preprocessing, augment="none", data_dir=None, manual_dir=None,
                 download=False):
        self.dataset, self.input_shape, self.preprocessing = dataset, tuple(input_shape), preprocessing
        self.augment, self.data_dir, self.manual_dir, self.download = augment, data_dir, manual_dir, download
        self.info = self.load_info()

    @property
    def image_size(self):
        return self.input_shape[:2]

    def pipeline(self, split, *, training, seed, batch_size):
        """Batches of (normalised images with the model's channels, targets)."""
        channels = self.input_shape[2]

        def normalise(images, targets):
            if images.shape[-1] != channels:
                images = tf.image.rgb_to_grayscale(images)
            return self.preprocessing(images), targets

        return self.raw(split, training=training, seed=seed, batch_size=batch_size).map(
            normalise, num_parallel_calls=tf.data.AUTOTUNE)

    def evaluation(self, model, split):
        """A host-side evaluation of the whole ``split``, or ``None`` when the model's additive statistics
        suffice."""
        return None

    def details(self, model, sums):
        """Metrics beyond ``model.summarize`` (per class), from the split's summed statistics."""
        return {}

    def draw(self, model, images, targets, outputs, path):
        """A figure of validation predictions at ``path`` (tasks with a ``figure``)."""


class ClassificationData(TaskData):
    def __init__(self, dataset, *, eval_transform=None, **options):
        """``eval_transform``: evaluation's transform (``kcnn.data.EVAL_TRANSFORMS``; ``kcnn evaluate`` passes the
        one its weights record); by default the one of the recipe's ``augment``."""
        super().__init__(dataset, **options)
        self.eval_transform = eval_transform or data.eval_transform_for(self.augment)

    def load_info(self):
        return data.dataset_info(self.dataset, data_dir=self.data_dir, manual_dir=self.manual_dir,
                                 download=self.download)

    def raw(self, split, *, training, seed, batch_size):
        dataset, _ = data.load_classification(
            self.dataset, split, image_size=self.image_size, channels=self.input_shape[2], batch_size=batch_size,
            training=training, augment=self.augment, eval_transform=self.eval_transform, seed=seed,
            data_dir=self.data_dir, manual_dir=self.manual_dir)
        return dataset

    def skipped(self):
        return data.skipped_images()


class DenseData(TaskData):
    def load_info(self):
        return data.dense_dataset_info(self.dataset, self.task, data_dir=self.data_dir, manual_dir=self.manual_dir,
                                       download=self.download)

    def skipped(self):
        return sum(data.skipped_samples().values())


class SegmentationData(DenseData):
    task, figure = "segmentation", "predictions.png"

    def raw(self, split, *, training, seed, batch_size):
        """Batches of (RGB images 0..255, masks): training's crops, or evaluation's original-size labels
        (``{"masks", "image_size"}``: mean IoU at each image's resolution)."""
        dataset, _ = data.load_segmentation(
            self.dataset, split, image_size=self.image_size, batch_size=batch_size, training=training, seed=seed,
            data_dir=self.data_dir, manual_dir=self.manual_dir, original_masks=not training)
        return dataset

    def details(self, model, sums):
        per_class = segmentation_metrics(sums["confusion"], self.info.class_names)["per_class_iou"]
        return {"per_class_iou": per_class}

    def draw(self, model, images, targets, logits, path):
        predicted = np.asarray(model.decode(logits))
        masks = [tf.image.resize(mask[:height, :width, None], self.image_size, method="nearest")[..., 0]
                 for mask, (height, width) in zip(np.asarray(targets["masks"]), np.asarray(targets["image_size"]))]
        return figures.masks(np.asarray(images), np.asarray(masks), predicted, self.info.class_names, path,
                             ignore_label=self.info.ignore_label)


class DetectionData(DenseData):
    """Detection: boxes and classes; instance segmentation (:class:`InstanceData`) adds each object's mask."""

    task, figure = "detection", "predictions.png"
    load, ground_truth = staticmethod(data.load_detection), staticmethod(data.detection_ground_truth)

    def raw(self, split, *, training, seed, batch_size):
        """Batches of (RGB images 0..255, {"boxes" normalised yxyx, "classes", "num_boxes"[, "masks" at the
        input size]})."""
        dataset, _ = self.load(self.dataset, split, image_size=self.image_size, batch_size=batch_size,
                               training=training, seed=seed, max_boxes=MAX_BOXES, data_dir=self.data_dir,
                               manual_dir=self.manual_dir)
        return dataset

    def evaluation(self, model, split):
        evaluation = InstanceEvaluation if self.task == "instance_segmentation" else DetectionEvaluation
        return evaluation(model, lambda: self.ground_truth(
            self.dataset, split, data_dir=self.data_dir, manual_dir=self.manual_dir), self.info)

    def draw(self, model, images, targets, outputs, path):
        found = {k: np.asarray(v) for k, v in model.detect(outputs).items()}
        arrays = {key: np.asarray(value) for key, value in targets.items()}
        masked = "masks" in arrays
        if masked:
            found["detection_masks"] = np.asarray(paste_masks(found["detection_masks"], found["detection_boxes"] * np.tile(
                self.image_size, 2).astype("float32"), self.image_size)) >= 0.5
        truth = [(arrays["boxes"][i, :n], arrays["classes"][i, :n], *([arrays["masks"][i, :n]] if masked else []))
                 for i, n in enumerate(arrays["num_boxes"])]
        predicted = [(found["detection_boxes"][i, :n], found["detection_scores"][i, :n],
                      found["detection_classes"][i, :n].astype(int),
                      *([found["detection_masks"][i, :n]] if masked else []))
                     for i, n in enumerate(found["num_detections"])]
        return figures.detections(np.asarray(images), truth, predicted, self.info.class_names, path)


class InstanceData(DetectionData):
    task = "instance_segmentation"
    load, ground_truth = staticmethod(data.load_instances), staticmethod(data.instance_ground_truth)


class DetectionEvaluation:
    """COCO's metrics (pycocotools), and on VOC the VOC07 11-point and VOC2010+ APs, of the decoded,
    class-wise NMS detections over a split, scored in each image's original pixels against the split's
    whole ground truth (its crowd or difficult boxes as ignore regions).

    ``outputs`` runs on each replica (graph); ``add`` takes the gathered arrays on the host; the
    images scored are those the split's batches held (an unreadable image is skipped by both).
    """

    def __init__(self, model, ground_truth, info):
        self.model, self.ground_truth, self.info = model, ground_truth, info
        self.reset()

    def reset(self):
        self.found = {}

    def outputs(self, targets, y_pred):
        return {"image_index": targets["image_index"], **self.model.detect(y_pred)}

    def add(self, gathered):
        arrays = {key: np.asarray(value) for key, value in gathered.items()}
        for i, index in enumerate(arrays["image_index"]):
            count = int(arrays["num_detections"][i])
            self.found[int(index)] = (arrays["detection_boxes"][i, :count], arrays["detection_scores"][i, :count],
                                      arrays["detection_classes"][i, :count].astype(int))

    def result(self):
        everything, indices = self.ground_truth(), sorted(self.found)
        truth = [everything[index] for index in indices]
        found = [(boxes * np.tile([image["height"], image["width"]], 2), scores, classes)
                 for image, (boxes, scores, classes, *_) in zip(truth, map(self.found.get, indices))]
        names = list(self.info.class_names)
        metrics = coco_metrics(truth, found, class_names=names)
        if self.info.ignored_boxes == "difficult":
            metrics.update(voc_metrics([(image["boxes"], image["classes"], image["ignore"]) for image in truth],
                                       found, class_names=names))
        return metrics


class InstanceEvaluation(DetectionEvaluation):
    """:class:`DetectionEvaluation`'s box metrics and COCO's mask metrics (``segm``, pycocotools, prefixed
    ``mask_``): each detection's 28x28 mask pasted into its image at the original size (probability >= 0.5,
    as torchvision's and Detectron's evaluations) against the split's instance masks, crowds ignored. Masks are
    kept as run-length encodings, a few hundred bytes each, as they arrive."""

    def add(self, gathered):
        super().add(gathered)
        truth = self.ground_truth()
        masks, counts = np.asarray(gathered["detection_masks"]), np.asarray(gathered["num_detections"])
        for i, index in enumerate(np.asarray(gathered["image_index"])):
            boxes = self.found[int(index)][0]
            size = (truth[int(index)]["height"], truth[int(index)]["width"])
            pixels = (boxes * np.tile(size, 2)).astype("float32")
            pasted = paste_masks(masks[i:i + 1, :int(counts[i])], pixels[None], size)[0].numpy() >= 0.5
            self.found[int(index)] += (encode_masks(pasted),)

    def result(self):
        metrics = super().result()
        everything, indices = self.ground_truth(), sorted(self.found)
        truth = [everything[index] for index in indices]
        found = [(boxes * np.tile([image["height"], image["width"]], 2), scores, classes, masks)
                 for image, (boxes, scores, classes, masks) in zip(truth, map(self.found.get, indices))]
        masks = coco_metrics(truth, found, class_names=list(self.info.class_names), iou_type="segm")
        return {**metrics, **{f"mask_{key}": value for key, value in masks.items()}}


TASK_DATA = {"classification": ClassificationData, "segmentation": SegmentationData, "detection": DetectionData,
             "instance_segmentation": InstanceData}
