"""kcnn's training loop (`kcnn pretrain`) against Keras' own `model.fit`: images/s on one pipeline, interleaved.

Both train the same task model (``kcnn.tasks.ImageClassifier``, the same initial weights) on
the same input pipeline (JPEG files through ``kcnn.data.load_classification`` with the
recipe's augmentation, normalised as ``kcnn pretrain`` does), at the same batch size and
precision, with the family's paper recipe: its SGD optimizer and learning-rate schedule and
its weight decay (kcnn: L2 in the loss; ``fit``: Keras' optimizer ``weight_decay``), no XLA.
kcnn runs its engine's compiled step with its host reads every ``LOG_EVERY`` steps and a
final read that waits for the last step; ``fit`` (``verbose=0``) returns when done. Each
round times both, taking turns at going first; ``--warmup`` steps of each (tracing) come
before and are not timed. A config is ``model:input_size:batch[:steps]``.

    python benchmarks/loop_vs_fit.py [--configs resnet20:32:128:30,resnet50:224:32:4] [--rounds 5] [--warmup 2]
                                     [--precision fp32] [--json OUT]
"""

import argparse
import json
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn import data, registry  # noqa: E402
from kcnn.tasks import ImageClassifier  # noqa: E402
from kcnn.train import hardware, recipes  # noqa: E402
from kcnn.train.bench import BenchData, jpeg_folder  # noqa: E402
from kcnn.train.engine import LOG_EVERY, Loop, RunSettings  # noqa: E402
from kcnn.train.task_data import default_preprocessing  # noqa: E402
from kcnn.train.validation import read  # noqa: E402

CONFIGS = "resnet20:32:128:30,resnet50:224:32:4"  # the two: CIFAR ResNet-20 and ResNet-50 on the CPU


def _kcnn(loop, step, batches, count):
    """(images, seconds, mean loss) of ``count`` engine steps, as ``Loop.run`` drives them."""
    before = read(loop.train_sums)
    started = time.perf_counter()
    for index, batch in enumerate(loop.distribute(batches.take(count)), 1):
        step(batch)
        if index % LOG_EVERY == 0:  # pretrain's periodic host reads: non-finite check, progress bar
            loop.check_finite({"epoch": 0, "step": index})
            read(loop.train_sums)
    sums = read(loop.train_sums)  # waits for the last step
    seconds = time.perf_counter() - started
    images = sums["samples"] - before["samples"]
    return images, seconds, (sums["loss"] - before["loss"]) / images


def _fit(model, batches, count, batch_size):
    started = time.perf_counter()
    history = model.fit(batches, steps_per_epoch=count, epochs=1, verbose=0, shuffle=False)
    return count * batch_size, time.perf_counter() - started, history.history["loss"][-1]


def run_config(name, size, batch_size, steps, *, rounds, warmup, precision):
    spec = registry.get(name)
    shape = (size, size, spec.input_shape[2])
    keras.mixed_precision.set_global_policy(hardware.resolve_precision(precision))
    recipe = recipes.get(recipes.DEFAULT_RECIPE[spec.family], batch_size=batch_size).in_steps(steps)
    strategy = hardware.resolve_strategy("auto")  # what `kcnn pretrain` resolves on this machine
    settings = RunSettings(task="classification", backbone=spec.name, dataset="bench", out="", recipe=recipe,
                           input_shape=shape)
    keras.utils.set_random_seed(0)
    loop = Loop(settings, recipe, strategy, BenchData(spec.classes), steps_per_epoch=steps)
    step = loop.train_step(0)
    keras.utils.set_random_seed(0)
    model = ImageClassifier(spec.name, spec.classes, input_shape=shape)
    optimizer = recipe.build_optimizer(recipe.lr_schedule(steps))
    optimizer.weight_decay = recipe.weight_decay or None  # Keras' own weight decay for kcnn's L2 term
    model.compile(optimizer=optimizer, jit_compile=False)  # the task model carries its loss and metrics
    normalise = default_preprocessing(shape[2])
    runs = {"kcnn": lambda count: _kcnn(loop, step, batches, count),
            "fit": lambda count: _fit(model, batches, count, batch_size)}
    results = []
    with tempfile.TemporaryDirectory() as directory:
        jpeg_folder(directory, batch_size * 4, size * 8 // 7)
        batches, _ = data.load_classification(directory, "train", image_size=shape[:2], channels=shape[2],
                                              batch_size=batch_size, training=True, augment=recipe.augment)
        batches = batches.map(lambda images, labels: (normalise(images), labels),
                              num_parallel_calls=tf.data.AUTOTUNE).repeat()
        for run in runs.values():
            run(warmup)
        loop.check_finite({"epoch": 0, "step": 0})  # traces the periodic check too
        for index in range(rounds):
            row = {"round": index + 1, "first": "kcnn" if index % 2 == 0 else "fit"}
            for key in sorted(runs, key=lambda key: key != row["first"]):
                images, seconds, loss = runs[key](steps)
                row.update({f"{key}_img_s": images / seconds, f"{key}_seconds": seconds, f"{key}_loss": loss})
            row["ratio"] = row["kcnn_img_s"] / row["fit_img_s"]
            results.append(row)
    return {"model": spec.name, "input_size": size, "batch_size": batch_size, "steps": steps, "rounds": results,
            "precision": keras.mixed_precision.global_policy().name, "recipe": recipe.name,
            **{f"median_{key}": statistics.median(row[key] for row in results)
               for key in ("kcnn_img_s", "fit_img_s", "ratio")}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=CONFIGS, help="model:input_size:batch[:steps], comma-separated")
    parser.add_argument("--model", help="one model instead of --configs (its own input size, batch 32)")
    parser.add_argument("--input-size", type=int, help="overrides every config's")
    parser.add_argument("--batch-size", type=int, help="overrides every config's")
    parser.add_argument("--steps", type=int, help="timed steps per round, overrides every config's (default 10)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each before the rounds")
    parser.add_argument("--precision", default="fp32", choices=hardware.PRECISIONS)
    parser.add_argument("--json", help="write the rounds and medians to this file")
    args = parser.parse_args()

    configs = []
    for text in [args.model] if args.model else args.configs.split(","):
        name, size, batch, steps = (text.split(":") + [None] * 3)[:4]
        configs.append((name, args.input_size or int(size or registry.get(name).input_shape[0]),
                        args.batch_size or int(batch or 32), args.steps or int(steps or 10)))
    results = []
    for name, size, batch_size, steps in configs:
        result = run_config(name, size, batch_size, steps, rounds=args.rounds, warmup=args.warmup,
                            precision=args.precision)
        results.append(result)
        print(f"{result['model']} {size}x{size}, batch {batch_size}, {result['precision']}, recipe {result['recipe']}: "
              f"{args.rounds} rounds of {steps} steps (after {args.warmup} warm-up steps each)")
        print("round  first  kcnn img/s  fit img/s  kcnn/fit  kcnn s  fit s  kcnn loss  fit loss")
        for row in result["rounds"]:
            print(f"{row['round']:5d}  {row['first']:5s}  {row['kcnn_img_s']:10.1f}  {row['fit_img_s']:9.1f}  "
                  f"{row['ratio']:8.3f}  {row['kcnn_seconds']:6.1f}  {row['fit_seconds']:5.1f}  "
                  f"{row['kcnn_loss']:9.3f}  {row['fit_loss']:8.3f}")
        print(f"median        {result['median_kcnn_img_s']:10.1f}  {result['median_fit_img_s']:9.1f}  "
              f"{result['median_ratio']:8.3f}\n")
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"tensorflow": tf.__version__, "keras": keras.__version__, "configs": results}, stream,
                      indent=1)


if __name__ == "__main__":
    main()
