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
@click.option("--draw", type=click.Path(file_okay=False),
              help="Also save each image with its detections (boxes, instance masks) as DRAW/<image>.png.")
def predict_command(model_dir, images, as_json, draw):
    """Runs the exported MODEL_DIR (a version directory, or NAME for its newest version) on image files:
    a classifier's top classes, a segmenter's share of the image per class, a detector's objects (and each
    instance's mask area), by name.

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
    names = class_names(model_dir)
    for line in summary(outputs, images, names):
        click.echo(line)
    if draw:
        with user_errors():
            for path in _draw(outputs, images, names, draw):
                click.echo(f"drew {path}")


def _draw(outputs, images, names, folder):
    """Each image with its detections, as FOLDER/<image name>.png (detectors' outputs only)."""
    import os

    import numpy as np

    from kcnn.data.sources import decode_image
    from kcnn.train.figures import prediction

    if "num_detections" not in outputs:
        raise ValueError("--draw draws detections; this model is not a detector")
    os.makedirs(folder, exist_ok=True)
    for index, path in enumerate(images):
        with open(path, "rb") as stream:
            image = decode_image(stream.read()).numpy()
        count = outputs["num_detections"][index]
        height, width = image.shape[:2]
        masks = (np.asarray(outputs["detection_masks"][index][:count])[:, :height, :width]
                 if "detection_masks" in outputs else None)
        labels = list(names or []) or [f"class {i}" for i in range(int(max(outputs["detection_classes"][index],
                                                                              default=0)) + 1)]
        out = os.path.join(folder, os.path.splitext(os.path.basename(path))[0] + ".png")
        yield prediction(image, np.asarray(outputs["detection_boxes"][index][:count]),
                         np.asarray(outputs["detection_scores"][index][:count]),
                         np.asarray(outputs["detection_classes"][index][:count]).astype(int), labels, out, masks=masks)
