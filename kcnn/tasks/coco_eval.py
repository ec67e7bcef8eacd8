"""COCO box mAP with pycocotools (COCO + COCOeval, iouType "bbox"), built in memory and silenced.

Ground truth per image is a dict: ``boxes`` [n, 4] pixels (ymin, xmin, ymax, xmax) of the original
image, ``classes`` (0-based), and optionally ``ignore`` (COCO's ``iscrowd``: a detection matched to
it is neither a true nor a false positive; VOC's difficult boxes are given the same role) and
``area`` (COCO's annotated area, which sorts objects into small/medium/large; the box's by default).

>>> truth = [{"boxes": np.array([[10.0, 10.0, 50.0, 50.0]]), "classes": np.array([0])}]
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


def _annotations(boxes, classes, *, scores=None, ignore=None, area=None):
    """COCO annotation dicts (no ids) of yxyx pixel ``boxes``: ``bbox`` is x, y, width, height."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    annotations = []
    for i, (ymin, xmin, ymax, xmax) in enumerate(boxes):
        width, height = xmax - xmin, ymax - ymin
        annotation = {"category_id": int(classes[i]) + 1, "bbox": [xmin, ymin, width, height],
                      "area": float(area[i]) if area is not None else width * height,
                      "iscrowd": int(bool(ignore[i])) if ignore is not None else 0}
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

    ``ground_truth``: one dict per image (see the module); ``detections``: one ``(boxes [m, 4],
    scores [m], classes [m])`` per image, in the same order, in the same pixels. ``class_names``
    (indexed by class id) names the entries of ``per_class_AP50``; by default the classes are the
    ids present, named ``str(id)``. Returns ``mAP`` (IoU 0.5:0.95), ``mAP50``, ``mAP75``,
    ``mAP_small``, ``mAP_medium``, ``mAP_large`` and ``per_class_AP50`` ``{name: AP at IoU 0.5}``.
    A value without ground truth to measure (no small objects; a class absent from every image) is
    nan, where COCOeval says -1. No detections at all give 0.0.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"need one detection entry per ground-truth image, got {len(detections)} "
                         f"for {len(ground_truth)} images")
    if class_names is None:
        ids = sorted({int(c) for image in ground_truth for c in image["classes"]}
                     | {int(c) for *_, classes in detections for c in classes})
        class_names = {i: str(i) for i in ids}
    else:
        class_names = dict(enumerate(class_names))
    categories = [{"id": i + 1, "name": name} for i, name in class_names.items()]
    images = [{"id": i + 1} for i in range(len(ground_truth))]
    truth, found = [], []
    for image, (gt, (det_boxes, scores, det_classes)) in enumerate(zip(ground_truth, detections)):
        truth += [{**a, "image_id": image + 1} for a in _annotations(
            gt["boxes"], gt["classes"], ignore=gt.get("ignore"), area=gt.get("area"))]
        found += [{**a, "image_id": image + 1} for a in _annotations(det_boxes, det_classes, scores=scores)]
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
