"""PASCAL VOC detection AP at IoU 0.5, as the VOC devkit and its py-faster-rcnn / detectron2 port compute it.

A detection whose best-overlapping box is marked difficult is ignored: neither a true
nor a false positive. Below the top-scored detection lies on the difficult box; were
it a false positive, both APs would be 0.5.

>>> truth = [(np.array([[0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 29.0, 29.0]]), np.array([0, 0]), np.array([False, True]))]
>>> found = [(np.array([[20.0, 20.0, 29.0, 29.0], [0.0, 0.0, 9.0, 9.0]]), np.array([0.9, 0.8]), np.array([0, 0]))]
>>> metrics = voc_metrics(truth, found, class_names=["box"])
>>> metrics["voc07_mAP50"], metrics["voc_mAP50"], metrics["per_class_voc_AP50"]
(1.0, 1.0, {'box': 1.0})
"""

import math

import numpy as np

IOU_THRESHOLD = 0.5  # a match needs IoU strictly above it (the devkit's ``ovmax > ovthresh``)
RECALL_THRESHOLDS_07 = np.arange(0.0, 1.1, 0.1)  # the port's 11 thresholds, float steps (0.30000000000000004) included


def _pairwise_iou(boxes, others):
    """IoU [len(boxes), len(others)] of ymin, xmin, ymax, xmax boxes, the devkit's way: coordinates are
    inclusive pixel indices, so a box is ``xmax - xmin + 1`` pixels wide (kcnn's VOC boxes are the
    annotation's 0-based inclusive corners; the + 1 makes no shift matter)."""
    a, b = boxes[:, None, :], others[None, :, :]
    inter_h = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1.0, 0.0)
    inter_w = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1.0, 0.0)
    intersection = inter_w * inter_h
    area_a = (a[..., 3] - a[..., 1] + 1.0) * (a[..., 2] - a[..., 0] + 1.0)
    area_b = (b[..., 3] - b[..., 1] + 1.0) * (b[..., 2] - b[..., 0] + 1.0)
    return intersection / (area_a + area_b - intersection)


def _ap_11_point(recall, precision):
    """VOC2007: mean over recall thresholds 0, 0.1, ..., 1 of the best precision at recall >= threshold (0 if none)."""
    reached = recall[None, :] >= RECALL_THRESHOLDS_07[:, None]
    return float(np.mean(np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)))


def _ap_all_points(recall, precision):
    """VOC2010+: area under the monotone (non-increasing) precision envelope, summed over the recall steps."""
    recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.maximum.accumulate(np.concatenate(([0.0], precision, [0.0]))[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


def _column(per_image, index, dtype, shape=(-1,)):
    """Item ``index`` of every image's tuple, as ``dtype`` arrays of ``shape``, concatenated in image order."""
    empty = np.zeros((0,) + shape[1:], dtype)
    return np.concatenate([empty] + [np.asarray(entry[index], dtype).reshape(shape) for entry in per_image])


def _image_starts(per_image):
    """Row offsets: image i owns rows ``starts[i]:starts[i + 1]`` of the concatenated columns."""
    return np.concatenate(([0], np.cumsum([np.size(entry[1]) for entry in per_image], dtype=np.int64)))


def _recall_precision(iou, gt_index, difficult, npos):
    """Recall and precision after each ranked detection of one class, by the devkit's rules: a detection
    whose best IoU is > 0.5 is ignored on a difficult box, a true positive on the first claim of another box
    and a false positive on a later one (duplicate); with IoU <= 0.5 it is a false positive."""
    hit = iou > IOU_THRESHOLD
    ignored = np.zeros_like(hit)
    ignored[hit] = difficult[gt_index[hit]]
    claims = np.flatnonzero(hit & ~ignored)
    _, first_claims = np.unique(gt_index[claims], return_index=True)
    true_positive = np.zeros(len(iou))
    true_positive[claims[first_claims]] = 1.0
    true_positives, false_positives = np.cumsum(true_positive), np.cumsum(1.0 - true_positive - ignored)
    detected = np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
    return true_positives / npos, true_positives / detected


def _mean_of_measured(values):
    measured = [value for value in values if not math.isnan(value)]
    return float(np.mean(measured)) if measured else math.nan


def voc_metrics(ground_truth, detections, *, class_names):
    """VOC AP at IoU 0.5 of a set of images, VOC2007 11-point (``voc07``) and VOC2010+ all-point (``voc``).

    ``ground_truth``: one ``(boxes [n, 4], classes [n], difficult [n])`` per image; ``detections``: one
    ``(boxes [m, 4], scores [m], classes [m])`` per image, in the same order; boxes in pixels, ymin, xmin,
    ymax, xmax; classes 0-based ids into ``class_names``. Returns ``voc07_mAP50``, ``voc_mAP50``,
    ``per_class_voc07_AP50`` and ``per_class_voc_AP50`` ``{name: AP}``.

    Each detection is matched, as in the devkit, to the box of highest IoU among all boxes of its class in
    its image (difficult and already matched ones included; the first such box on a tie). Detections are
    ranked by score, highest first; equal scores keep their input order (image order, then order within
    the image: a stable sort). A class without non-difficult ground truth has AP nan and is left out of the
    means; the means are nan when no class has any.
    """
    if len(ground_truth) != len(detections):
        raise ValueError(f"need one detection entry per ground-truth image, got {len(detections)} "
                         f"for {len(ground_truth)} images")
    gt_boxes, gt_classes = _column(ground_truth, 0, np.float64, (-1, 4)), _column(ground_truth, 1, np.int64)
    difficult = _column(ground_truth, 2, bool)
    det_boxes, scores = _column(detections, 0, np.float64, (-1, 4)), _column(detections, 1, np.float64)
    det_classes = _column(detections, 2, np.int64)
    for source, classes in (("ground-truth", gt_classes), ("detection", det_classes)):
        unknown = classes[(classes < 0) | (classes >= len(class_names))]
        if unknown.size:
            raise ValueError(f"{source} class id {unknown[0]} is outside class_names ({len(class_names)} names)")

    best_iou, best_gt = np.full(len(det_boxes), -np.inf), np.full(len(det_boxes), -1)
    gt_starts, det_starts = _image_starts(ground_truth), _image_starts(detections)
    for image in range(len(ground_truth)):
        dets, gts = np.arange(*det_starts[image:image + 2]), np.arange(*gt_starts[image:image + 2])
        if dets.size and gts.size:
            same_class = det_classes[dets, None] == gt_classes[None, gts]
            iou = np.where(same_class, _pairwise_iou(det_boxes[dets], gt_boxes[gts]), -np.inf)
            best_gt[dets], best_iou[dets] = gts[iou.argmax(axis=1)], iou.max(axis=1)

    ap_07, ap_all = {}, {}
    for class_id, name in enumerate(class_names):
        npos = np.count_nonzero((gt_classes == class_id) & ~difficult)
        if npos == 0:
            ap_07[name] = ap_all[name] = math.nan
            continue
        ranked = np.flatnonzero(det_classes == class_id)
        ranked = ranked[np.argsort(-scores[ranked], kind="stable")]
        recall, precision = _recall_precision(best_iou[ranked], best_gt[ranked], difficult, npos)
        ap_07[name], ap_all[name] = _ap_11_point(recall, precision), _ap_all_points(recall, precision)
    return {"voc07_mAP50": _mean_of_measured(ap_07.values()), "voc_mAP50": _mean_of_measured(ap_all.values()),
            "per_class_voc07_AP50": ap_07, "per_class_voc_AP50": ap_all}
