"""kcnn.data: digits, image folders and (mocked) TFDS as tf.data pipelines, and augmentations."""

import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from kcnn.data import AUGMENTATIONS, dataset_info, load_classification, skipped_images
from kcnn.data import augment

DIGITS_TRAIN, DIGITS_VAL = 1438, 359


def digits(split, **kwargs):
    options = dict(image_size=(16, 16), channels=1, batch_size=32, training=split == "train")
    options.update(kwargs)
    return load_classification("digits", split, **options)


def first_batch(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def all_batches(ds):
    batches = list(ds.as_numpy_iterator())
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


# --- digits -----------------------------------------------------------------------------------


def test_digits_split_is_a_fixed_stratified_partition():
    info = dataset_info("digits")
    assert info.num_examples == {"train": DIGITS_TRAIN, "val": DIGITS_VAL}
    assert info.class_names == tuple("0123456789") and info.num_classes == 10
    # At 8x8 the evaluation resize is the identity: the two splits together are exactly the
    # 1,797 digits (as a multiset), so they do not overlap and miss nothing.
    train_x, train_y = all_batches(digits("train", image_size=(8, 8), training=False)[0])
    val_x, val_y = all_batches(digits("val", image_size=(8, 8), training=False)[0])
    assert len(train_y) == DIGITS_TRAIN and len(val_y) == DIGITS_VAL
    reference = load_digits()
    expected = np.column_stack([reference.images.reshape(-1, 64) * 255 / 16, reference.target])
    got = np.column_stack([np.concatenate([train_x, val_x]).reshape(-1, 64),
                           np.concatenate([train_y, val_y])])
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))  # k * 255/16 is exact
    per_class = np.bincount(val_y, minlength=10) / np.bincount(reference.target, minlength=10)
    assert np.all(np.abs(per_class - 0.2) < 0.01)
    # The split does not depend on the seed.
    np.testing.assert_array_equal(all_batches(digits("val", seed=7)[0])[1], val_y)


@pytest.mark.parametrize("channels", [1, 3])
def test_digits_training_batches(channels):
    ds, info = digits("train", image_size=(20, 24), channels=channels, batch_size=100)
    assert ds.element_spec[0].shape.as_list() == [100, 20, 24, channels]
    images, labels = all_batches(ds)
    assert images.dtype == np.float32 and labels.dtype == np.int32
    assert len(labels) == DIGITS_TRAIN // 100 * 100  # drop_remainder when training
    assert images.min() >= 0 and images.max() <= 255 and images.max() > 200
    assert set(labels) == set(range(info.num_classes))
    if channels == 3:
        np.testing.assert_array_equal(images[..., 0], images[..., 2])  # gray repeated


def test_digits_evaluation_keeps_every_example_in_order():
    ds, _ = digits("val", batch_size=100)
    assert [len(labels) for _, labels in ds.as_numpy_iterator()] == [100, 100, 100, 59]
    np.testing.assert_array_equal(all_batches(ds)[1], all_batches(digits("val")[0])[1])


def test_same_seed_same_batches_and_different_seed_different_batches():
    def batch(seed):
        return first_batch(digits("train", augment="resnet_imagenet", seed=seed)[0])

    first, again, other = batch(3), batch(3), batch(4)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_each_epoch_reshuffles():
    ds, _ = digits("train", seed=1)
    assert not np.array_equal(first_batch(ds)[1], first_batch(ds)[1])


# --- augmentations ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", AUGMENTATIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_augmentation_shape_range_and_seed(name, channels):
    image = tf.random.stateless_uniform([37, 45, channels], seed=(0, 1), maxval=255.0)
    transform = augment.train_transform(name)
    outputs = [transform(image, (28, 32), tf.constant([seed, 0])).numpy() for seed in range(4)]
    for out in outputs:
        assert out.shape == (28, 32, channels) and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
    np.testing.assert_array_equal(transform(image, (28, 32), tf.constant([0, 0])), outputs[0])
    if name != "none":
        assert any(not np.array_equal(outputs[0], out) for out in outputs[1:])


def test_cifar_augmentation_pads_with_zeros():
    image = tf.fill([32, 32, 3], 255.0)
    outputs = [augment.cifar(image, (32, 32), tf.constant([seed, 0])) for seed in range(8)]
    assert any(float(tf.reduce_min(out)) == 0.0 for out in outputs)


def test_pca_lighting_shifts_colours_by_krizhevsky_components():
    image = tf.fill([4, 4, 3], 128.0)
    shift = (augment.pca_lighting(image, tf.constant([1, 2])) - image).numpy()
    assert np.all(shift == shift[0, 0]) and 0 < np.abs(shift).max() < 30


def test_eval_transform_center_crops_the_middle_of_the_shorter_side_resize():
    image = tf.reshape(tf.range(48 * 96, dtype=tf.float32) % 255, [48, 96, 1])
    out = augment.eval_transform(image, (42, 42), "center_crop", channels=1)
    # shorter side 48 = round(42 / 0.875): no resize, the aspect ratio kept, columns 27..68
    np.testing.assert_array_equal(out, image[3:45, 27:69])
    assert augment.eval_transform(image, (10, 12), "resize", channels=1).shape == (10, 12, 1)
    with pytest.raises(ValueError, match="unknown evaluation transform 'squash'; expected one of center_crop"):
        augment.eval_transform(image, (10, 12), "squash", channels=1)


def test_eval_transform_converts_channels_before_transforming():
    image = tf.random.stateless_uniform([30, 50, 3], seed=(1, 1), maxval=255.0)
    for name in augment.EVAL_TRANSFORMS:
        expected = augment.eval_transform(tf.image.rgb_to_grayscale(image), (16, 16), name, channels=1)
        np.testing.assert_array_equal(augment.eval_transform(image, (16, 16), name, channels=1), expected)


def test_eval_transform_of_each_recipe():
    assert {name: augment.eval_transform_for(name) for name in AUGMENTATIONS} == {
        "alexnet": "center_crop", "vgg": "center_crop", "resnet_imagenet": "center_crop",
        "googlenet": "center_crop", "cifar": "resize", "shift": "resize", "none": "resize"}
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        augment.eval_transform_for("mixup")


def test_ten_crops_are_corners_and_center_of_the_central_window_and_mirrors():
    image = tf.reshape(tf.range(9 * 12, dtype=tf.float32), (9, 12, 1))
    # shorter side already round(8 / 0.875) = 9: the window is the central 9x9 (columns 1..9)
    crops = augment.ten_crops(image, (8, 8), channels=1).numpy()[..., 0]
    assert crops.shape == (10, 8, 8)
    window = image.numpy()[:, 1:10, 0]
    for crop, (top, left) in zip(crops, [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0)]):
        np.testing.assert_array_equal(crop, window[top:top + 8, left:left + 8])
    np.testing.assert_array_equal(crops[5:], crops[:5, :, ::-1])


def test_unknown_augmentation_lists_the_known_ones():
    with pytest.raises(ValueError, match="expected one of alexnet, vgg"):
        augment.train_transform("mixup")
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'"):
        digits("train", augment="mixup")


# --- argument errors --------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="test"), "unknown split 'test'; expected one of train, val"),
    (dict(channels=2), "bad channels 2; expected 1 or 3"),
    (dict(image_size=(16,)), "bad image_size"),
    (dict(batch_size=0), "bad batch_size 0"),
])
def test_bad_arguments(kwargs, message):
    split = kwargs.pop("split", "train")
    with pytest.raises(ValueError, match=message):
        digits(split, **kwargs)


def test_bad_dataset_type():
    with pytest.raises(ValueError, match="expected 'digits', a folder path or a TFDS name"):
        dataset_info(42)


# --- image folder -----------------------------------------------------------------------------

COLOURS = {"cat": (220, 30, 30), "dog": (30, 30, 220)}  # class -> RGB of its images


def write_image(path, rgb, size=(20, 26)):
    image = tf.cast(tf.fill([*size, 3], 0) + tf.constant(rgb), tf.uint8)
    encode = tf.io.encode_png if path.suffix.lower() == ".png" else tf.io.encode_jpeg
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image).numpy())


@pytest.fixture
def image_folder(tmp_path):
    """train: 4 good images per class + a truncated JPEG + a garbage PNG; val: 2 per class."""
    for name, rgb in COLOURS.items():
        for index, suffix in enumerate([".png", ".jpg", ".JPEG", ".jpeg"]):
            write_image(tmp_path / "train" / name / f"{index}{suffix}", rgb, (20 + index, 26))
        for index, suffix in enumerate([".png", ".jpg"]):
            write_image(tmp_path / "val" / name / f"{index}{suffix}", rgb)
    good_jpeg = (tmp_path / "train" / "cat" / "1.jpg").read_bytes()
    (tmp_path / "train" / "cat" / "truncated.jpg").write_bytes(good_jpeg[: len(good_jpeg) // 2])
    (tmp_path / "train" / "dog" / "garbage.png").write_bytes(b"not an image at all" * 10)
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored: not an image suffix")
    return tmp_path


def test_folder_skips_and_counts_unreadable_images(image_folder):
    before = skipped_images()
    ds, info = load_classification(image_folder, "train", image_size=(16, 16), channels=3,
                                   batch_size=3, training=False)
    assert info.class_names == ("cat", "dog") and info.num_classes == 2
    assert info.num_examples == {"train": 10, "val": 4}  # files found, unreadable ones included
    assert info.name == str(image_folder)
    assert ds.element_spec[0].shape.as_list() == [None, 16, 16, 3]
    images, labels = all_batches(ds)
    assert len(labels) == 8 and skipped_images() - before == 2
    for label, name in enumerate(info.class_names):  # every image kept its own label
        np.testing.assert_allclose(images[labels == label].mean(axis=(0, 1, 2)),
                                   COLOURS[name], atol=3)


def test_folder_training_pipeline(image_folder):
    ds, _ = load_classification(str(image_folder), "train", image_size=(12, 12), channels=1,
                                batch_size=4, training=True, augment="alexnet", seed=2)
    assert ds.element_spec[0].shape.as_list() == [4, 12, 12, 1]
    images, labels = all_batches(ds)
    assert images.shape == (8, 12, 12, 1) and sorted(labels) == [0] * 4 + [1] * 4
    assert images.min() >= 0 and images.max() <= 255


def test_folder_val_split(image_folder):
    ds, _ = load_classification(image_folder, "val", image_size=(8, 8), channels=3,
                                batch_size=8, training=False, augment="resnet_imagenet")
    images, labels = all_batches(ds)
    assert images.shape == (4, 8, 8, 3) and list(labels) == [0, 0, 1, 1]


def test_folder_evaluation_keeps_the_aspect_ratio_after_imagenet_recipes(tmp_path):
    """A 2:1 image, red in its left quarter: the center crop leaves the red out, a squash keeps it; an
    eval_transform given wins over the augment's."""
    pixels = np.zeros((16, 32, 3), np.uint8)
    pixels[:, :8, 0], pixels[:, 8:, 2] = 255, 255
    path = tmp_path / "val" / "x" / "0.png"
    path.parent.mkdir(parents=True)
    path.write_bytes(tf.io.encode_png(pixels).numpy())
    (tmp_path / "train" / "x").mkdir(parents=True)
    options = dict(image_size=(8, 8), channels=3, batch_size=1, training=False)
    cropped = first_batch(load_classification(tmp_path, "val", augment="alexnet", **options)[0])[0][0]
    squashed = first_batch(load_classification(tmp_path, "val", augment="cifar", **options)[0])[0][0]
    expected = augment.center_crop(augment.resize_shorter_side(tf.constant(pixels, tf.float32), 9), (8, 8))
    np.testing.assert_allclose(cropped, expected, atol=1e-4)
    np.testing.assert_allclose(squashed, tf.image.resize(tf.constant(pixels, tf.float32), (8, 8)), atol=1e-4)
    assert not np.allclose(cropped, squashed, atol=1)
    overridden = load_classification(tmp_path, "val", augment="cifar", eval_transform="center_crop", **options)
    np.testing.assert_array_equal(first_batch(overridden[0])[0][0], cropped)
    ten, _ = first_batch(load_classification(tmp_path, "val", ten_crop=True, **options)[0])
    assert ten.shape == (1, 10, 8, 8, 3)


def test_folder_val_class_not_in_train(image_folder):
    write_image(image_folder / "val" / "bird" / "0.png", (0, 200, 0))
    with pytest.raises(ValueError, match="class folder 'bird' in .* is not a class of"):
        dataset_info(image_folder)


def test_folder_without_train_explains_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ValueError, match="has no train/ subfolder; expected PATH/train/<class>/"):
        dataset_info(tmp_path)


# --- TFDS -------------------------------------------------------------------------------------


@pytest.fixture
def mock_tfds(monkeypatch):
    """Offline fake TFDS data; mock_data leaves builders unprepared, so say they are."""
    import tensorflow_datasets as tfds
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=12):
        yield tfds


@pytest.mark.parametrize("name, channels", [("cifar10", 3), ("cifar10", 1), ("mnist", 3)])
@pytest.mark.parametrize("training", [True, False])
def test_tfds_mock(mock_tfds, name, channels, training):
    ds, info = load_classification(name, "val", image_size=(24, 24), channels=channels,
                                   batch_size=5, training=training, augment="vgg")
    assert info.name == name and info.num_classes == 10 and len(info.class_names) == 10
    assert info.num_examples == {"train": 12, "val": 12}
    assert ds.element_spec[0].shape.as_list()[1:] == [24, 24, channels]
    images, labels = all_batches(ds)
    assert images.shape == (10 if training else 12, 24, 24, channels)
    assert images.min() >= 0 and images.max() <= 255 and images.std() > 10
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 10


def test_tfds_unprepared_fails_fast_with_how_to_prepare(tmp_path):
    start = time.monotonic()
    with pytest.raises(ValueError, match="'cifar100' is not prepared") as error:
        load_classification("cifar100", "train", image_size=(32, 32), channels=3,
                            batch_size=8, training=True, data_dir=str(tmp_path))
    assert time.monotonic() - start < 5
    assert "--download" in str(error.value) and "--manual-dir" in str(error.value)


def test_tfds_manual_dir_refused_for_a_downloaded_dataset(tmp_path):
    with pytest.raises(ValueError, match="'cifar100' has no manual download; use --download"):
        dataset_info("cifar100", data_dir=str(tmp_path / "data"), manual_dir=str(tmp_path))


def test_tfds_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar1000'.*close TFDS names: cifar10"):
        dataset_info("cifar1000")


def test_tfds_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises
    with pytest.raises(ValueError, match="pip install tensorflow-datasets"):
        dataset_info("cifar10")
