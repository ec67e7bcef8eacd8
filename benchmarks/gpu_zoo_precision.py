"""GPU check of the zoo's mixed precision: kcnn ResNet-50 against keras.applications ResNet50, same run.

Train and inference images/s in float32, mixed_float16 and mixed_bfloat16 on one GPU, with
whichever Keras backend is installed (the zoo needs only Keras: run it with KERAS_BACKEND=jax
where TensorFlow has no GPU build). Also checks what the mixed policies must keep: float32
logits, finite losses under float16 (Keras wraps the optimizer in loss scaling).

    KERAS_BACKEND=jax python benchmarks/gpu_zoo_precision.py --batch-size 128 --out results.json
    KERAS_BACKEND=jax python benchmarks/gpu_zoo_precision.py --models alexnet,zfnet,vgg16_bn,inception_v1 \
        --precisions float32,mixed_float16 --out families.json
"""

import argparse
import json
import os
import time

import keras
import numpy as np

import kcnn

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def _models(names):
    """kcnn's models by name; keras.applications ResNet50 beside kcnn's resnet50 as the reference."""
    models = {}
    for name in names:
        models[f"kcnn {name}"] = lambda name=name: kcnn.build(name, classifier_activation=None)
        if name == "resnet50":
            models["keras.applications ResNet50"] = lambda: keras.applications.ResNet50(
                weights=None, classifier_activation=None)
    return models


def _rate(step, batch_size, warmup, steps):
    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        result = step()
    np.asarray(result)  # wait for the device
    return batch_size * steps / (time.perf_counter() - started)


def measure(name, make, precision, *, batch_size, warmup, steps):
    """One row: train and inference img/s, logits dtype, whether every loss stayed finite."""
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(0)
    model = make()
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch_size, *model.input_shape[1:])).astype("float32")
    labels = rng.integers(0, model.output_shape[-1], size=(batch_size,))
    losses = []

    def train():
        loss = model.train_on_batch(images, labels)
        losses.append(float(loss))
        return loss

    row = {"model": name, "precision": precision, "batch_size": batch_size,
           "train_images_per_second": _rate(train, batch_size, warmup, steps),
           "infer_images_per_second": _rate(lambda: model.predict_on_batch(images), batch_size, warmup, steps),
           "logits_dtype": str(model.predict_on_batch(images[:2]).dtype),
           "losses_finite": bool(np.isfinite(losses).all()), "first_loss": losses[0], "last_loss": losses[-1],
           "optimizer": type(model.optimizer).__name__}
    keras.backend.clear_session()
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default="gpu_zoo_precision.json")
    parser.add_argument("--models", default="resnet50", help="Comma-separated zoo names (resnet50 adds the "
                                                             "keras.applications reference).")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    arguments = parser.parse_args()
    rows = []
    for precision in arguments.precisions.split(","):
        for name, make in _models(arguments.models.split(",")).items():
            rows.append(measure(name, make, precision, batch_size=arguments.batch_size, warmup=arguments.warmup,
                                steps=arguments.steps))
            print(json.dumps(rows[-1]), flush=True)
            with open(arguments.out, "w", encoding="utf-8") as stream:
                json.dump({"backend": keras.backend.backend(), "keras": keras.__version__,
                           "device": os.environ.get("DEVICE_NAME", ""), "rows": rows}, stream, indent=2)


if __name__ == "__main__":
    main()
