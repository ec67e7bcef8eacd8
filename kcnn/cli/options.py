"""Parsing shared by the commands: shapes, ``key=value`` options, errors as one line; the choices the
options offer.

The CLI's modules import nothing that imports TensorFlow at their top (``kcnn --help``, every
``--help`` and usage errors stay quick): commands import what they run inside their bodies. The tables
below are the few the options need while parsing; they live in modules that import TensorFlow, so
they are repeated here (tests/test_cli_help.py checks that they are the same).
"""

import contextlib
import json

import click

PRECISIONS = ("auto", "fp32", "mixed_float16", "mixed_bfloat16")  # kcnn.train.hardware.PRECISIONS
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")  # kcnn.train.hardware.STRATEGIES
BENCH_MODES = ("train", "infer")  # kcnn.train.bench.MODES
BENCH_SOURCES = ("memory", "jpeg")  # kcnn.train.bench.SOURCES
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # kcnn.train.degradation.CIFAR_DEPTHS
TUNERS = ("hyperband", "bayesian", "random")  # kcnn.tune.search.TUNERS
TASKS = {"segmentation": ("fcn", "deeplabv3", "unet"), "detection": ("retinanet", "faster_rcnn"),
         "instance_segmentation": ("mask_rcnn",)}  # kcnn.tasks.TASKS
WEIGHT_SOURCES = ("torchvision", "timm", "keras")  # kcnn.weights.importer.SOURCES
PREPROCESSING_PRESETS = ("torch", "caffe", "inception", "none")  # kcnn.weights.PRESETS' names


def _positive_ints(value, counts, expected):
    """``value`` "a,b,..." as a tuple of positive ints, ``counts`` of them, else a click error naming ``expected``."""
    try:
        numbers = tuple(int(part) for part in value.split(","))
    except ValueError:
        numbers = ()
    if len(numbers) not in counts or min(numbers) < 1:
        raise click.BadParameter(f"expected {expected}, got {value!r}")
    return numbers


def parse_shape(ctx, param, value):
    """'224,224,3' -> (224, 224, 3)."""
    if value is None:
        return None
    return _positive_ints(value, (3,), "H,W,C as three positive integers (e.g. 224,224,3)")


def parse_size(ctx, param, value):
    """'128' or '96,128' -> (H, W)."""
    if value is None:
        return None
    size = _positive_ints(value, (1, 2), "SIZE or H,W as positive integers (e.g. 128 or 96,128)")
    return size * 2 if len(size) == 1 else size


def parse_options(ctx, param, values):
    """('variant=torchvision', 'towers=2', 'widths=[64,128,256,256,128]') -> a dict (JSON values, else text)."""
    options = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
        if isinstance(options[key], list):
            options[key] = tuple(options[key])
    return options


@contextlib.contextmanager
def user_errors():
    """Turns the library's ValueErrors (bad user input) into one ``Error: ...`` line and exit code 1."""
    try:
        yield
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def echo_table(header, rows):
    """Prints rows of strings as left-aligned columns under ``header``."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for cells in (header, *rows):
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip())


def training_options(command):
    """The options of every training command: length, recipe overrides, precision, distribution,
    checkpoints, resuming and data locations (passed on as keywords of the same names)."""
    options = [
        click.option("--set", "overrides", multiple=True, callback=parse_options,
                     help="Override one recipe field, KEY=VALUE (repeatable), e.g. --set lr=0.05."),
        click.option("--epochs", type=click.IntRange(min=1),
                     help="Train this many epochs (replaces the recipe's length; its schedule is scaled to it)."),
        click.option("--steps", type=click.IntRange(min=1),
                     help="Train this many steps (replaces the recipe's length; its schedule is scaled to it)."),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True),
        click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True),
        click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True,
                     help="Steps between checkpoints (also one at every epoch's end)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its newest checkpoint."),
        click.option("--force-resume", is_flag=True,
                     help="With --resume: continue although precision or strategy resolve otherwise here."),
        click.option("--data-dir", help="TFDS data directory."),
        click.option("--manual-dir", help="TFDS manual directory (imagenet2012: the ILSVRC2012 tars)."),
        click.option("--download", is_flag=True, help="Let TFDS download the dataset (needs internet)."),
        click.option("--xla", is_flag=True, help="Compile the steps with XLA (slower on CPU; for GPUs)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command
