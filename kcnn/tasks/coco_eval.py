"""COCO box mAP with pycocotools (COCO + COCOeval, iouType "bbox"), built in memory and silenced.

>>> truth = [(np.array([[10.0, 10.0, 50.0, 50.0]]), np.array([0]))]
>>> found = [(np.array([[10.0, 20.0, 50.0, 60.0]]), np.array([0.9]), np.array([0]))]  # IoU 0.6
>>> metrics = coco_metrics(truth, found, class_names=["box"])
>>> [round(metrics[key], 3) for key in ("mAP", "mAP50", "mAP75")], round(metrics["per_class_AP50"]["box"], 3)
([0.3, 1.0, 0.0], 1.0)
"""

import contextlib
import io
import math

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SUMMARY_KEYS = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")  # COCOeval.stats[:6]


def _annotations(boxes, classes, scores=None):
    """COCO annotation dicts (no ids) of yxyx pixel ``boxes``: ``bbox`` is x, y, width, height."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    annotations = []
    for i, (ymin, xmin, ymax, xmax) in enumerate(boxes):
        width, height = xmax - xmin, ymax - ymin
        annotation = {"category_id": int(classes[i]) + 1, "bbox": [xmin, ymin, width, height],
                      "area": width * height, "iscrowd": 0}
        if scores is not None:
            annotation["score"] = float(scores[i])
        annotations.append(annotation)
    return annotations


def _coco(images, categories, annotations):
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories,
                    "annotations": [{**a, "id": i + 1} for i, a in enumerate(annotations)]}
    coco.createIndex()
    return coco


def coco_metrics(ground_truth, detections, *, class_names=None):
    """COCO box metrics of a set of images, each value in [0, 1] (or nan, see below).

    ``ground_truth``: one ``(boxes [n, 4], classes [n])`` per image; ``detections``:
    one ``(boxes [m, 4], scores [m], classes [m])`` per image, in the same order;
    boxes in pixels, ymin, xmin, ymax, xmax; classes 0-based ids. ``class_names``
    (indexed by class id) names the entries of ``per_class_AP50``; by default the
    classes are the ids present, named ``str(id)``. Returns ``mAP`` (IoU 0.5:0.95),
    ``mAP50``, ``mAP75``, ``mAP_small``, ``mAP_medium``, ``mAP_large`` and
    ``per_class_AP50`` ``{name: AP at IoU 0.5}``. A value without ground truth to
    measure (no small objects; a class absent from every image) is nan, where
    COCOeval says -1. No detections at all give 0.0.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"need one detection entry per ground-truth image, got {len(detections)} "
                         f"for {len(ground_truth)} images")
    if class_names is None:
        ids = sorted({int(c) for _, classes in ground_truth for c in classes}
                     | {int(c) for *_, classes in detections for c in classes})
        class_names = {i: str(i) for i in ids}
    else:
        class_names = dict(enumerate(class_names))
    categories = [{"id": i + 1, "name": name} for i, name in class_names.items()]
    images = [{"id": i + 1} for i in range(len(ground_truth))]
    truth, found = [], []
    for image, ((boxes, classes), (det_boxes, scores, det_classes)) in enumerate(zip(ground_truth, detections)):
        truth += [{**a, "image_id": image + 1} for a in _annotations(boxes, classes)]
        found += [{**a, "image_id": image + 1} for a in _annotations(det_boxes, det_classes, scores)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(_coco(images, categories, truth), _coco(images, categories, found), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    metrics = {key: (float(v) if v >= 0 else math.nan) for key, v in zip(SUMMARY_KEYS, evaluation.stats)}
    precision = evaluation.eval["precision"][0, :, :, 0, -1]  # IoU 0.5, every recall, class, all areas, 100 dets
    per_class = {}
    for k, category in enumerate(evaluation.params.catIds):
        values = precision[:, k][precision[:, k] > -1]
        per_class[class_names[category - 1]] = float(values.mean()) if values.size else math.nan
    return {**metrics, "per_class_AP50": per_class}


class DetectionEvaluator:
    """Accumulates batches of ground truth and :func:`decode_detections` output; ``result()`` is :func:`coco_metrics`.

    Ground truth as the loader gives it: a dict with ``boxes`` ``[B, G, 4]``
    normalised yxyx, ``classes`` ``[B, G]`` padded with -1, and optionally
    ``num_boxes`` ``[B]``. Both are converted to pixels of ``image_size``.

    >>> evaluator = DetectionEvaluator((100, 100), ["box"])
    >>> truth = {"boxes": np.array([[[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]]]), "classes": np.array([[0, -1]])}
    >>> evaluator.add(truth, {"detection_boxes": truth["boxes"], "detection_scores": np.array([[0.9, 0.0]]),
    ...                       "detection_classes": np.array([[0.0, 0.0]]), "num_detections": np.array([1])})
    >>> round(evaluator.result()["mAP"], 6)
    1.0
    """

    def __init__(self, image_size, class_names=None):
        height, width = (int(v) for v in image_size)
        self.scale = np.array([height, width, height, width], np.float64)
        self.class_names = class_names
        self.ground_truth, self.detections = [], []

    def add(self, groundtruth, detections):
        boxes, classes = np.asarray(groundtruth["boxes"]), np.asarray(groundtruth["classes"])
        counts = groundtruth.get("num_boxes")
        for i in range(len(boxes)):
            keep = classes[i] >= 0
            if counts is not None:
                keep &= np.arange(len(classes[i])) < int(np.asarray(counts)[i])
            self.ground_truth.append((boxes[i][keep] * self.scale, classes[i][keep].astype(int)))
        for i, count in enumerate(np.asarray(detections["num_detections"]).astype(int)):
            self.detections.append((np.asarray(detections["detection_boxes"])[i, :count] * self.scale,
                                    np.asarray(detections["detection_scores"])[i, :count],
                                    np.asarray(detections["detection_classes"])[i, :count].astype(int)))

    def result(self):
        return coco_metrics(self.ground_truth, self.detections, class_names=self.class_names)
