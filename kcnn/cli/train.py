"""``kcnn pretrain`` and ``kcnn recipes``: training a zoo model the way its paper did."""

import json

import click
import yaml

from kcnn.cli.options import (BENCH_MODES, BENCH_SOURCES, CIFAR_DEPTHS, PRECISIONS, echo_table, parse_options,
                              parse_shape, training_options, user_errors)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def recipes(as_json):
    """The training recipes: each paper's optimizer, batch, schedule, length and augmentation.

    \b
    Example:
      kcnn recipes
    """
    from kcnn.train.recipes import RECIPES

    if as_json:
        click.echo(json.dumps({name: recipe.__dict__ for name, recipe in RECIPES.items()}, indent=2))
        return
    header = ("recipe", "paper", "optimizer", "lr", "batch", "length", "schedule", "weight decay", "augment")
    echo_table(header, [
        (r.name, r.paper, r.optimizer, f"{r.lr:g}", str(r.batch_size), f"{r.length} {r.unit}", _schedule(r),
         f"{r.weight_decay:g}", r.augment)
        for r in RECIPES.values()])


def _schedule(recipe):
    if recipe.schedule != "step":
        return recipe.schedule
    if not recipe.boundaries:
        return "constant"
    more = "..." if len(recipe.boundaries) > 4 else ""
    return f"x{recipe.factor:g} at {','.join(map(str, recipe.boundaries[:4]))}{more}"


def _recipe_file(ctx, param, value):
    if value is None:
        return {}
    with open(value, encoding="utf-8") as stream:
        loaded = yaml.safe_load(stream) or {}
    if not isinstance(loaded, dict):
        raise click.BadParameter(f"{value} must hold a mapping of recipe fields")
    return loaded


@click.command()
@click.option("--model", required=True, help="A zoo model (kcnn models).")
@click.option("--dataset", required=True,
              help="digits, a TFDS name (imagenet2012, cifar10, ...) or a folder PATH/{train,val}/<label>/*.jpg.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The run directory.")
@click.option("--recipe", help="A recipe name (kcnn recipes); default: the model's paper recipe.")
@click.option("--recipe-file", callback=_recipe_file, type=click.Path(exists=True, dir_okay=False),
              help="YAML mapping of recipe fields to override (lr, batch_size, boundaries, ...).")
@click.option("--input-shape", callback=parse_shape, help="H,W,C (default: the model's own).")
@click.option("--option", "-o", "model_options", multiple=True, callback=parse_options,
              help="A model variant option KEY=VALUE (repeatable).")
@training_options
def pretrain_command(model, dataset, out, recipe, recipe_file, overrides, **run):
    """Trains MODEL on DATASET with its paper's recipe into the run directory OUT (resumable).

    \b
    Example (LeNet-5 on scikit-learn's digits, offline; a few steps):
      kcnn pretrain --model lenet5 --dataset digits --steps 2 --out runs/lenet5
    """
    from kcnn.train import TrainingStopped, pretrain

    with user_errors():
        try:
            rows = pretrain(model, dataset, out, recipe=recipe, overrides={**recipe_file, **overrides}, **run)
        except TrainingStopped as error:
            raise ValueError(str(error)) from None
    if rows:
        last = rows[-1]
        click.echo(f"done: {last['step']} steps, val top-1 {last['val_top1']:.2f}%, "
                   f"val top-5 {last['val_top5']:.2f}%; run in {out}")


@click.command("evaluate")
@click.argument("source", type=click.Path(exists=True))
@click.option("--dataset", required=True, help="As for pretrain or finetune (digits, shapes, a TFDS name, a folder).")
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True)
@click.option("--ten-crop", is_flag=True, help="Classifiers: AlexNet's 10-crop test (corners + center, mirrored).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--data-dir", help="TFDS data directory.")
@click.option("--manual-dir", help="TFDS manual directory.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def evaluate_command(source, dataset, split, ten_crop, batch_size, data_dir, manual_dir, as_json):
    """Metrics of SOURCE (a pretrain or finetune run directory, or a kcnn weights file) on a dataset split:
    top-1/top-5 for classifiers, mean IoU for segmenters, COCO mAP for detectors.

    \b
    Example (the run of `kcnn pretrain --help`'s example):
      kcnn evaluate runs/lenet5 --dataset digits
    """
    from kcnn.train.dense_evaluate import evaluate_task, task_weights
    from kcnn.train.evaluate import evaluate

    with user_errors():
        if task_weights(source):
            if ten_crop:
                raise ValueError("--ten-crop is for classifiers; SOURCE holds a fine-tuned task model")
            result = evaluate_task(source, dataset, split=split, batch_size=batch_size, data_dir=data_dir,
                                   manual_dir=manual_dir)
        else:
            result = evaluate(source, dataset, split=split, ten_crop=ten_crop, batch_size=batch_size,
                              data_dir=data_dir, manual_dir=manual_dir)
    if as_json:
        click.echo(json.dumps(result))
    elif "task" in result:
        click.echo(f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items() if isinstance(v, float)))
    else:
        click.echo(f"{split}: top-1 {result['top1']:.2f}%, top-5 {result['top5']:.2f}%, loss {result['loss']:.4f} "
                   f"({result['count']} images{', 10 crops' if ten_crop else ''})")


def _depths(ctx, param, value):
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected depths like 20,56 (among {CIFAR_DEPTHS}), got {value!r}") from None


@click.command("degradation")
@click.option("--dataset", default="cifar10", show_default=True,
              help="cifar10 (TFDS, prepared) or, offline, digits.")
@click.option("--depths", default="20,56", show_default=True, callback=_depths,
              help="CIFAR depths 6n+2, comma-separated (plain and residual net of each).")
@click.option("--epochs", type=click.IntRange(min=1), help="Train this many epochs (default: the recipe's 64k steps).")
@click.option("--steps", type=click.IntRange(min=1), help="Train this many steps.")
@click.option("--set", "overrides", multiple=True, callback=parse_options, help="Override a recipe field, KEY=VALUE.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory of the runs and figure.")
def degradation_command(dataset, depths, epochs, steps, overrides, precision, seed, out):
    """The lecture's plain-vs-residual experiment: trains plain<d> and resnet<d>, draws Figure 6 (resumable).

    \b
    Example (offline, a few steps; the lecture's is --dataset cifar10 --depths 20,32,44,56):
      kcnn degradation --dataset digits --depths 20 --steps 2 --out runs/degradation
    """
    from kcnn.train.degradation import degradation

    with user_errors():
        histories = degradation(dataset, out, depths=depths, epochs=epochs, steps=steps, overrides=overrides,
                                precision=precision, seed=seed)
    for name, rows in histories.items():
        click.echo(f"{name:10} train error {100 - rows[-1]['top1']:6.2f}%  val error {100 - rows[-1]['val_top1']:6.2f}%")
    click.echo(f"figure: {out}/degradation.png")


@click.command("bench")
@click.option("--model", default="resnet50", show_default=True)
@click.option("--mode", "modes", multiple=True, type=click.Choice(BENCH_MODES), default=["train"], show_default=True)
@click.option("--precision", "precisions", multiple=True, type=click.Choice(PRECISIONS), default=["fp32"],
              show_default=True, help="Repeat to compare, e.g. --precision fp32 --precision mixed_bfloat16.")
@click.option("--source", "sources", multiple=True, type=click.Choice(BENCH_SOURCES), default=["memory", "jpeg"],
              show_default=True, help="memory: one batch repeated; jpeg: JPEG files through the input pipeline.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--warmup", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--input-shape", callback=parse_shape, help="H,W,C (default: the model's own).")
def bench_command(model, modes, precisions, sources, batch_size, steps, warmup, input_shape):
    """Images per second of training or inference steps, with input-pipeline and precision ratios.

    \b
    Example:
      kcnn bench --model lenet5 --source memory --steps 2 --warmup 1
    """
    from kcnn.train.bench import bench

    rows = []
    with user_errors():
        for mode in modes:
            for precision in precisions:
                for source in sources:
                    rows.append(bench(model, mode=mode, precision=precision, source=source,
                                      batch_size=batch_size, steps=steps, warmup=warmup, input_shape=input_shape))
    first = {}
    for row in rows:
        first.setdefault((row["mode"], row["source"]), row)
        memory = next((r for r in rows if r["source"] == "memory" and r["mode"] == row["mode"]
                       and r["precision"] == row["precision"]), row)
        row["vs_memory"] = row["images_per_second"] / memory["images_per_second"]
        row["vs_first_precision"] = row["images_per_second"] / first[(row["mode"], row["source"])]["images_per_second"]
    echo_table(("model", "mode", "precision", "source", "img/s", "vs memory", "vs first precision"), [
        (r["model"], r["mode"], r["precision"], r["source"], f"{r['images_per_second']:.1f}",
         f"{r['vs_memory']:.3f}", f"{r['vs_first_precision']:.3f}") for r in rows])
