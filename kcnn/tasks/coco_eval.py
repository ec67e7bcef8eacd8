"""COCO box and mask mAP with pycocotools (COCO + COCOeval, iouType "bbox" or "segm"), built in memory
and silenced.

Ground truth per image is a dict: ``boxes`` [n, 4] pixels (ymin, xmin, ymax, xmax) of the original
image, ``classes`` (0-based), and optionally ``ignore`` (COCO's ``iscrowd``: a detection matched to
it is neither a true nor a false positive; VOC's difficult boxes are given the same role) and
``area`` (COCO's annotated area, which sorts objects into small/medium/large; the box's by default,
the mask's for "segm"). Mask mAP ("segm") needs ``height`` and ``width`` (the original image's) and
``segmentation``: one mask per box at that size, COCO RLEs (pycocotools' {"size": [h, w], "counts":
bytes or str}, as kcnn.data.instance_ground_truth gives) or an array [n, h, w] (nonzero inside).

>>> truth = [{"boxes": np.array([[10.0, 10.0, 50.0, 50.0]]), "classes": np.array([0])}]
>>> found = [(np.array([[10.0, 20.0, 50.0, 60.0]]), np.array([0.9]), np.array([0]))]  # IoU 0.6
>>> metrics = coco_metrics(truth, found, class_names=["box"])
>>> [round(metrics[key], 3) for key in ("mAP", "mAP50", "mAP75")], round(metrics["per_class_AP50"]["box"], 3)
([0.3, 1.0, 0.0], 1.0)

Masks: a detection covering three columns of a 4x4 image where the object covers two has IoU 8/12,
a match at the thresholds 0.5, 0.55, 0.6 and 0.65 of COCO's ten, so mAP 4/10:

>>> thing = np.zeros((1, 4, 4), np.uint8); thing[0, :, :2] = 1
>>> found_mask = np.zeros((1, 4, 4), np.uint8); found_mask[0, :, :3] = 1
>>> truth = [{"height": 4, "width": 4, "boxes": np.array([[0.0, 0.0, 4.0, 2.0]]), "classes": np.array([0]),
...           "segmentation": thing}]
>>> found = [(np.array([[0.0, 0.0, 4.0, 3.0]]), np.array([0.9]), np.array([0]), found_mask)]
>>> metrics = coco_metrics(truth, found, iou_type="segm")
>>> [round(metrics[key], 3) for key in ("mAP", "mAP50", "mAP75", "mAP_small")]
[0.4, 1.0, 0.0, 0.4]
"""

import contextlib
import io
import math

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SUMMARY_KEYS = ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large")  # COCOeval.stats[:6]
IOU_TYPES = ("bbox", "segm")


def _annotations(boxes, classes, *, scores=None, ignore=None, area=None, segmentation=None):
    """COCO annotation dicts (no ids) of yxyx pixel ``boxes``: ``bbox`` is x, y, width, height; with
    ``segmentation`` (RLEs) each has its mask, and the mask's area unless ``area`` is given."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    annotations = []
    for i, (ymin, xmin, ymax, xmax) in enumerate(boxes):
        width, height = xmax - xmin, ymax - ymin
        annotation = {"category_id": int(classes[i]) + 1, "bbox": [xmin, ymin, width, height],
                      "area": float(area[i]) if area is not None else width * height,
                      "iscrowd": int(bool(ignore[i])) if ignore is not None else 0}
        if segmentation is not None:
            annotation["segmentation"] = segmentation[i]
            if area is None:
                annotation["area"] = float(mask_utils.area(segmentation[i]))
        if scores is not None:
            annotation["score"] = float(scores[i])
        annotations.append(annotation)
    return annotations


def _rles(masks, count, height, width, what):
    """``count`` COCO RLEs at height x width of ``masks``: RLE dicts as they are, an array [count, height,
    width] encoded."""
    if len(masks) and isinstance(masks[0], dict):
        rles = list(masks)
        fits = len(rles) == count and {tuple(int(side) for side in rle["size"]) for rle in rles} == {(height, width)}
    else:
        masks = np.asarray(masks)
        fits = masks.shape == (count, height, width) or (count == 0 and masks.size == 0)
        rles = mask_utils.encode(np.asfortranarray(np.transpose(masks != 0, (1, 2, 0)).astype(np.uint8))) \
            if fits and count else []
    if not fits:
        raise ValueError(f"{what} masks do not fit: expected one per box ({count}), each {height}x{width} "
                         "(the image's height and width), as COCO RLEs or an array [n, height, width]")
    return rles


def _coco(images, categories, annotations):
    coco = COCO()
    coco.dataset = {"images": images, "categories": categories,
                    "annotations": [{**a, "id": i + 1} for i, a in enumerate(annotations)]}
    coco.createIndex()
    return coco


def coco_metrics(ground_truth, detections, *, class_names=None, iou_type="bbox"):
    """COCO box (``iou_type="bbox"``) or mask (``"segm"``) metrics of a set of images, each value in
    [0, 1] (or nan, see below).

    ``ground_truth``: one dict per image (see the module); ``detections``: one ``(boxes [m, 4],
    scores [m], classes [m])`` per image, in the same order, in the same pixels; for "segm" ``(boxes,
    scores, classes, masks)``, masks as the ground truth's (RLEs or [m, height, width], the original
    image's size), scored by mask IoU alone and sized by the mask's area, as pycocotools' loadRes
    does; crowd regions are ignore regions alike. ``class_names``
    (indexed by class id) names the entries of ``per_class_AP50``; by default the classes are the
    ids present, named ``str(id)``. Returns ``mAP`` (IoU 0.5:0.95), ``mAP50``, ``mAP75``,
    ``mAP_small``, ``mAP_medium``, ``mAP_large`` and ``per_class_AP50`` ``{name: AP at IoU 0.5}``.
    A value without ground truth to measure (no small objects; a class absent from every image) is
    nan, where COCOeval says -1. No detections at all give 0.0.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"unknown iou_type {iou_type!r}; expected one of {', '.join(IOU_TYPES)}")
    if len(ground_truth) != len(detections):
        raise ValueError(f"need one detection entry per ground-truth image, got {len(detections)} "
                         f"for {len(ground_truth)} images")
    if class_names is None:
        ids = sorted({int(c) for image in ground_truth for c in image["classes"]}
                     | {int(c) for found in detections for c in found[2]})
        class_names = {i: str(i) for i in ids}
    else:
        class_names = dict(enumerate(class_names))
    categories = [{"id": i + 1, "name": name} for i, name in class_names.items()]
    images, truth, found = [], [], []
    for image, (gt, entry) in enumerate(zip(ground_truth, detections)):
        images.append({"id": image + 1})
        gt_masks = found_masks = None
        if iou_type == "segm":
            if len(entry) != 4 or not {"height", "width", "segmentation"} <= set(gt):
                raise ValueError("segm needs each image's ground truth with 'height', 'width' and 'segmentation' "
                                 "and its detections as (boxes, scores, classes, masks)")
            images[-1].update(height=int(gt["height"]), width=int(gt["width"]))
            size = (images[-1]["height"], images[-1]["width"])
            gt_masks = _rles(gt["segmentation"], len(gt["boxes"]), *size, f"image {image}'s ground truth")
            found_masks = _rles(entry[3], len(entry[1]), *size, f"image {image}'s detected")
        det_boxes, scores, det_classes = entry[:3]
        truth += [{**a, "image_id": image + 1} for a in _annotations(
            gt["boxes"], gt["classes"], ignore=gt.get("ignore"), area=gt.get("area"), segmentation=gt_masks)]
        found += [{**a, "image_id": image + 1}
                  for a in _annotations(det_boxes, det_classes, scores=scores, segmentation=found_masks)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(_coco(images, categories, truth), _coco(images, categories, found), iou_type)
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
