"""kcnn.data segmentation and detection: generated shapes, folders and (mocked) TFDS pipelines."""

import json
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from kcnn.data import (SHAPES_CLASSES, dense_dataset_info, detection_ground_truth, load_detection,
                       load_segmentation, skipped_samples)
from kcnn.data import shapes

MEAN_RGB = np.array([123.68, 116.78, 103.94], np.float32)


def all_batches(ds):
    return list(ds.as_numpy_iterator())


def skips_since(before):
    now = skipped_samples()
    return {reason: now[reason] - before[reason] for reason in now if now[reason] != before[reason]}


def component_boxes(mask):
    """{(class id, ymin, xmin, ymax, xmax)} of the 8-connected shapes of a shapes mask."""
    found = set()
    for label in np.unique(mask[mask > 0]):
        components, _ = ndimage.label(mask == label, structure=np.ones((3, 3)))
        for rows, cols in ndimage.find_objects(components):
            found.add((int(label) - 1, rows.start, cols.start, rows.stop, cols.stop))
    return found


def box_set(boxes, classes):
    return {(int(c), *map(int, box)) for box, c in zip(boxes, classes)}


# --- shapes generator -------------------------------------------------------------------------


def test_shapes_generation_is_fast_and_deterministic():
    shapes._generate.cache_clear()
    start = time.monotonic()
    train = shapes.generate("train")
    val = shapes.generate("val")
    seconds = time.monotonic() - start
    print(f"shapes: 2,250 images of 128x128 generated in {seconds:.2f} s")
    assert seconds < 15  # ~2.5 s alone on 2 cores; generous for a loaded machine
    assert train[0].shape == (2000, 128, 128, 3) and val[0].shape == (250, 128, 128, 3)
    again = shapes._generate.__wrapped__("val", 128, 250, 0)  # not from the cache
    for first, second in zip(shapes.generate_padded("val"), again):
        np.testing.assert_array_equal(first, second)
    other_seed = shapes.generate("val", seed=1)
    assert not np.array_equal(other_seed[0], val[0])
    assert not any(np.array_equal(image, val[0][0]) for image in train[0][:250])
    with pytest.raises(ValueError, match="read-only"):
        val[0][0, 0, 0, 0] = 1


@pytest.mark.parametrize("split", ["train", "val"])
def test_shapes_boxes_are_the_exact_extent_of_each_shape(split):
    images, masks, boxes, classes = shapes.generate(split)
    assert images.dtype == np.uint8 and masks.dtype == np.uint8
    for index in range(0, len(masks), 8 if split == "train" else 1):
        assert len(boxes[index]) == len(classes[index]) and 1 <= len(boxes[index]) <= 4
        assert boxes[index].dtype == np.float32 and classes[index].dtype == np.int32
        # Each connected shape of the mask is one box, with its class, and nothing else.
        assert component_boxes(masks[index]) == box_set(boxes[index], classes[index])


def test_shapes_classes_and_counts_are_balanced():
    _, masks, boxes, classes = shapes.generate("train")
    assert SHAPES_CLASSES == ("circle", "square", "triangle")
    per_class = np.bincount(np.concatenate(classes), minlength=3)
    assert np.all(np.abs(per_class / per_class.mean() - 1) < 0.1), per_class
    per_image = np.bincount([len(c) for c in classes], minlength=5)[1:]
    assert np.all(per_image > 350), per_image  # 1, 2, 3 and 4 shapes: ~500 images each
    sides = np.concatenate([b[:, 2:] - b[:, :2] for b in boxes])
    assert sides.min() >= 8 and sides.max() <= 56
    assert set(np.unique(masks)) == {0, 1, 2, 3}


def test_shapes_backgrounds_are_textured_and_shapes_have_random_colours():
    images, masks, _, _ = shapes.generate("val")
    background = images[masks == 0].astype(np.float32)
    per_image_std = [images[i][masks[i] == 0].std(axis=0).mean() for i in range(20)]
    assert min(per_image_std) > 8  # never a flat background
    assert len(np.unique(background[:, 0] // 16)) == 16  # backgrounds span the colours
    shape_means = np.array([images[i][masks[i] == 1].mean(axis=0) for i in range(40)
                            if (masks[i] == 1).any()])
    assert shape_means.std(axis=0).min() > 40  # circles come in all colours


# --- loaders on shapes ------------------------------------------------------------------------


def test_segmentation_eval_resizes_images_bilinear_and_masks_nearest():
    ds, info = load_segmentation("shapes", "val", image_size=(50, 70), batch_size=16,
                                 training=False)
    assert info.num_classes == 4 and info.ignore_label == 255
    assert info.class_names == ("background", "circle", "square", "triangle")
    assert ds.element_spec[0].shape.as_list() == [None, 50, 70, 3]
    assert ds.element_spec[1].shape.as_list() == [None, 50, 70]
    batches = all_batches(ds)
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    assert images.shape == (250, 50, 70, 3) and images.dtype == np.float32
    assert masks.dtype == np.int32 and set(np.unique(masks)) == {0, 1, 2, 3}
    original_images, original_masks, _, _ = shapes.generate("val")
    expected = tf.image.resize(original_masks[:16, ..., None], (50, 70), method="nearest")
    np.testing.assert_array_equal(masks[:16], expected.numpy()[..., 0])
    np.testing.assert_allclose(images[:16], tf.image.resize(original_images[:16], (50, 70)),
                               atol=1e-3)


def test_segmentation_training_scales_crops_pads_and_flips():
    ds, _ = load_segmentation("shapes", "val", image_size=(64, 64), batch_size=32,
                              training=True, seed=3)
    assert ds.element_spec[0].shape.as_list() == [32, 64, 64, 3]  # drop_remainder
    batches = all_batches(ds)
    assert len(batches) == 250 // 32
    images = np.concatenate([b[0] for b in batches])
    masks = np.concatenate([b[1] for b in batches])
    assert set(np.unique(masks)) == {0, 1, 2, 3, 255}
    assert images.min() >= 0 and images.max() <= 255
    padded = masks == 255  # scaled-down images: padding is the mean colour
    assert 0.01 < padded.mean() < 0.3
    np.testing.assert_allclose(images[padded], np.broadcast_to(MEAN_RGB, images[padded].shape),
                               atol=1e-3)


def test_same_seed_same_batches_and_each_epoch_reshuffles():
    def first(seed, task=load_segmentation):
        ds, _ = task("shapes", "val", image_size=(32, 32), batch_size=8, training=True, seed=seed)
        return next(iter(ds)), ds

    (one, ds), (again, _), (other, _) = first(5), first(5), first(6)
    np.testing.assert_array_equal(one[0], again[0])
    np.testing.assert_array_equal(one[1], again[1])
    assert not np.array_equal(one[0], other[0])
    assert not np.array_equal(next(iter(ds))[0], one[0])  # the second epoch differs
    (box_one, _), (box_again, _) = first(2, load_detection), first(2, load_detection)
    np.testing.assert_array_equal(box_one[1]["boxes"], box_again[1]["boxes"])


def test_detection_batches_are_padded_targets():
    ds, info = load_detection("shapes", "val", image_size=(48, 40), batch_size=10,
                              training=False, max_boxes=6)
    assert info.num_classes == 3 and info.class_names == SHAPES_CLASSES
    spec = ds.element_spec
    assert spec[0].shape.as_list() == [None, 48, 40, 3]
    assert spec[1]["boxes"].shape.as_list() == [None, 6, 4] and spec[1]["boxes"].dtype == tf.float32
    assert spec[1]["classes"].dtype == tf.int32 and spec[1]["num_boxes"].dtype == tf.int32
    _, _, boxes, classes = shapes.generate("val")
    seen = 0
    for images, targets in ds.as_numpy_iterator():
        for b in range(len(images)):
            n = targets["num_boxes"][b]
            assert n == len(classes[seen])
            np.testing.assert_array_equal(targets["classes"][b, :n], classes[seen])
            assert np.all(targets["classes"][b, n:] == -1) and np.all(targets["boxes"][b, n:] == 0)
            np.testing.assert_allclose(targets["boxes"][b, :n], boxes[seen] / 128, atol=1e-6)
            seen += 1
    assert seen == 250


def test_detection_flip_keeps_boxes_on_their_shapes():
    """Training images are matched to the evaluation ones (plain or mirrored). Their boxes must
    be the mirrored ones, each exactly one shape of the mirrored native mask, and within a pixel
    of that shape's extent once resized (nearest) to image_size. (Upscaled: nearest downscaling
    can drop a one-pixel tip of a shape, which moves the mask's extent, not the box.)"""
    size = (144, 160)
    eval_ds, _ = load_detection("shapes", "val", image_size=size, batch_size=250, training=False)
    eval_images, eval_targets = next(eval_ds.as_numpy_iterator())
    train_ds, _ = load_detection("shapes", "val", image_size=size, batch_size=24, training=True,
                                 seed=11)
    images, targets = next(train_ds.as_numpy_iterator())
    _, masks, _, _ = shapes.generate("val")
    flips = 0
    coarse = eval_images[:, ::8, ::8]
    for b, image in enumerate(images):
        plain = np.abs(coarse - image[::8, ::8]).max(axis=(1, 2, 3))
        mirrored = np.abs(coarse - image[::8, ::-1][:, ::8]).max(axis=(1, 2, 3))
        flipped = bool(mirrored.min() < plain.min())
        index = (mirrored if flipped else plain).argmin()
        original = eval_images[index][:, ::-1] if flipped else eval_images[index]
        np.testing.assert_allclose(image, original, atol=1e-3)
        flips += flipped
        n = targets["num_boxes"][b]
        boxes, classes = targets["boxes"][b, :n], targets["classes"][b, :n]
        expected = eval_targets["boxes"][index, :n].copy()
        if flipped:
            expected[:, [1, 3]] = 1 - expected[:, [3, 1]]
        np.testing.assert_allclose(boxes, expected, atol=1e-6)
        mask = masks[index][:, ::-1] if flipped else masks[index]
        components, _ = ndimage.label(mask > 0, structure=np.ones((3, 3)))
        slices = ndimage.find_objects(components)
        for box, label in zip(boxes, classes):
            native = tuple(np.round(box * 128).astype(int))
            match = [i for i, (rows, cols) in enumerate(slices)
                     if (rows.start, cols.start, rows.stop, cols.stop) == native]
            assert len(match) == 1 and np.all(mask[components == match[0] + 1] == label + 1)
            instance = (components == match[0] + 1).astype(np.uint8)[..., None]
            resized = tf.image.resize(instance, size, method="nearest").numpy()[..., 0]
            rows, cols = np.flatnonzero(resized.any(axis=1)), np.flatnonzero(resized.any(axis=0))
            extent = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
            np.testing.assert_allclose(extent, box * (size * 2), atol=1.0 + 1e-4)
    assert 0 < flips < len(images)


# --- TFDS (mocked) ----------------------------------------------------------------------------


def valid_mock_example(example, features, rng):
    """tfds.testing.mock_data draws every feature independently: bounding boxes with min > max
    and object sequences of unequal lengths, which TFDS refuses to encode. Make them valid."""
    import tensorflow_datasets as tfds

    height, width = example["image"].shape[:2]
    if "segmentation_mask" in example:  # a trimap: 1 pet, 2 background, 3 border
        example["segmentation_mask"] = rng.integers(1, 4, (height, width, 1)).astype(np.uint8)
    if "head_bbox" in example:
        example["head_bbox"] = np.array([0.1, 0.2, 0.5, 0.6], np.float32)
    if "objects" in example:
        count = int(rng.integers(0, 6))
        objects = {}
        for key, feature in features["objects"].feature.items():
            if key == "bbox":
                # Rows (ymin, xmin) <= (ymax, xmax).
                objects[key] = np.sort(rng.random((count, 2, 2)), axis=1).reshape(count, 4)
            elif isinstance(feature, tfds.features.ClassLabel):
                objects[key] = rng.integers(0, feature.num_classes, count)
            elif feature.np_dtype == np.bool_:
                objects[key] = rng.random(count) < 0.4
            else:
                objects[key] = rng.integers(1, 100, count).astype(feature.np_dtype)
        example["objects"] = objects
    return example


@pytest.fixture
def mock_tfds(monkeypatch):
    """Offline fake TFDS data; mock_data leaves builders unprepared, so say they are."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.testing import mocking

    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    generate_example = mocking.RandomFakeGenerator._generate_example
    monkeypatch.setattr(mocking.RandomFakeGenerator, "_generate_example", lambda self, rng:
                        valid_mock_example(generate_example(self, rng), self._features, rng))
    with tfds.testing.mock_data(num_examples=6):
        yield tfds


def test_tfds_oxford_iiit_pet_trimap_becomes_pet_background_and_ignore(mock_tfds):
    info = dense_dataset_info("oxford_iiit_pet", "segmentation")
    assert info.class_names == ("background", "pet") and info.num_classes == 2
    assert info.num_examples == {"train": 6, "val": 6}
    ds, _ = load_segmentation("oxford_iiit_pet", "val", image_size=(24, 20), batch_size=4,
                              training=False)
    masks = np.concatenate([b[1] for b in all_batches(ds)])
    raw = mock_tfds.builder("oxford_iiit_pet").as_dataset(split="test")
    trimaps = [tf.image.resize(ex["segmentation_mask"], (24, 20), method="nearest")[..., 0]
               for ex in raw]
    expected = np.choose(np.stack(trimaps) - 1, [1, 0, 255])  # 1 -> pet, 2 -> bg, 3 -> ignore
    np.testing.assert_array_equal(masks, expected)
    train, _ = load_segmentation("oxford_iiit_pet", "train", image_size=(24, 20), batch_size=4,
                                 training=True)
    images, masks = next(iter(train))
    assert images.shape == (4, 24, 20, 3) and set(np.unique(masks)) <= {0, 1, 255}


@pytest.mark.parametrize("name, dropped, classes", [("voc/2007", "is_difficult", 20),
                                                    ("coco/2017", "is_crowd", 80)])
def test_tfds_detection_learns_without_difficult_or_crowd_boxes_and_scores_with_them(mock_tfds, name, dropped,
                                                                                    classes):
    info = dense_dataset_info(name, "detection")
    assert info.num_classes == classes == len(info.class_names)
    assert info.num_examples == {"train": 6, "val": 6}
    before = skipped_samples()
    ds, _ = load_detection(name, "val", image_size=(32, 32), batch_size=4, training=False,
                           max_boxes=3)
    batches = all_batches(ds)
    raw = list(mock_tfds.builder(name).as_dataset(split="test" if name == "voc/2007"
                                                  else "validation").as_numpy_iterator())
    targets = {key: np.concatenate([b[1][key] for b in batches]) for key in batches[0][1]}
    over = 0
    for index, example in enumerate(raw):
        kept = ~example["objects"][dropped]
        boxes, labels = example["objects"]["bbox"][kept], example["objects"]["label"][kept]
        over += max(len(boxes) - 3, 0)
        n = min(len(boxes), 3)  # the first max_boxes are kept
        assert targets["num_boxes"][index] == n
        np.testing.assert_allclose(targets["boxes"][index, :n], boxes[:n], atol=1e-6)
        np.testing.assert_array_equal(targets["classes"][index, :n], labels[:n])
    assert skips_since(before) == ({"box over max_boxes": over} if over else {})
    assert list(targets["image_index"]) == list(range(len(raw)))
    truth = detection_ground_truth(name, "val")
    for index, example in enumerate(raw):  # every box, in the original image's pixels, ignore regions marked
        height, width = example["image"].shape[:2]
        objects, image = example["objects"], truth[index]
        np.testing.assert_allclose(image["boxes"], objects["bbox"] * [height, width, height, width], atol=1e-4)
        np.testing.assert_array_equal(image["ignore"], objects[dropped])
        areas = objects["area"] if "area" in objects else np.prod(np.diff(image["boxes"].reshape(-1, 2, 2), axis=1),
                                                                  axis=-1).ravel()
        np.testing.assert_allclose(image["area"], areas, rtol=1e-5)
    train, _ = load_detection(name, "train", image_size=(32, 32), batch_size=4, training=True)
    images, targets = next(iter(train))
    assert images.shape == (4, 32, 32, 3) and targets["boxes"].shape == (4, 100, 4)


def test_tfds_voc_segmentation_is_refused_with_what_is_accepted():
    with pytest.raises(ValueError, match="TFDS has no VOC segmentation variant.*oxford_iiit_pet"):
        load_segmentation("voc/2012", "train", image_size=(32, 32), batch_size=2, training=True)
    with pytest.raises(ValueError, match="unknown detection dataset 'kitti'; expected 'shapes', "
                                         "a folder .* among voc/2007, voc/2012, coco/2017"):
        dense_dataset_info("kitti", "detection")
    with pytest.raises(ValueError, match="unknown task 'depth'"):
        dense_dataset_info("shapes", "depth")


@pytest.mark.parametrize("name, task", [("coco/2017", "detection"),
                                        ("oxford_iiit_pet", "segmentation")])
def test_tfds_unprepared_fails_fast_with_how_to_prepare(tmp_path, name, task):
    import tensorflow_datasets  # noqa: F401  (its import is not the check's time)

    loader = load_detection if task == "detection" else load_segmentation
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"'{name}' is not prepared") as error:
        loader(name, "train", image_size=(32, 32), batch_size=2, training=True,
               data_dir=str(tmp_path))
    assert time.monotonic() - start < 5  # ~0.1 s; coco's first builder imports TF code
    assert all(flag in str(error.value) for flag in ("--download", "--data-dir", "--manual-dir"))
    with pytest.raises(ValueError, match="has no manual download; use --download"):
        dense_dataset_info(name, task, data_dir=str(tmp_path), manual_dir=str(tmp_path))


# --- folders ----------------------------------------------------------------------------------

LABEL_RED = {0: 20, 1: 120, 2: 220, 255: 70}  # image red channel per mask label (others: 0)


def red_of(mask):
    return np.vectorize(lambda label: LABEL_RED.get(label, 0))(mask)


def write_pair(root, split, stem, mask, suffix=".png", palette=False):
    """An image whose red channel encodes `mask` (LABEL_RED), and the mask PNG."""
    red = red_of(mask).astype(np.uint8)
    image = np.stack([red, np.full_like(red, 90), np.full_like(red, 160)], axis=-1)
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    encode = tf.io.encode_png if suffix == ".png" else tf.io.encode_jpeg
    (root / split / "images" / f"{stem}{suffix}").write_bytes(encode(image).numpy())
    mask_image = Image.fromarray(mask.astype(np.uint8), mode="L")
    if palette:
        mask_image = mask_image.convert("P")  # VOC-style: palette indices are the labels
        mask_image.putpalette([value for i in range(256) for value in (i, 255 - i, 0)])
    mask_image.save(root / split / "masks" / f"{stem}.png")


def blocky_mask(rng, shape=(40, 48)):
    """Labels 0..2 in 8x8 blocks, a few 255 blocks: alignment survives resizing."""
    blocks = rng.choice([0, 1, 2, 255], (shape[0] // 8, shape[1] // 8), p=[0.4, 0.25, 0.25, 0.1])
    return np.kron(blocks, np.ones((8, 8), int))


@pytest.fixture
def mask_folder(tmp_path):
    tmp_path = tmp_path / "masks"
    rng = np.random.default_rng(0)
    masks = {}
    for split, count in (("train", 5), ("val", 2)):
        for index in range(count):
            masks[split, index] = blocky_mask(rng)
            write_pair(tmp_path, split, f"img{index}", masks[split, index], palette=index == 1)
    bad = blocky_mask(rng)
    bad[:8, :8] = 7  # not a class of classes.txt, not 255
    write_pair(tmp_path, "train", "bad_label", bad)
    write_pair(tmp_path, "train", "other_size", blocky_mask(rng))
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "train" / "masks" /
                                                        "other_size.png")
    write_pair(tmp_path, "train", "truncated", blocky_mask(rng))
    png = (tmp_path / "train" / "images" / "truncated.png").read_bytes()
    (tmp_path / "train" / "images" / "truncated.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    return tmp_path, masks


def test_mask_folder_reads_labels_and_skips_bad_samples(mask_folder):
    root, masks = mask_folder
    info = dense_dataset_info(root, "segmentation")
    assert info.class_names == ("background", "cat", "dog") and info.num_classes == 3
    assert info.num_examples == {"train": 8, "val": 2}  # files found, bad ones included
    before = skipped_samples()
    ds, _ = load_segmentation(str(root), "train", image_size=(40, 48), batch_size=8,
                              training=False)
    images, got = all_batches(ds)[0]
    assert skips_since(before) == {"bad mask label": 1, "unreadable": 2}  # truncated, other size
    expected = np.stack([masks["train", i] for i in range(5)])  # sorted names: img0..img4 first
    np.testing.assert_array_equal(got, expected)  # palette PNG (img1) read as indices too
    np.testing.assert_array_equal(images[..., 0], red_of(expected))


def test_mask_folder_training_keeps_image_and_mask_aligned(mask_folder):
    """Every pair of a few seeds and epochs: away from block edges (which bilinear resizing
    blurs) the red channel is the label's. A pixel is away from them when its 8 neighbours
    share its label; those of the crop's border pixels are not all in the crop (the one past
    it, which the bilinear resize of the image blends in, may be another block), so the border
    never counts. Which scales and crops a seed draws depends on the global TF seed too."""
    root, _ = mask_folder
    for seed in (4, 5, 6):
        ds, _ = load_segmentation(root, "train", image_size=(32, 40), batch_size=5,
                                  training=True, seed=seed)
        for _ in range(2):  # epochs
            (images, masks), = all_batches(ds)
            assert masks.shape == (5, 32, 40) and set(np.unique(masks)) <= {0, 1, 2, 255}
            padded = np.pad(masks, [(0, 0), (1, 1), (1, 1)], constant_values=-1)
            interior = np.all([padded[:, 1 + dy:33 + dy, 1 + dx:41 + dx] == masks
                               for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
            interior &= masks != 255
            assert interior.mean() > 0.25  # border excluded: >= 0.32 in 150 draws
            red = images[..., 0]
            assert np.all(np.abs(red - red_of(masks))[interior] < 1)
            assert not np.all(np.abs(red - red_of(masks[:, :, ::-1]))[interior] < 1)  # flips show
            assert not np.all(np.abs(red - red_of(np.roll(masks, 1, axis=0)))[interior] < 1)


def test_mask_folder_without_classes_txt_counts_labels(mask_folder):
    root, _ = mask_folder
    (root / "classes.txt").unlink()
    (root / "train" / "images" / "bad_label.png").unlink()
    (root / "train" / "masks" / "bad_label.png").unlink()
    info = dense_dataset_info(root, "segmentation")
    assert info.class_names == ("background", "class_1", "class_2")


def test_mask_folder_image_without_mask_is_named(mask_folder):
    root, _ = mask_folder
    (root / "val" / "masks" / "img1.png").unlink()
    with pytest.raises(ValueError, match=r"image .*img1.png has no mask .*masks/img1.png"):
        dense_dataset_info(root, "segmentation")


def write_coco(root, split, images, annotations, categories):
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    for image in images:
        channels = 1 if image["file_name"].startswith("gray") else 3
        pixels = np.full((image["height"], image["width"], channels), 100, np.uint8)
        (root / split / image["file_name"]).write_bytes(tf.io.encode_png(pixels).numpy())
    content = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))


@pytest.fixture
def coco_folder(tmp_path):
    tmp_path = tmp_path / "coco"
    categories = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    images = [{"id": 1, "file_name": "a.png", "width": 40, "height": 20},
              {"id": 2, "file_name": "gray.png", "width": 30, "height": 30},
              {"id": 3, "file_name": "broken.png", "width": 30, "height": 30}]

    def box(image_id, bbox, category=3, crowd=0):
        return {"image_id": image_id, "bbox": bbox, "category_id": category, "iscrowd": crowd}

    annotations = [
        box(1, [4, 2, 8, 10]),  # x, y, w, h: inside
        box(1, [30, 10, 20, 20], category=7),  # partly outside: clipped to x 30..40, y 10..20
        box(1, [5, 5, 0, 6]),  # zero width: dropped, counted
        box(1, [0, 0, 10, 10], crowd=1),  # crowd: dropped
        box(1, [1, 1, 5, 5], category=99),  # unknown category: dropped, counted
    ]
    write_coco(tmp_path, "train", images, annotations, categories)
    (tmp_path / "train" / "broken.png").write_bytes(b"not a png")
    write_coco(tmp_path, "val", images[:1], annotations[:1], categories)
    return tmp_path


def test_coco_folder_boxes_are_normalised_clipped_and_cleaned(coco_folder):
    info = dense_dataset_info(coco_folder, "detection")
    assert info.class_names == ("cat", "dog")  # sorted category ids 3, 7 -> 0, 1
    assert info.num_examples == {"train": 3, "val": 1}
    before = skipped_samples()
    ds, _ = load_detection(coco_folder, "train", image_size=(20, 40), batch_size=4,
                           training=False, max_boxes=4)
    images, targets = all_batches(ds)[0]
    assert skips_since(before) == {"empty box": 1, "bad box class": 1, "unreadable": 1}
    assert images.shape == (2, 20, 40, 3) and np.all(images == 100)  # gray.png: RGB too
    assert list(targets["num_boxes"]) == [2, 0]  # the image without boxes is kept
    np.testing.assert_allclose(targets["boxes"][0, :2],
                               [[2 / 20, 4 / 40, 12 / 20, 12 / 40], [10 / 20, 30 / 40, 1, 1]])
    np.testing.assert_array_equal(targets["classes"], [[0, 1, -1, -1], [-1, -1, -1, -1]])
    assert list(targets["image_index"]) == [0, 1]  # broken.png (index 2) was skipped
    truth = detection_ground_truth(coco_folder, "train")
    assert sorted(truth) == [0, 1, 2] and (truth[0]["height"], truth[0]["width"]) == (20, 40)
    # Original pixels, the crowd box kept as an ignore region; the empty box and the unknown class left out.
    np.testing.assert_array_equal(truth[0]["boxes"], [[2, 4, 12, 12], [10, 30, 20, 40], [0, 0, 10, 10]])
    np.testing.assert_array_equal(truth[0]["classes"], [0, 1, 0])
    np.testing.assert_array_equal(truth[0]["ignore"], [False, False, True])


def test_folder_of_unknown_layout_describes_both(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"has no dense dataset layout; expected PATH/<split>/"
                                         r"images/.*\(segmentation\) or PATH/annotations/"):
        load_segmentation(tmp_path, "train", image_size=(8, 8), batch_size=1, training=False)


def test_folder_of_the_other_task_is_refused(coco_folder, mask_folder):
    with pytest.raises(ValueError, match="is a detection dataset .*segmentation needs"):
        dense_dataset_info(coco_folder, "segmentation")
    with pytest.raises(ValueError, match="is a segmentation dataset .*detection needs"):
        dense_dataset_info(mask_folder[0], "detection")


def test_skipped_samples_names_every_reason():
    assert set(skipped_samples()) == {"unreadable", "bad mask label", "empty box",
                                      "bad box class", "box over max_boxes"}
