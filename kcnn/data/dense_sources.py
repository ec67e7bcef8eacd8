"""Segmentation, detection and instance segmentation sources: the common pieces, shapes and TFDS
(folders: dense_folders).

A `DenseSource` holds cheap records to shuffle, a `decode` step turning them into examples, and
the info. Segmentation examples are {"name": string, "image": uint8 [H, W, 3], "mask": int32
[H, W]}; detection examples are {"name", "index": the record's position in the split, "image",
"boxes": float32 [k, 4] normalised ymin, xmin, ymax, xmax (not yet clipped), "classes": int32 [k],
"ignore": bool [k] (COCO's crowd, VOC's difficult boxes)}; instance segmentation examples are
detection examples with "masks": uint8 [k, H, W], each box's instance at the image's size. A
detection or instance source also gives its split's ground truth for evaluation (`ground_truth`,
on the host, in original pixels: see `image_ground_truth`). Shapes and TFDS infos read no pixels:

>>> info = shapes_info("detection")
>>> info.class_names, info.num_examples
(('circle', 'square', 'triangle'), {'train': 2000, 'val': 250})

Splits of the TFDS datasets: oxford_iiit_pet train -> "train" (trainval), val -> "test";
voc/2007 train -> "train+validation" (trainval), val -> "test" (the VOC07 protocol); voc/2012
and coco/2017 train -> "train", val -> "validation" (their test splits have no labels).
"""

import dataclasses
import logging
import threading
from typing import Callable

import numpy as np
import tensorflow as tf

from kcnn.data import shapes
from kcnn.data.instances import encode_masks
from kcnn.data.sources import SPLITS, _import_optional, _tfds_split_size

TASKS = ("segmentation", "detection", "instance_segmentation")
IGNORE_LABEL = 255
SKIP_REASONS = ("unreadable", "bad mask label", "empty box", "bad box class",
                "box over max_boxes")
_TFDS_SHUFFLE_BUFFER = 1_000  # encoded images: a COCO-sized buffer would hold ~100 MB

# TFDS name -> (task, {our split: TFDS split}, the boolean object feature marking ignore regions)
TFDS_DATASETS = {
    "oxford_iiit_pet": ("segmentation", {"train": "train", "val": "test"}, None),
    "voc/2007": ("detection", {"train": "train+validation", "val": "test"}, "is_difficult"),
    "voc/2012": ("detection", {"train": "train", "val": "validation"}, "is_difficult"),
    "coco/2017": ("detection", {"train": "train", "val": "validation"}, "is_crowd"),
}
# The Oxford-IIIT Pet trimap: 1 pet, 2 background, 3 border (unclassified): ignored.
_PET_CLASSES = ("background", "pet")
_PET_TRIMAP = {1: 1, 2: 0, 3: IGNORE_LABEL}

_log = logging.getLogger(__name__)
_skipped_lock = threading.Lock()
_skipped = dict.fromkeys(SKIP_REASONS, 0)


@dataclasses.dataclass(frozen=True)
class SegmentationInfo:
    """What a training run needs to know about a segmentation dataset."""

    name: str  # "shapes", the TFDS name, or the folder path
    num_classes: int  # background (class 0) included
    class_names: tuple
    num_examples: dict  # "train"/"val" -> count (folders: files found, unreadable included)
    ignore_label: int = IGNORE_LABEL  # mask value that no loss or metric counts


@dataclasses.dataclass(frozen=True)
class DetectionInfo:
    """What a training run needs to know about a detection dataset (no background class)."""

    name: str
    num_classes: int
    class_names: tuple
    num_examples: dict
    ignored_boxes: str = "crowd"  # what its ignore regions are: COCO's "crowd" or VOC's "difficult" boxes


@dataclasses.dataclass(frozen=True)
class DenseSource:
    """One split of a dataset, before shuffling, decoding and transforming."""

    records: tf.data.Dataset
    decode: Callable[[tf.data.Dataset], tf.data.Dataset]
    info: object  # SegmentationInfo or DetectionInfo (detection and instance segmentation)
    shuffle_buffer: int
    ground_truth: Callable[[], dict] = None  # boxes: {record index: image_ground_truth}


def image_ground_truth(height, width, boxes, classes, ignore, area=None, segmentation=None):
    """One image's ground truth as detection protocols score it: ``boxes`` [n, 4] float64 pixels (ymin,
    xmin, ymax, xmax) of the original image, clipped to it, ``classes``, ``ignore`` (crowd or difficult:
    ignore regions) and ``area`` (the annotation's, COCO's segment area, or the box's), without the boxes
    the loaders drop (no area once clipped; an unknown class is dropped by the caller) and never truncated.
    With ``segmentation`` (instance segmentation: one COCO RLE per box at height x width, see
    kcnn.data.instances) the kept boxes' RLEs, in the same order, under "segmentation".

    >>> truth = image_ground_truth(10, 20, [[-2, 1, 4, 5], [3, 3, 3, 9]], [0, 1], [False, False])
    >>> truth["boxes"].tolist(), truth["area"].tolist()
    ([[0.0, 1.0, 4.0, 5.0]], [16.0])
    """
    boxes = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, [height, width, height, width])
    box_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = box_area > 0
    area = box_area if area is None else np.where(np.asarray(area, np.float64) > 0, area, box_area)
    truth = {"height": int(height), "width": int(width), "boxes": boxes[keep],
             "classes": np.asarray(classes, np.int64).reshape(-1)[keep],
             "ignore": np.asarray(ignore, bool).reshape(-1)[keep], "area": np.asarray(area, np.float64)[keep]}
    if segmentation is not None:
        truth["segmentation"] = [rle for rle, kept in zip(segmentation, keep) if kept]
    return truth


def skipped_samples():
    """{reason: count} skipped since the process started, each time a sample is read:
    "unreadable" (image or mask, or a mask of another size than its image), "bad mask label"
    (a value neither < num_classes nor 255) count samples; "empty box" (no area once clipped to
    the image), "bad box class" and "box over max_boxes" count boxes."""
    with _skipped_lock:
        return dict(_skipped)


def count_skip(reason, name, number=1):
    """A graph op that adds `number` to skipped_samples()[reason], logs `name`, returns False."""
    flag = tf.numpy_function(_count_eagerly, [reason, name, tf.cast(number, tf.int64)], tf.bool,
                             stateful=True)
    return tf.ensure_shape(flag, [])


def _count_eagerly(reason, name, number):
    reason = reason.decode()
    with _skipped_lock:
        _skipped[reason] += int(number)
    _log.warning("kcnn.data: skipped %d (%s) in %s", number, reason,
                 name.decode(errors="replace"))
    return np.bool_(False)


# --- shapes --------------------------------------------------------------------------------


def shapes_info(task):
    if task == "segmentation":
        return SegmentationInfo("shapes", len(shapes.SHAPES_CLASSES) + 1,
                                ("background",) + shapes.SHAPES_CLASSES, dict(shapes.SPLIT_SIZES))
    return DetectionInfo("shapes", len(shapes.SHAPES_CLASSES), shapes.SHAPES_CLASSES,
                         dict(shapes.SPLIT_SIZES))


def open_shapes(task, split):
    """Instance masks are each shape's pixels (shapes never overlap: see kcnn.data.shapes); the
    ground truth's "area" is then the mask's, as COCO's is its segment's."""
    images, masks, boxes, classes, counts = shapes.generate_padded(split)
    size = images.shape[1]
    index = np.arange(len(images))
    if task == "segmentation":
        records = tf.data.Dataset.from_tensor_slices((index, images, masks))

        def example(i, image, mask):
            return {"name": _shapes_name(split, i), "image": image, "mask": tf.cast(mask, tf.int32)}

        ground_truth = None
    else:
        columns = {"index": index, "image": images, "boxes": boxes / size, "classes": classes, "count": counts}
        if task == "instance_segmentation":
            columns["instances"] = shapes.generate_instances(split)
        records = tf.data.Dataset.from_tensor_slices(columns)

        def example(record):
            count = record["count"]
            found = {"name": _shapes_name(split, record["index"]), "index": record["index"],
                     "image": record["image"], "boxes": record["boxes"][:count],
                     "classes": record["classes"][:count], "ignore": tf.zeros([count], tf.bool)}
            if "instances" in record:  # box i's mask: the pixels of instance i + 1
                ids = tf.range(1, count + 1, dtype=tf.int32)[:, tf.newaxis, tf.newaxis]
                found["masks"] = tf.cast(tf.cast(record["instances"], tf.int32)[tf.newaxis] == ids, tf.uint8)
            return found

        def ground_truth():
            truth = {}
            for i, n in enumerate(counts):
                extra = {}
                if "instances" in columns:
                    own = columns["instances"][i] == np.arange(1, n + 1)[:, np.newaxis, np.newaxis]
                    extra = {"area": own.sum(axis=(1, 2)), "segmentation": encode_masks(own)}
                truth[i] = image_ground_truth(size, size, boxes[i, :n], classes[i, :n], np.zeros(n, bool),
                                              **extra)
            return truth

    def decode(ds):
        return ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    return DenseSource(records, decode, shapes_info(task), len(images), ground_truth)


def _shapes_name(split, index):
    return tf.strings.join([f"shapes/{split}/", tf.strings.as_string(index)])


# --- TensorFlow Datasets -------------------------------------------------------------------


def tfds_info(name, task, *, data_dir=None, manual_dir=None, download=False):
    """The info of TFDS dataset `name` (a key of TFDS_DATASETS) for `task`."""
    return _tfds_info(_tfds_builder(name, data_dir, manual_dir, download), name, task)


def open_tfds(name, task, split, *, training, seed, data_dir=None, manual_dir=None,
              download=False):
    """The DenseSource of `split` of TFDS dataset `name` (a key of TFDS_DATASETS)."""
    builder = _tfds_builder(name, data_dir, manual_dir, download)
    return _tfds_source(builder, name, task, split, training=training, seed=seed)


def _tfds_builder(name, data_dir, manual_dir, download):
    """A prepared TFDS builder; fails fast, without touching the network, unless asked to.

    Like kcnn.data.sources._tfds_builder, which insists on classification features.
    """
    tfds = _import_optional("tensorflow_datasets", "tensorflow-datasets", f"TFDS dataset {name!r}")
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return builder
    if manual_dir is not None:
        raise ValueError(f"TFDS dataset {name!r} has no manual download; "
                         "use --download (needs internet) instead of --manual-dir")
    if not download:
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}; prepare it with "
            "--download (download=True, needs internet) or point --data-dir (data_dir=DIR) at a "
            "folder where it is prepared (--manual-dir is for manual downloads only)")
    builder.download_and_prepare()
    return builder


def _tfds_info(builder, name, task):
    splits = TFDS_DATASETS[name][1]
    counts = {split: _tfds_split_size(builder, splits[split]) for split in SPLITS}
    if task == "segmentation":
        return SegmentationInfo(name, len(_PET_CLASSES), _PET_CLASSES, counts)
    names = tuple(builder.info.features["objects"]["label"].names)
    ignored = "difficult" if TFDS_DATASETS[name][2] == "is_difficult" else "crowd"
    return DetectionInfo(name, len(names), names, counts, ignored)


def _tfds_source(builder, name, task, split, *, training, seed):
    tfds = _import_optional("tensorflow_datasets", "tensorflow-datasets", name)
    info = _tfds_info(builder, name, task)
    _, splits, ignored = TFDS_DATASETS[name]
    examples = builder.as_dataset(split=splits[split], shuffle_files=training,
                                  decoders={"image": tfds.decode.SkipDecoding()},
                                  read_config=tfds.ReadConfig(shuffle_seed=seed))
    if task == "segmentation":
        records = examples.map(lambda ex: {"name": ex["file_name"], "encoded": ex["image"],
                                           "mask": ex["segmentation_mask"]})
        table = np.full(256, -1, np.int32)  # other trimap values: a bad mask label
        for value, label in _PET_TRIMAP.items():
            table[value] = label

        def example(record):
            image = decode_image(record["encoded"])
            mask = tf.gather(table, tf.cast(record["mask"][..., 0], tf.int32))
            return {"name": record["name"], "image": image, "mask": sized_like(mask, image)}
    else:
        def record_of(index, ex):
            objects = ex["objects"]
            return {"name": ex["image/filename"], "index": tf.cast(index, tf.int32), "encoded": ex["image"],
                    "boxes": objects["bbox"], "classes": tf.cast(objects["label"], tf.int32),
                    "ignore": objects[ignored], "area": tf.cast(objects.get("area", tf.zeros_like(objects["label"])),
                                                                tf.float64)}

        records = examples.enumerate().map(record_of)

        def example(record):
            return {**{key: record[key] for key in ("name", "index", "boxes", "classes", "ignore")},
                    "image": decode_image(record["encoded"])}

        def ground_truth():
            unshuffled = builder.as_dataset(split=splits[split], shuffle_files=False,
                                            decoders={"image": tfds.decode.SkipDecoding()})
            return {int(record["index"]): image_ground_truth(*size, record["boxes"] * np.tile(size, 2),
                                                             record["classes"], record["ignore"], record["area"])
                    for size, record in _with_image_sizes(unshuffled.enumerate().map(record_of))}

    buffer = max(1, min(info.num_examples[split], _TFDS_SHUFFLE_BUFFER))
    return DenseSource(records, lambda ds: decode_or_skip(ds, example), info, buffer,
                       ground_truth if task == "detection" else None)


def _with_image_sizes(records):
    """(height, width), record pairs on the host; JPEG headers are read without decoding the pixels, and
    unreadable images are left out (the loaders skip them)."""
    def size_of(record):
        encoded = record["encoded"]
        shape = tf.cond(tf.image.is_jpeg(encoded), lambda: tf.image.extract_jpeg_shape(encoded)[:2],
                        lambda: tf.shape(decode_image(encoded))[:2])
        return shape, {key: value for key, value in record.items() if key != "encoded"}

    sized = records.map(size_of, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    for size, record in sized.as_numpy_iterator():
        yield size.astype(np.float64), record


# --- decoding ------------------------------------------------------------------------------


def decode_image(encoded):
    """uint8 [H, W, 3] from JPEG/PNG/BMP/GIF bytes; grayscale becomes RGB."""
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def sized_like(mask, image):
    """`mask` ([H, W], or masks [k, H, W]), failing (so that decode_or_skip skips the sample) unless
    it has image's size."""
    same_size = tf.debugging.assert_equal(tf.shape(mask)[-2:], tf.shape(image)[:2],
                                          message="mask size differs from its image")
    with tf.control_dependencies([same_size]):
        return tf.identity(mask)


def decode_or_skip(records, decode):
    """records mapped by `decode` (record dict with a "name" -> example), with the records
    whose decoding fails skipped and counted as "unreadable", never fatal."""

    def one(record):
        decoded = tf.data.Dataset.from_tensors(record).map(decode).ignore_errors()
        # Reached only when `decoded` is empty: count the record and yield nothing (the filter
        # is always False, so `decode` never runs on this branch).
        failed = (tf.data.Dataset.from_tensors(record)
                  .filter(lambda r: count_skip("unreadable", r["name"])).map(decode))
        return decoded.concatenate(failed).take(1)

    return records.interleave(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
