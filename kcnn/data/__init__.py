"""Classification datasets as tf.data pipelines: digits, image folders and TFDS.

`load_classification` returns batches of (images float32 [B, H, W, C] with pixel values in
[0, 255], labels int32 [B]) and the DatasetInfo. Training pipelines shuffle and augment with
`seed`, so two pipelines built with the same seed yield the same batches. Evaluation pipelines
apply the recipe's evaluation transform (`kcnn.data.augment`: "center_crop" after the
ImageNet-style augmentations, else "resize"), as the exported SavedModels do:

>>> ds, info = load_classification("digits", "val", image_size=(16, 16), channels=1,
...                                batch_size=32, training=False)
>>> images, labels = next(iter(ds))
>>> images.shape, labels.dtype, info.class_names[:3]
(TensorShape([32, 16, 16, 1]), tf.int32, ('0', '1', '2'))
"""

import tensorflow as tf

from kcnn.data import augment as augmentations
from kcnn.data.augment import AUGMENTATIONS, EVAL_TRANSFORMS, eval_transform_for
from kcnn.data.dense import (dense_dataset_info, detection_ground_truth, instance_ground_truth, load_detection,
                             load_instances, load_segmentation)
from kcnn.data.dense_sources import DetectionInfo, SegmentationInfo, skipped_samples
from kcnn.data.shapes import SHAPES_CLASSES
from kcnn.data.sources import SPLITS, DatasetInfo, dataset_info, open_source, skipped_images

__all__ = ["AUGMENTATIONS", "EVAL_TRANSFORMS", "DatasetInfo", "DetectionInfo", "SHAPES_CLASSES",
           "SegmentationInfo", "dataset_info", "dense_dataset_info", "detection_ground_truth", "eval_transform_for",
           "instance_ground_truth", "load_classification", "load_detection", "load_instances", "load_segmentation",
           "skipped_images", "skipped_samples"]


def load_classification(dataset, split, *, image_size, channels, batch_size, training,
                        augment=None, eval_transform=None, ten_crop=False, seed=0, data_dir=None,
                        manual_dir=None, download=False, drop_remainder=None):
    """Batches of (images, labels) of `split` ("train" or "val") of `dataset`, and its info.

    dataset: "digits", a folder PATH (PATH/{train,val}/<class>/*.jpg|*.jpeg|*.png) or a TFDS
    name. Images get `channels` (1 or 3) before any transform. training=True shuffles, augments
    with `augment` (one of AUGMENTATIONS; None means "none") and drops the last partial batch
    unless drop_remainder=False. Evaluation applies `eval_transform` (one of EVAL_TRANSFORMS;
    None: the one of `augment`'s recipe), or with ten_crop=True gives AlexNet's ten crops of
    each image (`augment.ten_crops`): images [B, 10, H, W, C].
    """
    _check_arguments(split, image_size, channels, batch_size)
    augment_name = "none" if augment is None else augment
    train_fn = augmentations.train_transform(augment_name)
    eval_name = augmentations.check_eval_transform(
        eval_transform or augmentations.eval_transform_for(augment_name))
    source = open_source(dataset, split, training=training, seed=seed, data_dir=data_dir,
                         manual_dir=manual_dir, download=download)
    image_size = tuple(image_size)

    ds = source.records
    if training:
        ds = ds.shuffle(source.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    ds = source.decode(ds)
    if training:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

        def transform(example, op_seed):
            image, label = example
            image = augmentations.with_channels(image, channels)
            return train_fn(image, image_size, op_seed), label

        ds = tf.data.Dataset.zip((ds, seeds))
    elif ten_crop:

        def transform(image, label):
            return augmentations.ten_crops(image, image_size, channels=channels), label
    else:

        def transform(image, label):
            return augmentations.eval_transform(image, image_size, eval_name, channels=channels), label

    ds = ds.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=training if drop_remainder is None else drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE), source.info


def _check_arguments(split, image_size, channels, batch_size):
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if channels not in (1, 3):
        raise ValueError(f"bad channels {channels!r}; expected 1 or 3")
    if (len(tuple(image_size)) != 2
            or not all(isinstance(side, int) and side > 0 for side in image_size)):
        raise ValueError(f"bad image_size {image_size!r}; expected (height, width), positive ints")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"bad batch_size {batch_size!r}; expected a positive int")
