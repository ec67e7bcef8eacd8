"""``bench``: images per second of the training loop (or inference), from memory or from JPEG files.

Both sources run the training engine's own compiled steps, so the ratio end-to-end / in-memory
says whether the input pipeline keeps up (it should be 0.9 or more), and running
the same model at two precisions in one call gives their ratio on this machine.
"""

import os
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from kcnn import data, registry
from kcnn.session import caller_state_kept
from kcnn.train import hardware, recipes
from kcnn.train.engine import Loop, RunSettings
from kcnn.train.task_data import TaskData
from kcnn.train.validation import read
from kcnn.weights import default_preprocessing

MODES = ("train", "infer")
SOURCES = ("memory", "jpeg")
JPEG_CLASSES = 4


def jpeg_folder(directory, count, size, seed=0):
    """A folder dataset of ``count`` real JPEG files (photos' worth of texture: smoothed noise)."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        folder = os.path.join(directory, "train", f"class{index % JPEG_CLASSES}")
        os.makedirs(folder, exist_ok=True)
        pixels = rng.integers(0, 256, (size // 8, size // 8, 3)).astype("float32")
        image = tf.image.resize(pixels, (size, size), method="bicubic")
        with open(os.path.join(folder, f"{index:05d}.jpg"), "wb") as stream:
            stream.write(tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)).numpy())
    return directory


def _dataset(source, shape, batch_size, directory):
    if source == "memory":
        images = tf.random.stateless_uniform((batch_size, *shape), seed=(0, 0), maxval=255.0)
        labels = tf.zeros((batch_size,), tf.int32)
        return tf.data.Dataset.from_tensors((images, labels)).repeat()
    dataset, _ = data.load_classification(directory, "train", image_size=shape[:2], channels=shape[2],
                                          batch_size=batch_size, training=True, augment="resnet_imagenet")
    return dataset.repeat()


def bench(model, *, mode="train", precision="fp32", source="memory", batch_size=32, steps=10, warmup=3,
          input_shape=None):
    """``{"images_per_second", ...}`` of ``steps`` timed batches after ``warmup`` untimed ones."""
    if mode not in MODES or source not in SOURCES:
        raise ValueError(f"mode must be one of {MODES} and source one of {SOURCES}, got {mode!r}, {source!r}")
    spec = registry.get(model)
    shape = tuple(input_shape or spec.input_shape)
    policy = hardware.resolve_precision(precision)
    with caller_state_kept():
        keras.mixed_precision.set_global_policy(policy)
        recipe = recipes.get("resnet_imagenet", batch_size=batch_size).in_steps(1)
        settings = RunSettings(task="classification", backbone=spec.name, dataset="bench", out="", recipe=recipe,
                               input_shape=shape)
        strategy = tf.distribute.get_strategy()
        loop = Loop(settings, recipe, strategy, BenchData(spec.classes), steps_per_epoch=1)
        step = loop.train_step(0) if mode == "train" else loop.validate.step
        sums = loop.train_sums if mode == "train" else loop.validate.sums
        normalise = default_preprocessing(shape[2])
        with tempfile.TemporaryDirectory() as directory:
            if source == "jpeg":
                jpeg_folder(directory, batch_size * 4, max(shape[:2]) * 8 // 7)
            batches = _dataset(source, shape, batch_size, directory).map(
                lambda images, labels: (normalise(images), labels)).prefetch(tf.data.AUTOTUNE)

            def run(count):
                for batch in strategy.experimental_distribute_dataset(batches.take(count)):
                    step(batch)
                return read(sums)["samples"]  # waits for the last step

            before = run(warmup)
            started = time.perf_counter()
            images = run(steps) - before
            seconds = time.perf_counter() - started
    return {"model": spec.name, "mode": mode, "precision": policy, "source": source, "batch_size": batch_size,
            "steps": steps, "images_per_second": images / seconds}


class BenchData(TaskData):
    """No dataset: ``bench`` feeds the steps itself."""

    def __init__(self, classes):
        self.info = data.DatasetInfo("bench", classes, tuple(map(str, range(classes))), {})
