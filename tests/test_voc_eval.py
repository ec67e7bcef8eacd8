"""kcnn.tasks.voc_eval against a plain loop port of the VOC devkit's voc_eval / voc_ap, written here."""

import math

import numpy as np
import pytest

from kcnn.tasks.voc_eval import voc_metrics

NAMES = ["cat", "dog", "bird"]


def reference_voc_ap(rec, prec, use_07_metric):
    """The devkit's VOCap / the py-faster-rcnn voc_ap, as a loop."""
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def reference_voc_eval(ground_truth, detections, classname, use_07_metric, ovthresh=0.5):
    """The devkit's per-class evaluation, structured as py-faster-rcnn's voc_eval (boxes there are x1, y1, x2, y2)."""
    recs = {imagename: [{"name": NAMES[c], "bbox": [x1, y1, x2, y2], "difficult": bool(hard)}
                        for (y1, x1, y2, x2), c, hard in zip(*gt)]
            for imagename, gt in enumerate(ground_truth)}
    class_recs = {}
    npos = 0
    for imagename in recs:
        R = [obj for obj in recs[imagename] if obj["name"] == classname]
        bbox = np.array([x["bbox"] for x in R]).reshape(-1, 4)
        difficult = np.array([x["difficult"] for x in R]).astype(bool)
        det = [False] * len(R)
        npos = npos + sum(~difficult)
        class_recs[imagename] = {"bbox": bbox, "difficult": difficult, "det": det}
    if npos == 0:
        return math.nan  # the port divides by zero here; kcnn reports nan
    lines = [(imagename, score, [x1, y1, x2, y2])
             for imagename, found in enumerate(detections)
             for (y1, x1, y2, x2), score, c in zip(*found) if NAMES[c] == classname]
    image_ids = [x[0] for x in lines]
    confidence = np.array([x[1] for x in lines])
    BB = np.array([x[2] for x in lines]).reshape(-1, 4)
    # a stable sort: equal scores keep their input order (the port's default quicksort leaves that open)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp = np.zeros(nd)
    fp = np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + 1.0, 0.0)
            ih = np.maximum(iymax - iymin + 1.0, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + 1.0) * (bb[3] - bb[1] + 1.0)
                   + (BBGT[:, 2] - BBGT[:, 0] + 1.0) * (BBGT[:, 3] - BBGT[:, 1] + 1.0) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax > ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return float(reference_voc_ap(rec, prec, use_07_metric))


def reference_metrics(ground_truth, detections):
    per_class_07 = {name: reference_voc_eval(ground_truth, detections, name, True) for name in NAMES}
    per_class = {name: reference_voc_eval(ground_truth, detections, name, False) for name in NAMES}

    def mean(values):
        measured = [v for v in values if not math.isnan(v)]
        return sum(measured) / len(measured) if measured else math.nan

    return {"voc07_mAP50": mean(per_class_07.values()), "voc_mAP50": mean(per_class.values()),
            "per_class_voc07_AP50": per_class_07, "per_class_voc_AP50": per_class}


def assert_close(actual, expected):
    """Same keys; every value within 1e-12, nan where nan."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, dict):
            assert_close(actual[key], value)
        else:
            assert isinstance(actual[key], float), key
            assert actual[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key


def check(ground_truth, detections):
    """kcnn's metrics, after asserting they equal the reference port's."""
    metrics = voc_metrics(ground_truth, detections, class_names=NAMES)
    assert_close(metrics, reference_metrics(ground_truth, detections))
    return metrics


def truth(boxes, classes, difficult=None):
    boxes = np.array(boxes, np.float64).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.array(difficult, bool)
    return boxes, np.array(classes, np.int64), difficult


def found(boxes, scores, classes):
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(scores, np.float64), np.array(classes, np.int64)


A, B, C = [0.0, 0.0, 9.0, 9.0], [20.0, 20.0, 39.0, 29.0], [50.0, 60.0, 70.0, 90.0]
MISS = [100.0, 100.0, 110.0, 110.0]  # overlaps none of A, B, C


def test_one_perfect_detection_has_ap_1_and_classes_without_truth_are_nan():
    metrics = check([truth([A], [0])], [found([A], [0.7], [0])])
    assert metrics["per_class_voc07_AP50"]["cat"] == metrics["per_class_voc_AP50"]["cat"] == 1.0
    assert math.isnan(metrics["per_class_voc_AP50"]["dog"]) and math.isnan(metrics["per_class_voc07_AP50"]["bird"])
    assert metrics["voc07_mAP50"] == metrics["voc_mAP50"] == 1.0  # nan classes left out of the mean


def test_a_class_with_truth_but_no_detection_has_ap_0_and_counts_in_the_mean():
    metrics = check([truth([A, B], [0, 1])], [found([A], [0.7], [0])])
    assert metrics["per_class_voc_AP50"] == {"cat": 1.0, "dog": 0.0, "bird": pytest.approx(math.nan, nan_ok=True)}
    assert metrics["voc07_mAP50"] == metrics["voc_mAP50"] == 0.5


def test_only_difficult_truth_gives_nan_and_no_truth_at_all_gives_nan_means():
    metrics = check([truth([A], [0], [True])], [found([A], [0.9], [0])])
    assert math.isnan(metrics["per_class_voc_AP50"]["cat"]) and math.isnan(metrics["per_class_voc07_AP50"]["cat"])
    assert math.isnan(metrics["voc_mAP50"]) and math.isnan(metrics["voc07_mAP50"])
    empty = check([], [])
    assert math.isnan(empty["voc_mAP50"]) and all(math.isnan(v) for v in empty["per_class_voc07_AP50"].values())


def test_a_detection_on_a_difficult_box_is_ignored_not_a_false_positive():
    # the top-scored detection lies on the difficult box B, the next on A
    detections = [found([B, A, B], [0.9, 0.8, 0.7], [0, 0, 0])]  # B twice: ignored even once B is "matched"
    metrics = check([truth([A, B], [0, 0], [False, True])], detections)
    assert metrics["per_class_voc07_AP50"]["cat"] == metrics["per_class_voc_AP50"]["cat"] == 1.0
    # the behaviour this replaces: without the difficult box, the detections on B are false positives
    # ranked above the true one: rec [0, 1, 1], prec [0, 1/2, 1/3] -> AP 0.5 either way
    without_difficult = [truth([A], [0])]
    assert reference_voc_eval(without_difficult, detections, "cat", use_07_metric=False) == 0.5
    assert reference_voc_eval(without_difficult, detections, "cat", use_07_metric=True) == pytest.approx(0.5)
    assert check(without_difficult, detections)["per_class_voc_AP50"]["cat"] == 0.5


def test_a_duplicate_detection_is_a_false_positive():
    # A at 0.9 (TP), A again at 0.8 (duplicate: FP), B at 0.7 (TP): rec [.5, .5, 1], prec [1, .5, 2/3].
    # all-point: envelope 1 over recall 0..0.5, 2/3 over 0.5..1 -> .5 + 1/3 = 5/6.
    # 11-point: thresholds 0..0.5 (6 of them) reach precision 1, 0.6..1 (5) reach 2/3 -> (6 + 10/3) / 11 = 28/33.
    metrics = check([truth([A, B], [0, 0])], [found([A, A, B], [0.9, 0.8, 0.7], [0, 0, 0])])
    assert metrics["per_class_voc_AP50"]["cat"] == pytest.approx(5 / 6, abs=1e-12)
    assert metrics["per_class_voc07_AP50"]["cat"] == pytest.approx(28 / 33, abs=1e-12)


def test_11_point_and_all_point_differ():
    # 3 boxes; A .9 (TP), miss .8 (FP), B .7 (TP), miss .6 (FP), C never found:
    # rec [1/3, 1/3, 2/3, 2/3], prec [1, 1/2, 2/3, 1/2].
    # all-point: envelope 1 over recall 0..1/3, 2/3 over 1/3..2/3, 0 beyond -> 1/3 + 2/9 = 5/9.
    # 11-point: t = 0, .1, .2, .3 -> 1; t = .4, .5, .6 -> 2/3; t = .7 .. 1 -> 0: (4 + 2) / 11 = 6/11.
    detections = [found([A, MISS, B, MISS], [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])]
    metrics = check([truth([A, B, C], [0, 0, 0])], detections)
    assert metrics["voc_mAP50"] == pytest.approx(5 / 9, abs=1e-12)
    assert metrics["voc07_mAP50"] == pytest.approx(6 / 11, abs=1e-12)


def test_11_point_thresholds_are_the_ports_float_steps():
    # 3 of 10 boxes found, nothing else: rec [.1, .2, .3], prec 1. The port's thresholds np.arange(0, 1.1, 0.1)
    # hold 0.30000000000000004 > 3 / 10, so only t = 0, .1, .2 are reached: 3/11 (not 4/11); all-point: 0.3.
    boxes = [[20.0 * i, 0.0, 20.0 * i + 9.0, 9.0] for i in range(10)]
    metrics = check([truth(boxes, [0] * 10)], [found(boxes[:3], [0.9, 0.8, 0.7], [0, 0, 0])])
    assert metrics["voc07_mAP50"] == pytest.approx(3 / 11, abs=1e-12)
    assert metrics["voc_mAP50"] == pytest.approx(0.3, abs=1e-12)


def test_iou_counts_inclusive_pixels_and_needs_more_than_half():
    # inclusive: 3 x 2 of 3 x 3 pixels = 2/3 -> TP (as exclusive width/height it would be 2/4, not > 0.5)
    assert check([truth([[0, 0, 2, 2]], [0])], [found([[0, 0, 2, 1]], [0.5], [0])])["voc_mAP50"] == 1.0
    # inclusive: 10 x 5 of 10 x 10 pixels = exactly 0.5 -> FP
    assert check([truth([[0, 0, 9, 9]], [0])], [found([[0, 0, 9, 4]], [0.5], [0])])["voc_mAP50"] == 0.0


def test_detections_match_only_their_own_class_and_image():
    ground_truth = [truth([A], [0]), truth([B], [1])]
    detections = [found([A, B], [0.9, 0.8], [1, 1]), found([B, A], [0.7, 0.6], [1, 0])]
    metrics = check(ground_truth, detections)
    assert metrics["per_class_voc_AP50"]["cat"] == 0.0 and metrics["per_class_voc_AP50"]["dog"] == pytest.approx(1 / 3)


def random_fixture(seed, tied_scores):
    """~30 images, 3 classes, some difficult boxes; detections are jittered truth, duplicates and misses."""
    rng = np.random.default_rng(seed)
    ground_truth, detections = [], []
    for _ in range(30):
        n = rng.integers(0, 6)
        corner = rng.uniform(0, 200, (n, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(4, 80, (n, 2))], axis=1)
        ground_truth.append(truth(boxes, rng.integers(0, 3, n), rng.random(n) < 0.25))
        size = np.tile(boxes[:, 2:] - boxes[:, :2], 2)
        found_boxes, found_classes = [], []
        for share in (0.8, 0.3):  # jittered copies of most boxes, then duplicates of some
            picked = rng.random(n) < share
            jittered = boxes[picked] + rng.normal(0, 0.12, (picked.sum(), 4)) * size[picked]
            found_boxes.append(np.concatenate([np.minimum(jittered[:, :2], jittered[:, 2:]),
                                               np.maximum(jittered[:, :2], jittered[:, 2:])], axis=1))
            classes = ground_truth[-1][1][picked]
            relabelled = rng.random(len(classes)) < 0.1  # now and then the wrong class
            found_classes.append(np.where(relabelled, rng.integers(0, 3, len(classes)), classes))
        misses = rng.integers(0, 4)
        corner = rng.uniform(0, 250, (misses, 2))
        found_boxes.append(np.concatenate([corner, corner + rng.uniform(4, 60, (misses, 2))], axis=1))
        found_classes.append(rng.integers(0, 3, misses))
        found_boxes, found_classes = np.concatenate(found_boxes), np.concatenate(found_classes)
        order = rng.permutation(len(found_boxes))
        scores = rng.random(len(order))
        scores = np.round(scores, 1) if tied_scores else scores
        detections.append(found(found_boxes[order], scores, found_classes[order]))
    return ground_truth, detections


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("tied_scores", [False, True], ids=["distinct_scores", "tied_scores"])
def test_random_fixtures_equal_the_reference(seed, tied_scores):
    ground_truth, detections = random_fixture(seed, tied_scores)
    metrics = check(ground_truth, detections)
    assert 0.0 < metrics["voc_mAP50"] < 1.0 and 0.0 < metrics["voc07_mAP50"] < 1.0
    assert sum(hard.sum() for _, _, hard in ground_truth) > 0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="one detection entry per ground-truth image, got 0 for 1"):
        voc_metrics([truth([A], [0])], [], class_names=NAMES)
    with pytest.raises(ValueError, match=r"detection class id 3 is outside class_names \(3 names\)"):
        voc_metrics([truth([A], [0])], [found([A], [0.5], [3])], class_names=NAMES)
    with pytest.raises(ValueError, match="detection class id -1 is outside"):
        voc_metrics([truth([A], [0])], [found([A], [0.5], [-1])], class_names=NAMES)
    with pytest.raises(ValueError, match="ground-truth class id 5 is outside"):
        voc_metrics([truth([A], [5])], [found([A], [0.5], [0])], class_names=NAMES)
