"""Instance segmentation data (shapes, COCO-layout folders; TFDS's coco/2017 refused) and COCO mask mAP."""

import json
import math
import time

import numpy as np
import pytest
import tensorflow as tf
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from kcnn.data import (dense_dataset_info, detection_ground_truth, instance_ground_truth, load_detection,
                       load_instances, shapes, skipped_samples)
from kcnn.data.dense_sources import TASKS
from kcnn.tasks.coco_eval import SUMMARY_KEYS, coco_metrics


def all_targets(ds):
    batches = list(ds.as_numpy_iterator())
    return (np.concatenate([images for images, _ in batches]),
            {key: np.concatenate([targets[key] for _, targets in batches]) for key in batches[0][1]})


def nearest(masks, size):
    """masks [k, h, w] resized nearest-neighbour (as tf.image.resize does) to size."""
    return tf.image.resize(np.asarray(masks, np.uint8)[..., None], size, method="nearest").numpy()[..., 0]


def decoded(rles):
    return np.stack([mask_utils.decode(rle) for rle in rles])


# --- shapes -------------------------------------------------------------------------------------


def test_shapes_instances_are_detection_targets_plus_masks_inside_their_boxes():
    """Upscaled: nearest downscaling can drop a thin tip of a triangle, which moves the mask's extent, not
    the box (at the native size both are exact)."""
    size = (144, 160)
    ds, info = load_instances("shapes", "val", image_size=size, batch_size=50, training=False, max_boxes=3)
    assert "instance_segmentation" in TASKS and info == dense_dataset_info("shapes", "instance_segmentation")
    images, targets = all_targets(ds)
    plain_images, plain = all_targets(load_detection("shapes", "val", image_size=size, batch_size=50,
                                                     training=False, max_boxes=3)[0])
    np.testing.assert_array_equal(images, plain_images)
    for key in plain:  # exactly load_detection's targets
        np.testing.assert_array_equal(targets[key], plain[key])
    masks = targets["masks"]
    assert masks.shape == (250, 3, *size) and masks.dtype == np.uint8
    instances = shapes.generate_instances("val")
    _, _, boxes, _, counts = shapes.generate_padded("val")
    for i in range(250):
        n = targets["num_boxes"][i]
        assert n == min(counts[i], 3) and not masks[i, n:].any()  # padding: zeros
        # box k's mask: instance k + 1 of the generator, resized nearest-neighbour
        ids = np.arange(1, n + 1)[:, None, None]
        np.testing.assert_array_equal(masks[i, :n], nearest(instances[i] == ids, size))
        for mask, box in zip(masks[i, :n], targets["boxes"][i, :n]):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            extent = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]  # the mask's tight bounds
            np.testing.assert_allclose(extent, box * (size * 2), atol=1.0 + 1e-4)  # = the box, up to the resize
    # at the native size: the mask's bounds are the box exactly
    for i in range(20):
        for k in range(counts[i]):
            rows, cols = np.nonzero(instances[i] == k + 1)
            assert [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1] == boxes[i, k].tolist()


def test_shapes_instance_masks_flip_with_the_image():
    size = (64, 64)
    eval_images, eval_targets = all_targets(load_instances("shapes", "val", image_size=size, batch_size=250,
                                                           training=False)[0])
    ds, _ = load_instances("shapes", "val", image_size=size, batch_size=32, training=True, seed=5)
    images, targets = next(ds.as_numpy_iterator())
    flips = 0
    for b, index in enumerate(targets["image_index"]):
        n = targets["num_boxes"][b]
        expected = eval_targets["boxes"][index, :n].copy()
        flipped = not np.allclose(targets["boxes"][b, :n], expected, atol=1e-6)
        if flipped:
            expected[:, [1, 3]] = 1 - expected[:, [3, 1]]
            np.testing.assert_allclose(targets["boxes"][b, :n], expected, atol=1e-6)
        mirror = (lambda array: array[..., ::-1]) if flipped else (lambda array: array)
        np.testing.assert_allclose(images[b], mirror(eval_images[index].transpose(2, 0, 1)).transpose(1, 2, 0),
                                   atol=1e-3)
        np.testing.assert_array_equal(targets["masks"][b], mirror(eval_targets["masks"][index]))
        flips += flipped
    assert 0 < flips < 32


def test_shapes_instance_ground_truth_is_detections_plus_rles_of_each_shape():
    truth, boxes_only = instance_ground_truth("shapes", "val"), detection_ground_truth("shapes", "val")
    instances = shapes.generate_instances("val")
    assert sorted(truth) == sorted(boxes_only) == list(range(250))
    for i in (0, 1, 100, 249):
        image = truth[i]
        for key in ("boxes", "classes", "ignore"):
            np.testing.assert_array_equal(image[key], boxes_only[i][key])
        n = len(image["boxes"])
        own = instances[i] == np.arange(1, n + 1)[:, None, None]
        assert [rle["size"] for rle in image["segmentation"]] == [[128, 128]] * n
        np.testing.assert_array_equal(decoded(image["segmentation"]), own)
        np.testing.assert_array_equal(image["area"], own.sum(axis=(1, 2)))  # the mask's area, as COCO's


# --- COCO folders -----------------------------------------------------------------------------


def rectangle(height, width, top, left, bottom, right):
    mask = np.zeros((height, width), np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def uncompressed(mask):
    """COCO's uncompressed RLE (column-major run lengths, starting with zeros), as crowds ship."""
    flat = mask.ravel(order="F")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"counts": np.diff(np.concatenate([[0], edges])).tolist(), "size": list(mask.shape)}


def compressed(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"counts": rle["counts"].decode(), "size": rle["size"]}


def write_coco(root, split, images, annotations, categories):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    for image in images:
        pixels = np.zeros((image["height"], image["width"], 3), np.uint8)
        pixels[..., 0] = np.arange(image["width"]) * 255 // image["width"]  # a ramp: flips show
        (root / split / image["file_name"]).write_bytes(tf.io.encode_png(pixels).numpy())
    content = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))


@pytest.fixture
def coco_instances(tmp_path):
    """Polygons, an integer-count RLE, a string-count RLE, a crowd RLE, an unknown category and an image
    without objects, in val; train has one image with a mask."""
    root = tmp_path / "coco"
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]  # labels: cat 0, dog 1
    images = [{"id": 5, "file_name": "a.png", "height": 120, "width": 160},
              {"id": 2, "file_name": "b.png", "height": 50, "width": 60},
              {"id": 9, "file_name": "empty.png", "height": 30, "width": 30}]
    dog = rectangle(120, 160, 50, 60, 100, 110)  # 50 x 50: COCO's "medium"
    crowd = rectangle(120, 160, 0, 120, 40, 160)
    cat_b = rectangle(50, 60, 30, 5, 45, 25)

    def annotation(id_, image_id, category, bbox, area, segmentation, crowd_flag=0):
        return {"id": id_, "image_id": image_id, "category_id": category, "bbox": bbox, "iscrowd": crowd_flag,
                "area": area, "segmentation": segmentation}

    annotations = [
        annotation(1, 5, 3, [10, 20, 30, 20], 600.0, [[10, 20, 40, 20, 40, 40, 10, 40]]),  # x, y, ...: a rectangle
        annotation(2, 5, 7, [60, 50, 50, 50], 2500.0, uncompressed(dog)),
        annotation(3, 5, 3, [120, 0, 40, 40], 1600.0, uncompressed(crowd), crowd_flag=1),
        annotation(4, 2, 3, [5, 30, 20, 15], 300.0, compressed(cat_b)),
        annotation(5, 2, 3, [30, 2, 20, 20], 200.0, [[30, 2, 50, 2, 40, 22], [1, 1, 3, 1]]),  # a triangle, a stray pair
    ]
    unknown = dict(annotations[0], id=6, category_id=99)
    write_coco(root, "val", images, annotations + [unknown], categories)
    write_coco(root, "train", images[1:2], annotations[3:4], categories)
    return root


def test_coco_folder_masks_are_polygons_and_rles_with_crowds_left_out(coco_instances):
    info = dense_dataset_info(coco_instances, "instance_segmentation")
    assert info.class_names == ("cat", "dog") and info.num_examples == {"train": 1, "val": 3}
    reference = COCO(str(coco_instances / "annotations" / "instances_val.json"))
    before = skipped_samples()
    ds, _ = load_instances(coco_instances, "val", image_size=(120, 160), batch_size=3, training=False,
                           max_boxes=4)
    images, targets = all_targets(ds)
    assert skipped_samples()["bad box class"] - before["bad box class"] == 1
    # images in id order: b.png (2), a.png (5), empty.png (9)
    assert list(targets["num_boxes"]) == [2, 2, 0] and list(targets["image_index"]) == [0, 1, 2]
    np.testing.assert_array_equal(targets["classes"][:2], [[0, 0, -1, -1], [0, 1, -1, -1]])  # a's crowd left out
    order = (2, 5)
    by_image = {image_id: [a for a in reference.loadAnns(reference.getAnnIds(imgIds=image_id))
                           if not a["iscrowd"] and a["category_id"] != 99] for image_id in order}
    for index, image_id in enumerate(order):
        expected = np.stack([reference.annToMask(a) for a in by_image[image_id]])
        np.testing.assert_array_equal(targets["masks"][index, :2], nearest(expected, (120, 160)))
        assert not targets["masks"][index, 2:].any()
    assert not targets["masks"][2].any()
    # evaluation truth: every annotation of a known class, the crowd as an ignore region, its RLE as COCO's
    truth = instance_ground_truth(coco_instances, "val")
    for index, image_id in enumerate(order):
        annotations = [a for a in reference.loadAnns(reference.getAnnIds(imgIds=image_id)) if a["category_id"] != 99]
        np.testing.assert_array_equal(truth[index]["ignore"], [a["iscrowd"] for a in annotations])
        np.testing.assert_array_equal(decoded(truth[index]["segmentation"]),
                                      np.stack([reference.annToMask(a) for a in annotations]))
        np.testing.assert_allclose(truth[index]["area"], [a["area"] for a in annotations])
    assert truth[2]["segmentation"] == [] and len(truth[2]["boxes"]) == 0


def test_coco_folder_masks_resize_nearest_and_flip_with_the_image(coco_instances):
    size = (60, 80)
    eval_images, eval_targets = all_targets(load_instances(coco_instances, "val", image_size=size, batch_size=3,
                                                           training=False)[0])
    truth = instance_ground_truth(coco_instances, "val")
    kept = [[rle for rle, ignored in zip(truth[i]["segmentation"], truth[i]["ignore"]) if not ignored]
            for i in range(2)]
    for i in range(2):
        np.testing.assert_array_equal(eval_targets["masks"][i, :2], nearest(decoded(kept[i]), size))
    flips = set()
    for seed in range(6):
        ds, _ = load_instances(coco_instances, "val", image_size=size, batch_size=3, training=True, seed=seed)
        images, targets = next(ds.as_numpy_iterator())
        for b, index in enumerate(targets["image_index"]):
            flipped = not np.array_equal(images[b], eval_images[index])
            if flipped:
                np.testing.assert_allclose(images[b], eval_images[index][:, ::-1], atol=1e-3)
            expected = eval_targets["masks"][index][..., ::-1] if flipped else eval_targets["masks"][index]
            np.testing.assert_array_equal(targets["masks"][b], expected)
            flips.add(flipped)
    assert flips == {False, True}


def test_coco_segm_map_equals_pycocotools_on_the_annotation_file(coco_instances):
    """coco_metrics(iou_type="segm") on instance_ground_truth equals COCOeval run on the JSON file itself
    with loadRes; a top-scored detection on the crowd region changes nothing (not a false positive)."""
    truth = instance_ground_truth(coco_instances, "val")
    reference_truth = COCO(str(coco_instances / "annotations" / "instances_val.json"))
    image_ids, category_ids = [2, 5, 9], [3, 7]
    rng = np.random.default_rng(3)
    detections, results, on_crowd = [], [], None
    for index, image_id in enumerate(image_ids):
        height, width = truth[index]["height"], truth[index]["width"]
        masks, classes = [], []
        for rle, label, ignored in zip(truth[index]["segmentation"], truth[index]["classes"], truth[index]["ignore"]):
            mask = mask_utils.decode(rle)
            if not ignored:  # the object, shifted a few pixels, and a sparser copy of it
                masks += [np.roll(mask, rng.integers(-4, 5, 2), axis=(0, 1)), mask * (rng.random(mask.shape) < 0.6)]
                classes += [label, label]
            else:  # on the crowd region: ignored
                on_crowd = (index, len(masks))
                masks.append(mask)
                classes.append(label)
        masks.append(rectangle(height, width, 0, 0, 10, 10))  # a false positive
        classes.append(1)
        scores = rng.random(len(masks))
        if on_crowd and on_crowd[0] == index:
            scores[on_crowd[1]] = 1.0  # first in the ranking: a false positive would cost every class AP
        masks = np.stack(masks)
        given = masks if index % 2 else [mask_utils.encode(np.asfortranarray(m)) for m in masks]  # both kinds
        detections.append((np.zeros((len(masks), 4)), scores, np.array(classes), given))
        for mask, label, score in zip(masks, classes, scores):
            rle = mask_utils.encode(np.asfortranarray(mask))
            results.append({"image_id": image_id, "category_id": category_ids[label], "score": float(score),
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    metrics = coco_metrics([truth[i] for i in range(3)], detections, class_names=["cat", "dog"], iou_type="segm")
    evaluation = COCOeval(reference_truth, reference_truth.loadRes(results), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    for key, expected in zip(SUMMARY_KEYS, evaluation.stats):
        assert metrics[key] == pytest.approx(expected) if expected >= 0 else math.isnan(metrics[key]), key
    assert 0 < metrics["mAP"] < metrics["mAP50"] < 1
    precision = evaluation.eval["precision"][0, :, :, 0, -1]
    for k, name in enumerate(["cat", "dog"]):
        assert metrics["per_class_AP50"][name] == pytest.approx(precision[:, k][precision[:, k] > -1].mean())
    # the crowd region's detection (image a, index 1) left out: the same metrics
    assert on_crowd[0] == 1
    at = on_crowd[1]
    boxes, scores, classes, masks = detections[1]
    without = [detections[0], (np.delete(boxes, at, 0), np.delete(scores, at), np.delete(classes, at),
                               np.delete(masks, at, 0)), detections[2]]
    again = coco_metrics([truth[i] for i in range(3)], without, class_names=["cat", "dog"], iou_type="segm")
    for key in SUMMARY_KEYS:
        assert again[key] == pytest.approx(metrics[key]) or (math.isnan(again[key]) and math.isnan(metrics[key]))


# --- TFDS and bad input ---------------------------------------------------------------------------


def test_tfds_coco_has_no_instance_masks_and_is_refused_with_what_to_use():
    import tensorflow_datasets as tfds

    # What TFDS 4.9's coco/2017 offers per object: boxes, labels, crowd flags, areas; no segmentation.
    objects = tfds.builder("coco/2017", data_dir="/nonexistent").info.features["objects"].feature
    assert sorted(objects) == ["area", "bbox", "id", "is_crowd", "label"]
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"^TFDS 'coco/2017' has no instance masks .*instances_val2017.json"):
        load_instances("coco/2017", "val", image_size=(32, 32), batch_size=2, training=False)
    assert time.monotonic() - start < 1
    with pytest.raises(ValueError, match="TFDS 'coco/2017_panoptic' has no instance masks"):
        instance_ground_truth("coco/2017_panoptic", "val")
    with pytest.raises(ValueError, match=r"^unknown instance_segmentation dataset 'voc/2012'; expected 'shapes' "
                                         r"or a folder PATH/annotations/instances_<split>.json"):
        dense_dataset_info("voc/2012", "instance_segmentation")


def test_bad_instance_annotations_are_one_line_errors_naming_the_file(tmp_path):
    image = {"id": 1, "file_name": "a.png", "height": 10, "width": 20}
    cases = [
        ({}, r"annotation 1 \(image 'a.png'\) in .*instances_val.json has no 'segmentation'; instance_segmentation"),
        ({"segmentation": {"counts": [200], "size": [20, 10]}},
         r"annotation 1 .* has an RLE of size \[20, 10\]; its image is \[10, 20\]"),
        ({"segmentation": [["x", 1, 2, 3, 4, 5]]}, r"annotation 1 .* has polygons that are not lists of numbers"),
        ({"segmentation": 3}, r"annotation 1 .* has a segmentation of neither kind"),
    ]
    for number, (extra, message) in enumerate(cases):
        root = tmp_path / str(number)
        write_coco(root, "val", [image], [{"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1,
                                           "iscrowd": 0, **extra}], [{"id": 1, "name": "thing"}])
        assert dense_dataset_info(root, "detection").num_classes == 1  # boxes alone are fine
        with pytest.raises(ValueError, match=message) as error:
            load_instances(root, "val", image_size=(8, 8), batch_size=1, training=False)
        assert "\n" not in str(error.value)
    # an image of another size than its JSON says: its masks would not fit it, so it is skipped
    root = tmp_path / "sizes"
    write_coco(root, "val", [image], [{"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1,
                                       "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6]]}], [{"id": 1, "name": "a"}])
    (root / "val" / "a.png").write_bytes(tf.io.encode_png(np.zeros((12, 20, 3), np.uint8)).numpy())
    before = skipped_samples()["unreadable"]
    ds, _ = load_instances(root, "val", image_size=(8, 8), batch_size=1, training=False)
    assert list(ds) == [] and skipped_samples()["unreadable"] == before + 1
    masks_folder = tmp_path / "masks"
    (masks_folder / "train" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match="is a segmentation dataset .*instance_segmentation needs "
                                         "PATH/annotations/instances_<split>.json"):
        load_instances(masks_folder, "train", image_size=(8, 8), batch_size=1, training=False)
    with pytest.raises(ValueError, match="bad max_boxes 0"):
        load_instances("shapes", "val", image_size=(8, 8), batch_size=1, training=False, max_boxes=0)


def test_segm_metrics_refuse_what_they_cannot_score():
    truth = [{"height": 4, "width": 4, "boxes": np.array([[0.0, 0, 4, 2]]), "classes": np.array([0]),
              "segmentation": np.ones((1, 4, 4), np.uint8)}]
    found = [(np.zeros((1, 4)), np.array([0.5]), np.array([0]), np.ones((1, 4, 4), np.uint8))]
    assert coco_metrics(truth, found, iou_type="segm")["mAP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown iou_type 'mask'; expected one of bbox, segm"):
        coco_metrics(truth, found, iou_type="mask")
    with pytest.raises(ValueError, match="segm needs each image's ground truth with 'height', 'width' and"):
        coco_metrics([{key: value for key, value in truth[0].items() if key != "height"}], found, iou_type="segm")
    with pytest.raises(ValueError, match="segm needs .* detections as \\(boxes, scores, classes, masks\\)"):
        coco_metrics(truth, [found[0][:3]], iou_type="segm")
    with pytest.raises(ValueError, match=r"image 0's detected masks do not fit: expected one per box \(1\), "
                                         r"each 4x4"):
        coco_metrics(truth, [(*found[0][:3], np.ones((1, 4, 5), np.uint8))], iou_type="segm")
    wrong_size = mask_utils.encode(np.asfortranarray(np.ones((3, 4), np.uint8)))
    with pytest.raises(ValueError, match="image 0's ground truth masks do not fit"):
        coco_metrics([{**truth[0], "segmentation": [wrong_size]}], found, iou_type="segm")
    none = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, 4, 4), np.uint8))]
    assert coco_metrics(truth, none, iou_type="segm")["mAP"] == 0.0
