"""``kcnn pretrain`` and ``kcnn recipes``: training a zoo model the way its paper did."""

import json

import click
import yaml

from kcnn.cli.options import echo_table, parse_options, parse_shape, user_errors
from kcnn.train import RECIPES, TrainingStopped, pretrain
from kcnn.train.hardware import PRECISIONS, STRATEGIES


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def recipes(as_json):
    """The training recipes: each paper's optimizer, batch, schedule, length and augmentation."""
    if as_json:
        click.echo(json.dumps({name: recipe.__dict__ for name, recipe in RECIPES.items()}, indent=2))
        return
    header = ("recipe", "paper", "lr", "batch", "length", "lr x factor at", "weight decay", "augment")
    echo_table(header, [
        (r.name, r.paper, f"{r.lr:g}", str(r.batch_size), f"{r.length} {r.unit}",
         f"x{r.factor:g} at {','.join(map(str, r.boundaries[:4]))}{'...' if len(r.boundaries) > 4 else ''}"
         if r.boundaries else "-", f"{r.weight_decay:g}", r.augment)
        for r in RECIPES.values()])


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
@click.option("--set", "overrides", multiple=True, callback=parse_options,
              help="Override one recipe field, KEY=VALUE (repeatable), e.g. --set lr=0.05.")
@click.option("--epochs", type=click.IntRange(min=1), help="Train this many epochs (replaces the recipe's length).")
@click.option("--steps", type=click.IntRange(min=1), help="Train this many steps (replaces the recipe's length).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True)
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True)
@click.option("--input-shape", callback=parse_shape, help="H,W,C (default: the model's own).")
@click.option("--option", "-o", "model_options", multiple=True, callback=parse_options,
              help="A model variant option KEY=VALUE (repeatable).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True,
              help="Steps between checkpoints (also one at every epoch's end).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its newest checkpoint.")
@click.option("--data-dir", help="TFDS data directory.")
@click.option("--manual-dir", help="TFDS manual directory (imagenet2012: the ILSVRC2012 tars).")
@click.option("--download", is_flag=True, help="Let TFDS download the dataset (needs internet).")
def pretrain_command(model, dataset, out, recipe, recipe_file, overrides, epochs, steps, precision, strategy,
                     input_shape, model_options, checkpoint_every, seed, resume, data_dir, manual_dir, download):
    """Trains MODEL on DATASET with its paper's recipe into the run directory OUT (resumable)."""
    with user_errors():
        try:
            rows = pretrain(model, dataset, out, recipe=recipe, overrides={**recipe_file, **overrides},
                            epochs=epochs, steps=steps, resume=resume, precision=precision, strategy=strategy,
                            input_shape=input_shape, model_options=model_options,
                            checkpoint_every=checkpoint_every, seed=seed, data_dir=data_dir,
                            manual_dir=manual_dir, download=download)
        except TrainingStopped as error:
            raise ValueError(str(error)) from None
    if rows:
        last = rows[-1]
        click.echo(f"done: {last['step']} steps, val top-1 {last['val_top1']:.2f}%, "
                   f"val top-5 {last['val_top5']:.2f}%; run in {out}")
