"""Segmentation, detection and instance segmentation datasets as tf.data pipelines: shapes, folders
and TFDS.

Images are float32 [B, H, W, 3] with pixel values in [0, 255] (grayscale repeated to RGB) at
exactly image_size; masks int32 [B, H, W] class ids (255 = ignore); detection targets are boxes
normalised ymin, xmin, ymax, xmax zero-padded to max_boxes, classes padded with -1, the count of
real boxes and each image's index in its split (the key of `detection_ground_truth`, what
detections are scored against); instance segmentation targets add each box's mask at image_size
(`load_instances`, scored against `instance_ground_truth`). Training pipelines shuffle and augment
with `seed`: same seed, same batches whatever the load; like every seeded TF op they also depend on
the global TF seed (keras.utils.set_random_seed), so set that too, or leave it unset, to repeat a run.

>>> ds, info = load_segmentation("shapes", "val", image_size=(64, 64), batch_size=8,
...                              training=False)
>>> images, masks = next(iter(ds))
>>> images.shape, masks.dtype, info.num_classes
(TensorShape([8, 64, 64, 3]), tf.int32, 4)
>>> ds, info = load_detection("shapes", "val", image_size=(64, 64), batch_size=8,
...                           training=False, max_boxes=10)
>>> images, targets = next(iter(ds))
>>> targets["boxes"].shape, targets["classes"].dtype, targets["num_boxes"].shape
(TensorShape([8, 10, 4]), tf.int32, TensorShape([8]))
>>> truth = detection_ground_truth("shapes", "val")
>>> len(truth), truth[int(targets["image_index"][0])]["boxes"].shape[1]  # original pixels, all boxes
(250, 4)
>>> ds, info = load_instances("shapes", "val", image_size=(64, 64), batch_size=8,
...                            training=False, max_boxes=10)
>>> images, targets = next(iter(ds))
>>> targets["masks"].shape, targets["masks"].dtype
(TensorShape([8, 10, 64, 64]), tf.uint8)
>>> truth = instance_ground_truth("shapes", "val")
>>> len(truth[0]["segmentation"]) == len(truth[0]["boxes"]), truth[0]["segmentation"][0]["size"]
(True, [128, 128])
>>> dense_dataset_info("coco/2017", "detection", data_dir="/nonexistent")
Traceback (most recent call last):
ValueError: TFDS dataset 'coco/2017' is not prepared in ...
"""

import functools
import os

import tensorflow as tf

from kcnn.data.dense_folders import FOLDER_LAYOUTS, folder_info, folder_kind, open_folder
from kcnn.data.dense_sources import (IGNORE_LABEL, TASKS, TFDS_DATASETS, count_skip, open_shapes,
                                     open_tfds, shapes_info, tfds_info)
from kcnn.data.sources import SPLITS

_SCALE_RANGE = (0.75, 1.5)  # segmentation training: of image_size, before the crop or pad
# Scaled-down training images are padded with the ImageNet mean (masks with IGNORE_LABEL).
_MEAN_RGB = (123.68, 116.78, 103.94)


def load_segmentation(dataset, split, *, image_size, batch_size, training, seed=0, data_dir=None,
                      manual_dir=None, download=False, drop_remainder=None, original_masks=False):
    """Batches of (images, masks) of `split` ("train" or "val") of `dataset`, and its
    SegmentationInfo.

    dataset: "shapes", a folder (see kcnn.data.dense_folders) or oxford_iiit_pet (TFDS; its
    trimap becomes 0 background, 1 pet, and the border pixels 255, ignored). training=True
    shuffles, scales by a random factor in [0.75, 1.5] of image_size, crops (or pads: images
    with the ImageNet mean, masks with 255) to image_size, flips at random, and drops the last
    partial batch unless drop_remainder=False; evaluation resizes images (bilinear) and masks
    (nearest), or, with original_masks=True, keeps each mask at its image's original size: targets
    {"masks": int32 [B, H, W] padded with 255 to the batch's largest, "image_size": int32 [B, 2]},
    the labels mean IoU is scored on (kcnn.tasks.ImageSegmenter resizes its logits to them). A
    sample whose mask holds a value neither < num_classes nor 255, or whose image or mask is
    unreadable, is skipped and counted in skipped_samples().
    """
    _check_arguments(split, image_size, batch_size)
    image_size = tuple(image_size)
    source = _open(dataset, "segmentation", split, training, seed, data_dir, manual_dir, download)
    num_classes = source.info.num_classes
    ds = _decoded(source, training, seed)
    ds = ds.filter(lambda example: _known_labels(example, num_classes))
    if original_masks and not training:
        ds = ds.map(lambda example: _original_masks_pair(example, image_size),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        padding = (0.0, {"masks": IGNORE_LABEL, "image_size": 0})
        ds = ds.padded_batch(batch_size, padding_values=padding, drop_remainder=bool(drop_remainder))
        return ds.prefetch(tf.data.AUTOTUNE), source.info
    ds = _transformed(ds, training, seed,
                      lambda example, op_seed: _segmentation_pair(example, image_size, op_seed))
    return _batched(ds, batch_size, training, drop_remainder), source.info


def load_detection(dataset, split, *, image_size, batch_size, training, seed=0, max_boxes=100,
                   data_dir=None, manual_dir=None, download=False, drop_remainder=None):
    """Batches of (images, {"boxes", "classes", "num_boxes", "image_index"}) of `split` of `dataset`,
    and its DetectionInfo: the targets a detector's loss learns from.

    dataset: "shapes", a COCO-layout folder, or voc/2007, voc/2012 (TFDS) or coco/2017 (TFDS).
    Ignore regions (COCO's crowd and VOC's difficult boxes) are left out of these targets: the
    evaluation keeps them (`detection_ground_truth`). Boxes are clipped to the image; boxes left
    without area, or of an unknown class, are dropped and counted in skipped_samples(), and so are
    the boxes after the first max_boxes of an image (the loss's only: evaluation never truncates).
    Images without boxes are kept. training=True shuffles and flips at random (boxes mirrored);
    both modes resize to image_size, which keeps normalised boxes exact.
    """
    return _box_pipeline(dataset, "detection", split, image_size, batch_size, training, seed, max_boxes,
                         data_dir, manual_dir, download, drop_remainder)


def load_instances(dataset, split, *, image_size, batch_size, training, seed=0, max_boxes=100,
                   data_dir=None, manual_dir=None, download=False, drop_remainder=None):
    """Batches of (images, {"boxes", "classes", "num_boxes", "masks", "image_index"}) of `split` of
    `dataset`, and its DetectionInfo: the targets an instance segmenter (Mask R-CNN) learns from.

    load_detection's pipeline and targets, cleaned and flipped alike, with "masks": uint8 [B, max_boxes,
    H, W] at image_size, box i's instance (1 inside) resized nearest-neighbour from the image's size,
    zeros for the padding. dataset: "shapes" (its instances are whole shapes, which never overlap) or a
    COCO-layout folder whose annotations have segmentations (polygons or RLE; see
    kcnn.data.dense_folders). TFDS's coco/2017 has boxes only and is refused. A mask of another size
    than its image makes the image "unreadable" (skipped and counted).
    """
    return _box_pipeline(dataset, "instance_segmentation", split, image_size, batch_size, training, seed,
                         max_boxes, data_dir, manual_dir, download, drop_remainder)


def _box_pipeline(dataset, task, split, image_size, batch_size, training, seed, max_boxes, data_dir, manual_dir,
                  download, drop_remainder):
    _check_arguments(split, image_size, batch_size)
    if not isinstance(max_boxes, int) or max_boxes < 1:
        raise ValueError(f"bad max_boxes {max_boxes!r}; expected a positive int")
    image_size = tuple(image_size)
    source = _open(dataset, task, split, training, seed, data_dir, manual_dir, download)
    num_classes = source.info.num_classes
    ds = _decoded(source, training, seed)
    ds = ds.map(lambda example: _clean_boxes(example, num_classes, max_boxes),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = _transformed(ds, training, seed, lambda example, op_seed: _detection_pair(
        example, image_size, max_boxes, op_seed))
    return _batched(ds, batch_size, training, drop_remainder), source.info


def detection_ground_truth(dataset, split, *, data_dir=None, manual_dir=None, download=False):
    """{image index: ground truth} of `split` of a detection dataset, as COCO and VOC score it: every box
    (none truncated) in the image's original pixels, its crowd or difficult boxes kept as ignore regions,
    COCO's annotated areas (see kcnn.data.dense_sources.image_ground_truth). Boxes of an unknown class are
    left out, as the loaders drop them. Read once per process and split."""
    return _ground_truth(_cache_key(dataset, "detection"), "detection", split, data_dir, manual_dir, download)


def instance_ground_truth(dataset, split, *, data_dir=None, manual_dir=None, download=False):
    """`detection_ground_truth` of an instance segmentation dataset (`load_instances`), each image's dict
    with "segmentation": one COCO RLE (pycocotools' compressed {"size": [height, width], "counts": bytes})
    per box, in the order of "boxes", at the image's original size: what COCOeval's "segm" scores
    (kcnn.tasks.coco_eval, iou_type="segm"). Shapes' "area" is each mask's pixel count, COCO's the
    annotated segment area."""
    task = "instance_segmentation"
    return _ground_truth(_cache_key(dataset, task), task, split, data_dir, manual_dir, download)


def _cache_key(dataset, task):
    """`dataset` as a hashable key (a folder's path as a string), checked for `task`."""
    return os.fspath(dataset) if _kind(dataset, task) == "folder" else dataset


@functools.lru_cache(maxsize=4)
def _ground_truth(dataset, task, split, data_dir, manual_dir, download):
    source = _open(dataset, task, split, False, 0, data_dir, manual_dir, download)
    known = source.info.num_classes
    truth = {}
    for index, image in source.ground_truth().items():
        keep = (image["classes"] >= 0) & (image["classes"] < known)
        truth[index] = {**image, **{key: image[key][keep] for key in ("boxes", "classes", "ignore", "area")}}
        if "segmentation" in image:
            truth[index]["segmentation"] = [rle for rle, kept in zip(image["segmentation"], keep) if kept]
    return truth


def dense_dataset_info(dataset, task, *, data_dir=None, manual_dir=None, download=False):
    """The SegmentationInfo or DetectionInfo (task "segmentation", or "detection" and
    "instance_segmentation") of `dataset`, without building a pipeline. TFDS datasets must be prepared
    (or download=True)."""
    kind = _kind(dataset, task)
    if kind == "shapes":
        return shapes_info(task)
    if kind == "folder":
        return folder_info(os.fspath(dataset), task)
    return tfds_info(dataset, task, data_dir=data_dir, manual_dir=manual_dir, download=download)


def _kind(dataset, task):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if isinstance(dataset, str) and dataset == "shapes":
        return "shapes"
    if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and os.path.isdir(dataset)):
        folder_kind(os.fspath(dataset), task)  # refuses a folder of another layout now
        return "folder"
    names = [name for name, (name_task, _, _) in TFDS_DATASETS.items() if name_task == task]
    if isinstance(dataset, str) and dataset in names:
        return "tfds"
    if task == "segmentation" and isinstance(dataset, str) and dataset.startswith("voc"):
        raise ValueError(f"TFDS has no VOC segmentation variant ({dataset!r} has boxes only); "
                         "segmentation accepts 'shapes', oxford_iiit_pet or a folder "
                         f"{FOLDER_LAYOUTS['segmentation']} (VOC SegmentationClass PNGs fit)")
    if task == "instance_segmentation" and isinstance(dataset, str) and dataset.startswith("coco"):
        raise ValueError(f"TFDS {dataset!r} has no instance masks (coco/2017 has boxes only, coco/2017_panoptic "
                         "panoptic segments, not the instances annotations); instance_segmentation reads a folder "
                         "of the official COCO files: PATH/annotations/instances_val2017.json with PATH/val2017/ "
                         "(and train2017 alike)")
    if not names:
        raise ValueError(f"unknown {task} dataset {dataset!r}; expected 'shapes' or a folder {FOLDER_LAYOUTS[task]}")
    raise ValueError(f"unknown {task} dataset {dataset!r}; expected 'shapes', a folder "
                     f"{FOLDER_LAYOUTS[task]} or a TFDS name among {', '.join(names)}")


def _open(dataset, task, split, training, seed, data_dir, manual_dir, download):
    kind = _kind(dataset, task)
    if kind == "shapes":
        return open_shapes(task, split)
    if kind == "folder":
        return open_folder(os.fspath(dataset), task, split)
    return open_tfds(dataset, task, split, training=training, seed=seed, data_dir=data_dir,
                     manual_dir=manual_dir, download=download)


def _check_arguments(split, image_size, batch_size):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if (len(tuple(image_size)) != 2
            or not all(isinstance(side, int) and side > 0 for side in image_size)):
        raise ValueError(f"bad image_size {image_size!r}; expected (height, width), positive ints")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"bad batch_size {batch_size!r}; expected a positive int")


def _decoded(source, training, seed):
    ds = source.records
    if training:
        ds = ds.shuffle(source.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return source.decode(ds)


def _transformed(ds, training, seed, transform):
    """ds mapped by transform(example, op_seed): per element and epoch stateless seeds [2] when
    training, None when evaluating."""
    if not training:
        return ds.map(lambda example: transform(example, None),
                      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip((ds, seeds)).map(transform, num_parallel_calls=tf.data.AUTOTUNE,
                                                deterministic=True)


def _batched(ds, batch_size, training, drop_remainder):
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def _count_if(reason, name, number):
    """Counts `number` skips for `reason` when positive; an op to depend on."""
    return tf.cond(number > 0, lambda: count_skip(reason, name, number),
                   lambda: tf.constant(False))


# --- segmentation --------------------------------------------------------------------------


def _known_labels(example, num_classes):
    mask = example["mask"]
    known = tf.reduce_all(((mask >= 0) & (mask < num_classes)) | (mask == IGNORE_LABEL))
    return tf.cond(known, lambda: tf.constant(True),
                   lambda: count_skip("bad mask label", example["name"]))


def _resize_mask(mask, size):
    return tf.image.resize(mask[..., tf.newaxis], size, method="nearest")[..., 0]


def _segmentation_pair(example, image_size, seed):
    """(image, mask) at image_size: resized, or (with a seed) scaled, cropped and flipped."""
    if seed is not None:
        return _train_segmentation(example, image_size, seed)
    image = tf.image.resize(tf.cast(example["image"], tf.float32), image_size)
    mask = tf.cast(_resize_mask(example["mask"], image_size), tf.int32)
    return tf.ensure_shape(image, [*image_size, 3]), tf.ensure_shape(mask, image_size)


def _original_masks_pair(example, image_size):
    """(image resized to image_size, {"masks": the mask as it is, "image_size": its height and width})."""
    image = tf.image.resize(tf.cast(example["image"], tf.float32), image_size)
    mask = tf.cast(example["mask"], tf.int32)
    return tf.ensure_shape(image, [*image_size, 3]), {"masks": mask, "image_size": tf.shape(mask)[:2]}


def _train_segmentation(example, image_size, seed):
    """Random scale, crop or pad to image_size, and flip, the same for image and mask."""
    scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.split(seed, 3))
    target = tf.constant(image_size, tf.int32)
    scale = tf.random.stateless_uniform([], scale_seed, *_SCALE_RANGE)
    size = tf.cast(tf.round(scale * tf.cast(target, tf.float32)), tf.int32)
    mean = tf.constant(_MEAN_RGB)
    image = tf.image.resize(tf.cast(example["image"], tf.float32), size) - mean
    mask = tf.cast(_resize_mask(example["mask"], size), tf.float32) - IGNORE_LABEL
    # Both shifted so that zero padding pads with the mean and IGNORE_LABEL; the padding on
    # each side lets a scaled-down image land anywhere in the crop.
    stacked = tf.concat([image, mask[..., tf.newaxis]], axis=-1)
    pad = tf.maximum(target - size, 0)
    stacked = tf.pad(stacked, [[pad[0], pad[0]], [pad[1], pad[1]], [0, 0]])
    stacked = tf.image.stateless_random_crop(stacked, [*image_size, 4], crop_seed)
    stacked = tf.image.stateless_random_flip_left_right(stacked, flip_seed)
    image = tf.clip_by_value(stacked[..., :3] + mean, 0.0, 255.0)
    mask = tf.cast(tf.round(stacked[..., 3]), tf.int32) + IGNORE_LABEL
    return tf.ensure_shape(image, [*image_size, 3]), tf.ensure_shape(mask, image_size)


# --- detection -----------------------------------------------------------------------------


def _clean_boxes(example, num_classes, max_boxes):
    """The loss's boxes (and their "masks", if the example has them): ignore regions left out, boxes
    clipped to [0, 1]; unknown classes, empty boxes and those past max_boxes dropped (and counted)."""
    learned = tf.logical_not(tf.cast(example["ignore"], tf.bool))
    boxes = tf.clip_by_value(tf.cast(tf.boolean_mask(example["boxes"], learned), tf.float32), 0.0, 1.0)
    classes = tf.cast(tf.boolean_mask(example["classes"], learned), tf.int32)
    known = (classes >= 0) & (classes < num_classes)
    # NaN coordinates fail these comparisons: such boxes count as empty.
    has_area = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    keep = known & has_area
    kept = {"boxes": tf.boolean_mask(boxes, keep), "classes": tf.boolean_mask(classes, keep)}
    if "masks" in example:
        kept["masks"] = tf.boolean_mask(tf.boolean_mask(example["masks"], learned), keep)
    name = example["name"]
    counted = [
        _count_if("bad box class", name, tf.reduce_sum(tf.cast(~known, tf.int32))),
        _count_if("empty box", name, tf.reduce_sum(tf.cast(known & ~has_area, tf.int32))),
        _count_if("box over max_boxes", name, tf.maximum(tf.shape(kept["boxes"])[0] - max_boxes, 0)),
    ]
    with tf.control_dependencies(counted):
        return {"image": tf.identity(example["image"]), "index": tf.cast(example["index"], tf.int32),
                **{key: tf.identity(value[:max_boxes]) for key, value in kept.items()}}


def _detection_pair(example, image_size, max_boxes, seed):
    """(image at image_size, padded targets, with masks resized nearest-neighbour if the example has
    them); with a seed, a random horizontal flip of all."""
    image = tf.image.resize(tf.cast(example["image"], tf.float32), image_size)
    boxes, classes = example["boxes"], example["classes"]
    masks = (tf.image.resize(example["masks"][..., tf.newaxis], image_size, method="nearest")[..., 0]
             if "masks" in example else None)
    if seed is not None:
        flip = tf.random.stateless_uniform([], seed) < 0.5
        image = tf.where(flip, tf.reverse(image, axis=[1]), image)
        ymin, xmin, ymax, xmax = tf.unstack(boxes, num=4, axis=1)
        boxes = tf.where(flip, tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1), boxes)
        if masks is not None:
            masks = tf.where(flip, tf.reverse(masks, axis=[2]), masks)
    count = tf.shape(boxes)[0]
    targets = {
        "boxes": tf.ensure_shape(tf.pad(boxes, [[0, max_boxes - count], [0, 0]]), [max_boxes, 4]),
        "classes": tf.ensure_shape(tf.pad(classes, [[0, max_boxes - count]], constant_values=-1),
                                   [max_boxes]),
        "num_boxes": count,
        "image_index": example["index"],
    }
    if masks is not None:
        targets["masks"] = tf.ensure_shape(tf.pad(masks, [[0, max_boxes - count], [0, 0], [0, 0]]),
                                           [max_boxes, *image_size])
    return tf.ensure_shape(image, [*image_size, 3]), targets
