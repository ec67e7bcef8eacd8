"""``kcnn export`` and ``kcnn predict``: SavedModels for TF Serving, and querying one."""

import json

import click

from kcnn.cli.options import user_errors


@click.command("export")
@click.argument("source", type=click.Path(exists=True), required=False)
@click.option("--out", type=click.Path(file_okay=False),
              help="MODEL_BASE/NAME: the model's directory that TF Serving watches (versions go inside).")
@click.option("--version", type=click.IntRange(min=1), help="The version number (default: the next integer).")
@click.option("--force", is_flag=True, help="Replace an existing version.")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True,
              help="Classifiers: how many classes, labels and scores each answer holds.")
@click.option("--models-config", "models_config_base", type=click.Path(file_okay=False),
              help="Write MODEL_BASE/models.config naming every exported model under MODEL_BASE.")
def export_command(source, out, version, force, top_k, models_config_base):
    """Exports SOURCE (a pretrain/finetune run directory or a kcnn weights file) as a SavedModel version
    under --out, with preprocessing in the graph, labels and warmup requests; or writes --models-config.

    \b
    Example (the run of `kcnn pretrain --help`'s example, as version 1 of models/lenet5):
      kcnn export runs/lenet5 --out models/lenet5
    """
    from kcnn.export import export, models_config

    with user_errors():
        if source is None and models_config_base is None:
            raise ValueError("give SOURCE and --out to export, or --models-config MODEL_BASE")
        if source is not None:
            if out is None:
                raise ValueError("--out MODEL_BASE/NAME is required to export SOURCE")
            click.echo(f"exported {export(source, out, version=version, force=force, top_k=top_k)}")
        if models_config_base is not None:
            click.echo(f"wrote {models_config(models_config_base)}")


@click.command("predict")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the signature's outputs as JSON.")
def predict_command(model_dir, images, as_json):
    """Runs the exported MODEL_DIR (a version directory, or NAME for its newest version) on image files:
    a classifier's top classes, a segmenter's share of the image per class, a detector's objects, by name.

    \b
    Example (the export of `kcnn export --help`'s example, on a PNG or JPEG file):
      kcnn predict models/lenet5 digit.png
    """
    from kcnn.export.predict import class_names, predict, summary

    with user_errors():
        outputs = predict(model_dir, images)
    if as_json:
        click.echo(json.dumps(outputs))
        return
    for line in summary(outputs, images, class_names(model_dir)):
        click.echo(line)
