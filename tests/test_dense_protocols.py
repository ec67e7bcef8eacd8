"""Segmentation and detection scored as their references score them, on fixtures that tell the protocols
from the shortcuts: mean IoU at each image's original resolution (logits resized bilinearly first, as the
DeepLab and torchvision references), COCO/VOC ground truth with its crowd and difficult boxes kept as
ignore regions, in original pixels and never truncated."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.metrics import confusion_matrix as sklearn_confusion

from kcnn import data as data_module
from kcnn.data import DetectionInfo, load_segmentation
from kcnn.tasks import build_task_model
from kcnn.tasks.coco_eval import coco_metrics
from kcnn.train.task_data import MAX_BOXES, DetectionData, DetectionEvaluation, SegmentationData
from kcnn.train.validation import Validator
from kcnn.weights import default_preprocessing


def bilinear(values, size):
    """PyTorch's ``F.interpolate(mode="bilinear", align_corners=False)`` of [h, w, C] to ``size``, written
    from its formula: source coordinate (i + 0.5) * in / out - 0.5, clamped at 0, linear between neighbours."""
    out = values.astype(np.float64)
    for axis, length in enumerate(size):
        source = np.maximum((np.arange(length) + 0.5) * out.shape[axis] / length - 0.5, 0.0)
        lower = np.floor(source).astype(int)
        upper = np.minimum(lower + 1, out.shape[axis] - 1)
        weight = (source - lower).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, lower, axis=axis) * (1 - weight) + np.take(out, upper, axis=axis) * weight
    return out


def mean_iou(truth, predicted, classes):
    keep = truth != 255
    confusion = sklearn_confusion(truth[keep], predicted[keep], labels=range(classes)).astype(float)
    hits, union = np.diag(confusion), confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    return float(np.mean(hits[union > 0] / union[union > 0]))


def border_mask(height, width):
    """Objects in thin strips along the borders: a network-size mask misplaces them."""
    mask = np.zeros((height, width), np.uint8)
    mask[:, :3], mask[:, -3:], mask[:2, 10:30] = 1, 2, 1
    mask[-4:, 20:40] = 255
    return mask


@pytest.fixture(scope="module")
def wide_masks(tmp_path_factory):
    """A 2:1 image (40x80) and a square one (48x48): one batch, padded to 48x80."""
    root = tmp_path_factory.mktemp("wide")
    (root / "classes.txt").write_text("background\nleft\nright\n")
    masks = {}
    for split in ("train", "val"):
        for stem, (height, width) in (("wide", (40, 80)), ("square", (48, 48))):
            mask = border_mask(height, width)
            image = np.stack([np.where(mask == 255, 0, mask * 90), np.full_like(mask, 90), np.full_like(mask, 160)], -1)
            for folder, array in (("images", image), ("masks", mask)):
                (root / split / folder).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array.astype(np.uint8)).save(root / split / folder / f"{stem}.png")
            masks[stem] = mask
    return root, masks


def test_mean_iou_is_scored_at_each_images_original_resolution(wide_masks):
    root, masks = wide_masks
    tf.keras.utils.set_random_seed(3)
    model = build_task_model("segmentation", "resnet20", 3, image_size=(32, 32), head="fcn",
                             head_options={"width": 8})
    data = SegmentationData(root, input_shape=(32, 32, 3), preprocessing=default_preprocessing(3))
    images, network_masks = next(iter(load_segmentation(root, "train", image_size=(32, 32), batch_size=2,
                                                        training=False)[0]))
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(data.preprocessing(images), network_masks, epochs=40, verbose=0)  # predictions with borders
    validate = Validator(model, data, tf.distribute.get_strategy())
    metrics = validate(data.pipeline("val", training=False, seed=0, batch_size=2))
    # the loss is a mean over the labelled pixels of the original masks; throughput counts images
    labelled = sum(int(np.sum(mask != 255)) for mask in masks.values())
    assert validate.sums["loss_weight"].numpy() == labelled and validate.sums["samples"].numpy() == 2

    truth, original, network_truth, network = [], [], [], []
    for stem in ("square", "wide"):  # the folder's order does not matter to a confusion matrix
        mask = masks[stem]
        image = np.asarray(Image.open(root / "val" / "images" / f"{stem}.png"), np.float32)
        logits = model(data.preprocessing(tf.image.resize(image, (32, 32))[None]), training=False)[0].numpy()
        truth.append(mask.ravel())
        original.append(bilinear(logits, mask.shape).argmax(-1).ravel())
        network_truth.append(tf.image.resize(mask[..., None], (32, 32), method="nearest").numpy().ravel())
        network.append(logits.argmax(-1).ravel())
    reference = mean_iou(np.concatenate(truth), np.concatenate(original), 3)
    at_network_size = mean_iou(np.concatenate(network_truth), np.concatenate(network), 3)
    assert metrics["mean_iou"] == pytest.approx(reference, abs=1e-6)  # float32 sums against float64
    assert abs(reference - at_network_size) > 0.01  # the fixture tells the two protocols apart


# --- detection --------------------------------------------------------------------------------------------

GRID = [(20 * (i % 15) + 50, 20 * (i // 15) + 50) for i in range(150)]  # 150 boxes of 16x16 pixels


@pytest.fixture(scope="module")
def coco_fixture(tmp_path_factory):
    """A COCO-layout folder: a crowd region, an image of 150 objects, a 2:1 image with a medium object near
    its right border (small at the network's 64x64)."""
    root = tmp_path_factory.mktemp("coco")
    images = [{"id": 1, "file_name": "crowd.png", "height": 100, "width": 100},
              {"id": 2, "file_name": "many.png", "height": 400, "width": 400},
              {"id": 3, "file_name": "wide.png", "height": 200, "width": 400}]
    annotations = [{"image_id": 1, "bbox": [10, 10, 30, 30], "category_id": 1, "iscrowd": 0, "area": 900},
                   {"image_id": 1, "bbox": [50, 50, 40, 40], "category_id": 1, "iscrowd": 1, "area": 1200},
                   *({"image_id": 2, "bbox": [x, y, 16, 16], "category_id": 1, "iscrowd": 0, "area": 256}
                     for x, y in GRID),
                   {"image_id": 3, "bbox": [340, 70, 60, 60], "category_id": 1, "iscrowd": 0, "area": 3600}]
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        (root / split).mkdir()
        for image in images:
            pixels = np.full((image["height"], image["width"], 3), 40 * image["id"], np.uint8)
            Image.fromarray(pixels).save(root / split / image["file_name"])
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}))
    return root


def detection_data(root):
    return DetectionData(root, input_shape=(64, 64, 3), preprocessing=default_preprocessing(3))


def scored(evaluation, index, boxes, scores):
    """The evaluation's metrics of one image's detections (normalised boxes, as a detector's ``detect``)."""
    evaluation.reset()
    boxes = np.asarray(boxes, np.float32).reshape(1, -1, 4)
    evaluation.add({"image_index": np.array([index]), "detection_boxes": boxes,
                    "detection_scores": np.asarray(scores, np.float32)[None],
                    "detection_classes": np.zeros(boxes.shape[:2], np.float32),
                    "num_detections": np.array([boxes.shape[1]])})
    return evaluation.result()


def test_a_detection_on_a_crowd_region_is_not_a_false_positive(coco_fixture):
    evaluation = detection_data(coco_fixture).evaluation(None, "val")
    # The crowd region's detection ranks first: were the region deleted, it would be a false positive
    # ahead of the one true positive and COCO's AP@0.5 would be 0.5.
    metrics = scored(evaluation, 0, [[0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4]], [0.9, 0.8])
    assert metrics["mAP50"] == pytest.approx(1.0)
    deleted = coco_metrics([{"boxes": np.array([[10.0, 10, 40, 40]]), "classes": np.array([0])}],
                           [(np.array([[50.0, 50, 90, 90], [10, 10, 40, 40]]), np.array([0.9, 0.8]), np.zeros(2))])
    assert deleted["mAP50"] == pytest.approx(0.5)


def test_a_detection_on_a_difficult_box_counts_in_neither_coco_nor_voc_ap():
    truth = {0: {"height": 100, "width": 100, "boxes": np.array([[10.0, 10, 40, 40], [50, 50, 90, 90]]),
                 "classes": np.array([0, 0]), "ignore": np.array([False, True]), "area": np.array([900.0, 1600])}}
    info = DetectionInfo("voc-like", 1, ("thing",), {"train": 1, "val": 1}, ignored_boxes="difficult")
    evaluation = DetectionEvaluation(None, lambda: truth, info)
    metrics = scored(evaluation, 0, [[0.5, 0.5, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4]], [0.9, 0.8])
    assert metrics["mAP50"] == pytest.approx(1.0)
    assert metrics["voc07_mAP50"] == pytest.approx(1.0) and metrics["voc_mAP50"] == pytest.approx(1.0)
    assert metrics["per_class_voc_AP50"] == {"thing": pytest.approx(1.0)}


def test_an_image_of_150_objects_is_scored_against_all_of_them(coco_fixture):
    data = detection_data(coco_fixture)
    _, targets = next(iter(data.raw("val", training=False, seed=0, batch_size=3)))
    assert list(targets["num_boxes"]) == [1, MAX_BOXES, 1]  # the loss learns from the first 100 only
    truth = data_module.detection_ground_truth(coco_fixture, "val")
    assert len(truth[1]["boxes"]) == 150
    # COCO keeps 100 detections an image: all 100 right gives recall 100/150, so precision 1 at the 67
    # recall thresholds 0, 0.01, ..., 0.66 of 101 (COCO's AP); against ground truth cut at 100 it would be 1.
    first = np.array([[y, x, y + 16, x + 16] for x, y in GRID[:100]]) / 400
    metrics = scored(data.evaluation(None, "val"), 1, first, np.linspace(0.99, 0.5, 100))
    assert metrics["mAP50"] == pytest.approx(67 / 101)


def test_areas_are_the_original_images_so_small_medium_large_are_cocos(coco_fixture):
    # 60x60 pixels of a 200x400 image: COCO's "medium" (32^2 to 96^2); at the network's 64x64 it would
    # cover 19x10 pixels, "small".
    metrics = scored(detection_data(coco_fixture).evaluation(None, "val"), 2, [[0.35, 0.85, 0.65, 1.0]], [0.9])
    assert metrics["mAP_medium"] == pytest.approx(1.0)
    assert np.isnan(metrics["mAP_small"]) and np.isnan(metrics["mAP_large"])


def test_validation_scores_a_detector_in_each_images_original_pixels(coco_fixture):
    """The whole path (loader, device outputs gathered by image index, ground truth from the annotations) equals
    pycocotools on the detector's own outputs, batch by batch as the validation ran it, scaled by the JSON's
    image sizes: exactly."""
    tf.keras.utils.set_random_seed(0)
    model = build_task_model("detection", "resnet20", 1, image_size=(64, 64),
                             head_options={"fpn_width": 16, "head_width": 16, "head_depth": 1,
                                           "prior_probability": 0.5})  # scores over NMS's threshold: detections
    data = detection_data(coco_fixture)
    validate = Validator(model, data, tf.distribute.get_strategy())
    metrics = validate(data.pipeline("val", training=False, seed=0, batch_size=2))
    content = json.loads((coco_fixture / "annotations" / "instances_val.json").read_text())
    truth, found = [], []
    batches = [model.detect(model(images, training=False))
               for images, _ in data.pipeline("val", training=False, seed=0, batch_size=2)]
    detected = {key: np.concatenate([batch[key].numpy() for batch in batches]) for key in batches[0]}
    for i, image in enumerate(content["images"]):
        mine = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        truth.append({"boxes": np.array([[y, x, y + h, x + w] for x, y, w, h in (a["bbox"] for a in mine)]),
                      "classes": np.zeros(len(mine), int), "ignore": np.array([a["iscrowd"] for a in mine]),
                      "area": np.array([a["area"] for a in mine], float)})
        count = int(detected["num_detections"][i])
        scale = [image["height"], image["width"]] * 2
        found.append((detected["detection_boxes"][i, :count] * scale, detected["detection_scores"][i, :count],
                      np.zeros(count, int)))
    reference = coco_metrics(truth, found, class_names=["thing"])
    for key in ("mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"):
        np.testing.assert_array_equal(metrics[key], reference[key])
    # each image's detections reached the evaluation under its own index (a last batch of one here)
    assert sorted(validate.evaluation.found) == [0, 1, 2] and sum(len(f[1]) for f in found) > 100
    for i, (boxes, scores, _) in validate.evaluation.found.items():
        scale = [content["images"][i]["height"], content["images"][i]["width"]] * 2
        np.testing.assert_array_equal(boxes * scale, found[i][0])
        np.testing.assert_array_equal(scores, found[i][1])
