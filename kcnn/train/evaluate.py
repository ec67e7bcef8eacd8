"""``evaluate``: top-1/top-5 of a run or a kcnn weights file on a dataset split, single- or 10-crop.

Single crop follows the weights' training: ImageNet-style runs and imported ImageNet
weights are resized to 1/0.875 of the input and center-cropped, others resized.
``ten_crop`` is AlexNet's test procedure: the four corner crops and the center crop
of the image resized to 1/0.875 of the input, and their mirror images, softmax averaged.
"""

import json
import os

import keras
import tensorflow as tf

from kcnn import data
from kcnn.data.augment import CENTER_CROP_AUGMENTATIONS
from kcnn.tasks import ImageClassifier
from kcnn.weights import Preprocessing, read_metadata

EVAL_CROP_FRACTION = 0.875


def _weights_path(source):
    source = os.fspath(source)
    path = os.path.join(source, "model.weights.h5") if os.path.isdir(source) else source
    if not os.path.isfile(path):
        raise ValueError(f"{source!r} is neither a run directory with model.weights.h5 nor a weights file")
    return path


def _center_crop(source, metadata):
    config = os.path.join(os.fspath(source), "config.json")
    if os.path.isdir(os.fspath(source)) and os.path.isfile(config):
        with open(config, encoding="utf-8") as stream:
            return json.load(stream)["recipe"]["augment"] in CENTER_CROP_AUGMENTATIONS
    return metadata["source"]["library"] != "kcnn"


def ten_crops(images, crop_size):
    """[B, H, W, C] -> [10, B, h, w, C]: corners and center, then their mirror images."""
    height, width = images.shape[1], images.shape[2]
    crop_height, crop_width = crop_size
    offsets = [(0, 0), (0, width - crop_width), (height - crop_height, 0),
               (height - crop_height, width - crop_width),
               ((height - crop_height) // 2, (width - crop_width) // 2)]
    crops = [images[:, y:y + crop_height, x:x + crop_width, :] for y, x in offsets]
    return tf.stack(crops + [tf.reverse(crop, axis=[2]) for crop in crops])


def evaluate(source, dataset, *, split="val", ten_crop=False, batch_size=64, data_dir=None, manual_dir=None):
    """``{"top1", "top5", "loss", "count"}`` (percentages) of ``source`` on ``dataset``'s ``split``;
    the classifier's own statistics (as training's validation), over probabilities instead of logits."""
    path = _weights_path(source)
    metadata = read_metadata(path)
    if metadata is None:
        raise ValueError(f"{path!r} has no kcnn metadata (architecture, classes, preprocessing): "
                         "evaluate a kcnn run or a file from `kcnn weights import`")
    model = ImageClassifier(metadata["architecture"], metadata["classes"], input_shape=metadata["input_shape"],
                            backbone_options=metadata["options"], backbone_weights=path)
    info = data.dataset_info(dataset, data_dir=data_dir, manual_dir=manual_dir)
    if info.num_classes != metadata["classes"]:
        raise ValueError(f"{dataset!r} has {info.num_classes} classes, the model {metadata['classes']}")
    height, width, channels = metadata["input_shape"]
    normalise = Preprocessing.from_dict(metadata["preprocessing"])
    if ten_crop:
        size = (round(height / EVAL_CROP_FRACTION), round(width / EVAL_CROP_FRACTION))
        images, _ = data.load_classification(dataset, split, image_size=size, channels=channels,
                                             batch_size=batch_size, training=False, data_dir=data_dir,
                                             manual_dir=manual_dir)
    else:
        augment = "resnet_imagenet" if _center_crop(source, metadata) else None
        images, _ = data.load_classification(dataset, split, image_size=(height, width), channels=channels,
                                             batch_size=batch_size, training=False, augment=augment,
                                             data_dir=data_dir, manual_dir=manual_dir)

    @tf.function
    def probabilities(batch):
        if not ten_crop:
            return tf.nn.softmax(tf.cast(model(normalise(batch), training=False), tf.float32))
        crops = ten_crops(batch, (height, width))
        logits = tf.map_fn(lambda crop: tf.cast(model(normalise(crop), training=False), tf.float32), crops)
        return tf.reduce_mean(tf.nn.softmax(logits), axis=0)

    totals = {}
    for batch, labels in images:
        scores = probabilities(batch)
        sums = {"loss": tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(labels, scores)),
                **model.statistics(labels, scores)}
        for key, value in sums.items():
            totals[key] = totals.get(key, 0.0) + float(value)
    metrics = {key: float(value) for key, value in model.summarize(totals).items()}
    count = int(totals.get("count", 0))
    return {**metrics, "loss": totals.get("loss", float("nan")) / max(count, 1), "count": count}
