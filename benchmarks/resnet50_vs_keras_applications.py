"""kcnn resnet50 against keras.applications.ResNet50: inference and train-step images/s, interleaved.

Both are the same v1 network (kcnn folds keras.applications' conv biases into BN, so it
has no bias adds before BatchNorm). Rounds alternate between the two models so that
machine noise hits both alike; the ratio kcnn / keras.applications is what to read.

    python benchmarks/resnet50_vs_keras_applications.py [--batch 32] [--rounds 5] [--steps 3]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kcnn  # noqa: E402


def _train_step(model):
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, model(images, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return step


def _rate(fn, batch, steps):
    fn()  # warm-up (tracing)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return batch * steps / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    images = tf.constant(np.random.default_rng(0).normal(size=(args.batch, 224, 224, 3)).astype("float32"))
    labels = tf.constant(np.arange(args.batch) % 1000)
    models = {
        "kcnn": kcnn.build("resnet50", classifier_activation=None),
        "keras.applications": keras.applications.ResNet50(weights=None, classifier_activation=None),
    }
    infer = {k: tf.function(lambda x, m=m: m(x, training=False)) for k, m in models.items()}
    train = {k: _train_step(m) for k, m in models.items()}
    rates = {(k, mode): [] for k in models for mode in ("infer", "train")}
    for _ in range(args.rounds):
        for key in models:
            rates[key, "infer"].append(_rate(lambda: infer[key](images).numpy(), args.batch, args.steps))
            rates[key, "train"].append(_rate(lambda: train[key](images, labels).numpy(), args.batch, args.steps))
    print(f"batch {args.batch}, {args.rounds} interleaved rounds of {args.steps} steps; median img/s")
    for mode in ("infer", "train"):
        ours = statistics.median(rates["kcnn", mode])
        theirs = statistics.median(rates["keras.applications", mode])
        print(f"{mode:5s}  kcnn {ours:7.1f}  keras.applications {theirs:7.1f}  ratio {ours / theirs:.3f}")


if __name__ == "__main__":
    main()
