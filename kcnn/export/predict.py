"""Querying an exported SavedModel the way TF Serving does: its ``serving_default`` signature on file bytes."""

import json
import os
import re

import numpy as np
import tensorflow as tf

from kcnn.export import LABELS, MODEL_CARD, next_version


def version_dir(model_dir):
    """``model_dir`` itself when it holds a SavedModel, else its newest integer version."""
    model_dir = os.fspath(model_dir)
    if os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
        return model_dir
    newest = next_version(model_dir) - 1
    if newest < 1:
        raise ValueError(f"{model_dir!r} holds no SavedModel and no version directory with one")
    return os.path.join(model_dir, str(newest))


def predict(model_dir, paths):
    """The ``serving_default`` outputs for the image files ``paths``, as plain Python lists."""
    loaded = tf.saved_model.load(version_dir(model_dir))
    data = []
    for path in paths:
        with open(path, "rb") as stream:
            data.append(stream.read())
    try:
        outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(data))
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(signature_error(error.message)) from None
    return {key: _plain(value.numpy()) for key, value in outputs.items()}


def class_names(model_dir):
    """The exported model's class names, by class id: its ``assets/labels.txt``, else its model card's
    ``class_names``; None when it has neither."""
    version = version_dir(model_dir)
    labels = os.path.join(version, "assets", LABELS)
    if os.path.isfile(labels):
        with open(labels, encoding="utf-8") as stream:
            return [line.rstrip("\n") for line in stream]
    card = os.path.join(version, "assets.extra", MODEL_CARD)
    if os.path.isfile(card):
        with open(card, encoding="utf-8") as stream:
            return json.load(stream).get("class_names")
    return None


def signature_error(message):
    """The signature's own words out of TensorFlow's error text (its assertion), else the first line."""
    found = re.search(r"assertion failed: \[(.*?)\]", message) or re.search(r"(empty batch[^\n]*)", message)
    return found.group(1) if found else message.strip().splitlines()[0]


def _plain(value):
    """Numpy outputs -> JSON-ready lists (strings decoded)."""
    if isinstance(value, bytes):
        return value.decode()
    if value.dtype == object:
        return [_plain(item) for item in value]
    return value.tolist()


def _name(names, class_id):
    class_id = int(class_id)
    return names[class_id] if names and 0 <= class_id < len(names) and names[class_id] else f"class {class_id}"


def summary(outputs, paths, names=None):
    """One readable line per image: a classifier's top classes, a segmenter's share of the image per
    class, a detector's objects; classes by their ``names`` (:func:`class_names`), else by id."""
    lines = []
    for index, path in enumerate(paths):
        name = os.path.basename(path)
        if "labels" in outputs:
            best = ", ".join(f"{label} {score:.3f}" for label, score in
                             zip(outputs["labels"][index], outputs["scores"][index]))
            lines.append(f"{name}: {best}")
        elif "segmentation_mask" in outputs:
            height, width = outputs["image_size"][index]
            mask = np.asarray(outputs["segmentation_mask"][index])[:height, :width]
            ids, counts = np.unique(mask, return_counts=True)
            shares = ", ".join(f"{_name(names, i)}: {100 * c / mask.size:.1f}%" for i, c in zip(ids, counts))
            lines.append(f"{name}: {width}x{height} mask; {shares}")
        else:
            count = outputs["num_detections"][index]
            labels = (outputs["detection_labels"][index] if "detection_labels" in outputs else
                      [_name(names, i) for i in outputs["detection_classes"][index]])
            areas = ([f" ({int(np.count_nonzero(mask))} px)" for mask in outputs["detection_masks"][index][:count]]
                     if "detection_masks" in outputs else [""] * count)
            found = ", ".join(f"{label} {score:.2f}{area}" for label, score, area in
                              zip(labels[:count], outputs["detection_scores"][index][:count], areas))
            lines.append(f"{name}: {count} detections{': ' + found if found else ''}")
    return lines
