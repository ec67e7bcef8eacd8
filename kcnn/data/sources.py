"""Where classification examples come from: scikit-learn digits, an image folder, or TFDS.

`open_source` gives a `Source`: cheap records to shuffle (arrays, file paths or encoded images),
a `decode` step turning them into (image float32 [H, W, C] in [0, 255], label int32), and the
`DatasetInfo`. The digits split is fixed (stratified 80/20, numpy RandomState(0)):

>>> info = dataset_info("digits")
>>> info.num_classes, info.num_examples
(10, {'train': 1438, 'val': 359})

A folder is PATH/{train,val}/<class>/*.jpg|*.jpeg|*.png. Its unreadable images are skipped and
counted, never fatal: `skipped_images()` is the total since the process started. Its files are
decoded by `decode_image`, as the exported SavedModels decode the files they are sent.
"""

import dataclasses
import difflib
import functools
import importlib
import logging
import os
import threading
from typing import Callable

import numpy as np
import tensorflow as tf

SPLITS = ("train", "val")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_DIGITS_VAL_FRACTION = 0.2
_TFDS_SHUFFLE_BUFFER = 10_000
_FOLDER_LAYOUT = "PATH/train/<class>/*.jpg|*.jpeg|*.png and PATH/val/<class>/..."

_log = logging.getLogger(__name__)
_skipped_lock = threading.Lock()
_skipped_count = 0


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a training run needs to know about a classification dataset."""

    name: str  # "digits", the TFDS name, or the folder path
    num_classes: int
    class_names: tuple  # str per label index
    num_examples: dict  # split name ("train", "val") -> count (folders: files found)


@dataclasses.dataclass(frozen=True)
class Source:
    """One split of a dataset, before shuffling, decoding and transforming."""

    records: tf.data.Dataset
    decode: Callable[[tf.data.Dataset], tf.data.Dataset]
    info: DatasetInfo
    shuffle_buffer: int


def skipped_images():
    """How many unreadable folder images were skipped since the process started."""
    return _skipped_count


def dataset_info(dataset, *, data_dir=None, manual_dir=None, download=False):
    """The DatasetInfo of `dataset` ("digits", a folder path or a TFDS name)."""
    kind = _kind(dataset)
    if kind == "digits":
        return _digits_info()
    if kind == "folder":
        return _folder_listing(os.fspath(dataset))[0]
    return _tfds_info(_tfds_builder(dataset, data_dir, manual_dir, download))


def open_source(dataset, split, *, training, seed, data_dir=None, manual_dir=None, download=False):
    """The Source for `split` ("train" or "val") of `dataset`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    kind = _kind(dataset)
    if kind == "digits":
        return _digits_source(split)
    if kind == "folder":
        return _folder_source(os.fspath(dataset), split)
    builder = _tfds_builder(dataset, data_dir, manual_dir, download)
    return _tfds_source(builder, split, training=training, seed=seed)


def _kind(dataset):
    if dataset == "digits":
        return "digits"
    if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and os.path.isdir(dataset)):
        return "folder"
    if isinstance(dataset, str):
        return "tfds"
    raise ValueError(f"bad dataset {dataset!r}; expected 'digits', a folder path or a TFDS name")


def _import_optional(module, package, purpose):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(f"{purpose} needs {package}: pip install {package}") from None


# --- scikit-learn digits -------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """Images [N, 8, 8, 1] in [0, 255], labels [N] and a fixed stratified validation mask (read once)."""
    sklearn_datasets = _import_optional("sklearn.datasets", "scikit-learn", "the digits dataset")
    digits = sklearn_datasets.load_digits()
    images = (digits.images * (255.0 / 16.0)).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    rng = np.random.RandomState(0)
    is_val = np.zeros(len(labels), dtype=bool)
    for label in range(10):
        members = rng.permutation(np.flatnonzero(labels == label))
        is_val[members[: round(_DIGITS_VAL_FRACTION * len(members))]] = True
    return images, labels, is_val


def _digits_info():
    _, _, is_val = _digits_arrays()
    counts = {"train": int(np.sum(~is_val)), "val": int(np.sum(is_val))}
    return DatasetInfo("digits", 10, tuple(str(label) for label in range(10)), counts)


def _digits_source(split):
    images, labels, is_val = _digits_arrays()
    chosen = is_val if split == "val" else ~is_val
    records = tf.data.Dataset.from_tensor_slices((images[chosen], labels[chosen]))
    return Source(records, lambda ds: ds, _digits_info(), int(np.sum(chosen)))


# --- image folder --------------------------------------------------------------------------


def _folder_classes(root):
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise ValueError(f"folder {root} has no train/ subfolder; expected {_FOLDER_LAYOUT}")
    names = sorted(entry.name for entry in os.scandir(train_dir) if entry.is_dir())
    if not names:
        raise ValueError(f"{train_dir} has no class subfolders; expected {_FOLDER_LAYOUT}")
    return tuple(names)


def _folder_files(root, split, class_names):
    """Sorted image paths of PATH/split and their labels."""
    split_dir = os.path.join(root, split)
    label_of = {name: label for label, name in enumerate(class_names)}
    paths, labels = [], []
    for class_dir in sorted((entry for entry in os.scandir(split_dir) if entry.is_dir()),
                            key=lambda entry: entry.name):
        if class_dir.name not in label_of:
            raise ValueError(f"class folder {class_dir.name!r} in {split_dir} is not a class of "
                             f"{os.path.join(root, 'train')}; val must use the train classes")
        files = sorted(entry.path for entry in os.scandir(class_dir.path)
                       if entry.name.lower().endswith(_IMAGE_SUFFIXES))
        paths += files
        labels += [label_of[class_dir.name]] * len(files)
    return paths, labels


@functools.lru_cache(maxsize=8)
def _folder_listing(root):
    """The DatasetInfo of folder `root` and {split: (paths, labels)} for the splits it has.

    Scanned once per process (an ImageNet-sized folder takes long to list; every epoch rebuilds its
    pipeline): files added to a folder during a run are not seen by that run.
    """
    class_names = _folder_classes(root)
    files = {split: _folder_files(root, split, class_names) for split in SPLITS
             if os.path.isdir(os.path.join(root, split))}
    counts = {split: len(files[split][0]) if split in files else 0 for split in SPLITS}
    return DatasetInfo(root, len(class_names), class_names, counts), files


def _folder_source(root, split):
    info, files = _folder_listing(root)
    if split not in files:
        raise ValueError(f"folder {root} has no {split}/ subfolder; expected {_FOLDER_LAYOUT}")
    paths, labels = files[split]
    records = tf.data.Dataset.from_tensor_slices(
        (tf.constant(paths, tf.string), tf.constant(labels, tf.int32)))

    def decode(ds):
        return ds.interleave(_decode_or_skip, num_parallel_calls=tf.data.AUTOTUNE,
                             deterministic=True)

    return Source(records, decode, info, max(len(paths), 1))


def _decode_or_skip(path, label):
    """A dataset of the one decoded image of `path`, or an empty one that counts a skip."""
    decoded = tf.data.Dataset.from_tensors(path).map(_decode_file).ignore_errors()
    # Reached only when `decoded` is empty: count the file, yield nothing.
    on_failure = tf.data.Dataset.from_tensors(path).map(_count_skip).filter(_never)
    return (decoded.concatenate(on_failure).take(1)
            .map(lambda image: (tf.cast(image, tf.float32), label)))


def decode_image(encoded):
    """An encoded image (JPEG, PNG, GIF's first frame, BMP) -> RGB uint8 [H, W, 3]."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _decode_file(path):
    return decode_image(tf.io.read_file(path))


def _count_skip(path):
    image = tf.numpy_function(_count_skip_eagerly, [path], tf.uint8, stateful=True)
    return tf.ensure_shape(image, [None, None, 3])


def _never(image):
    return tf.constant(False)


def _count_skip_eagerly(path):
    global _skipped_count
    with _skipped_lock:
        _skipped_count += 1
    _log.warning("kcnn.data: skipped unreadable image %s", path.decode(errors="replace"))
    return np.zeros((0, 0, 3), np.uint8)


# --- TensorFlow Datasets -------------------------------------------------------------------


def _tfds_builder(name, data_dir, manual_dir, download):
    """A prepared TFDS builder; fails fast, without touching the network, unless asked to."""
    tfds = _import_optional("tensorflow_datasets", "tensorflow-datasets", f"TFDS dataset {name!r}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except (tfds.core.DatasetNotFoundError, ValueError) as error:
        base = name.split("/")[0].lower()
        close = difflib.get_close_matches(base, tfds.list_builders(with_community_datasets=False))
        hint = f" (close TFDS names: {', '.join(close)})" if close else ""
        raise ValueError(f"unknown dataset {name!r}; expected 'digits', an existing folder or a "
                         f"TFDS name{hint}") from error
    features = builder.info.features
    if "image" not in features or "label" not in features:
        raise ValueError(f"TFDS dataset {name!r} has features {sorted(features.keys())}; "
                         "expected an image classification dataset with 'image' and 'label'")
    if builder.is_prepared():
        return builder
    if manual_dir is not None:
        if not os.path.isdir(manual_dir):
            raise ValueError(f"manual dir {manual_dir} is not a directory")
        if builder.MANUAL_DOWNLOAD_INSTRUCTIONS is None and not download:
            raise ValueError(f"TFDS dataset {name!r} has no manual download; "
                             "use --download (needs internet) instead of --manual-dir")
        config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
        builder.download_and_prepare(download_config=config)
    elif download:
        builder.download_and_prepare()
    else:
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; prepare it with "
            "--download (download=True, needs internet) or, for manual downloads such as "
            "imagenet2012, --manual-dir DIR (manual_dir=DIR, e.g. a DIR holding "
            "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar)")
    return builder


def _tfds_split(builder, split):
    if split == "train":
        return "train"
    return "validation" if "validation" in builder.info.splits else "test"


def _tfds_split_size(builder, tfds_split):
    if tfds_split in builder.info.splits:
        return builder.info.splits[tfds_split].num_examples
    # tfds.testing.mock_data leaves info.splits empty; its datasets know their length.
    return int(builder.as_dataset(split=tfds_split).cardinality())


def _tfds_info(builder):
    counts = {split: _tfds_split_size(builder, _tfds_split(builder, split)) for split in SPLITS}
    class_names = tuple(builder.info.features["label"].names)
    return DatasetInfo(builder.name, len(class_names), class_names, counts)


def _tfds_source(builder, split, *, training, seed):
    tfds = _import_optional("tensorflow_datasets", "tensorflow-datasets", builder.name)
    info = _tfds_info(builder)
    examples = builder.as_dataset(
        split=_tfds_split(builder, split),
        shuffle_files=training,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    records = examples.map(lambda example: (example["image"], example["label"]))
    image_feature = builder.info.features["image"]

    def decode_example(encoded, label):
        image = tf.cast(image_feature.decode_example(encoded), tf.float32)
        return image, tf.cast(label, tf.int32)

    def decode(ds):
        return ds.map(decode_example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    buffer = max(1, min(info.num_examples[split], _TFDS_SHUFFLE_BUFFER))
    return Source(records, decode, info, buffer)
