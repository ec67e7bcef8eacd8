"""``kcnn weights``: the official ImageNet files, importing them, reading a converted file."""

import json

import click

from kcnn.cli.options import (PREPROCESSING_PRESETS, WEIGHT_SOURCES, echo_table, parse_options, parse_size,
                              user_errors)

FETCH_SOURCES = ("imagenet", *WEIGHT_SOURCES)  # kcnn.weights.fetch.KEYWORDS


@click.group()
def weights():
    """ImageNet weights from torchvision, timm and keras.applications, converted to kcnn models.

    \b
    Example:
      kcnn weights list --from torchvision
    """


def _percent(value):
    return "" if value is None else f"{value:g}"


@weights.command("list")
@click.option("--from", "library", type=click.Choice(WEIGHT_SOURCES), help="Only this source.")
@click.option("--model", help="Only this kcnn model.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_weights(library, model, as_json):
    """The official files kcnn imports: URL, published hash, the accuracy their source reports.

    \b
    Example:
      kcnn weights list --model resnet18
    """
    from kcnn.weights.catalog import entries

    rows = entries(library, model)
    if as_json:
        click.echo(json.dumps([{**row.__dict__, "file_name": row.file_name} for row in rows], indent=2))
        return
    header = ("source", "model", "variant", "top-1", "top-5", "hash", "url")
    echo_table(header, [
        (row.library, row.model, ",".join(f"{k}={v}" for k, v in row.options.items()) or "-",
         _percent(row.top1), _percent(row.top5),
         f"{row.hash_kind}:{row.hash}" if row.hash else "-", row.url)
        for row in rows])


def _holds_detector(source):
    """Whether ``source`` is a torchvision detector's state dict, from its tensor names alone."""
    from kcnn.tasks.torchvision_import import holds_detector
    from kcnn.weights.state_dict import state_dict_keys

    return holds_detector(set(state_dict_keys(source)))


def _read_class_names(path):
    if path is None:
        return None
    with open(path, encoding="utf-8") as stream:
        return [line.strip() for line in stream if line.strip()]


@weights.command("import")
@click.option("--from", "library", type=click.Choice(WEIGHT_SOURCES), required=True,
              help="The library the file comes from.")
@click.option("--model", required=True, help="The kcnn model (e.g. resnet50, googlenet, vgg16_bn).")
@click.option("--source", type=click.Path(exists=True, dir_okay=False), required=True,
              help="The downloaded file: .pth (torchvision), .safetensors (timm), .h5 (keras.applications).")
@click.option("--out", required=True, help="The kcnn weights file to write (*.weights.h5).")
@click.option("--preprocessing", type=click.Choice(PREPROCESSING_PRESETS),
              help="Override the source's usual input normalisation.")
@click.option("--class-names", type=click.Path(exists=True, dir_okay=False),
              help="A text file, one class name per line (default: ImageNet's for 1000 classes, COCO's for "
                   "torchvision's detectors).")
@click.option("--image-size", callback=parse_size,
              help="SIZE or H,W: a detector's input size (default 800; classifiers are imported at 224).")
def import_command(library, model, source, out, preprocessing, class_names, image_size):
    """Converts an official checkpoint into a kcnn weights file that `kcnn.build(MODEL, weights=OUT)` loads.

    A torchvision Faster R-CNN or Mask R-CNN file (fasterrcnn_resnet50_fpn, maskrcnn_resnet50_fpn; MODEL its
    backbone) becomes a detection or instance segmentation model at --image-size, which `kcnn.load`, `kcnn export`
    and `kcnn evaluate` take.

    \b
    Example:
      kcnn weights import --from timm --model resnet18 --source model.safetensors --out resnet18.weights.h5
    """
    from kcnn.weights.importer import import_weights

    with user_errors():
        if library == "torchvision" and _holds_detector(source):
            from kcnn.tasks.torchvision_import import import_detector

            metadata = import_detector(model, source, out, image_size=image_size,
                                       class_names=_read_class_names(class_names))
            click.echo(f"wrote {out}: {metadata['head']} on {metadata['architecture']}, {metadata['classes']} "
                       f"classes, input {metadata['input_shape'][0]}x{metadata['input_shape'][1]}")
            return
        metadata = import_weights(library, model, source, out, preprocessing=preprocessing,
                                  class_names=_read_class_names(class_names))
    options = ",".join(f"{k}={v}" for k, v in metadata["options"].items()) or "default variant"
    top = f"{metadata['classes']} classes" if metadata["include_top"] else "no classifier"
    click.echo(f"wrote {out}: {metadata['architecture']} ({options}), {top}, "
               f"preprocessing {metadata['preprocessing']['name']}")
    if metadata["skipped_tensors"]:
        click.echo(f"not imported (untrained in the source): {len(metadata['skipped_tensors'])} tensors, "
                   f"e.g. {metadata['skipped_tensors'][0]}")


@weights.command("fetch")
@click.argument("model")
@click.option("--from", "source", type=click.Choice(FETCH_SOURCES), default="imagenet",
              show_default=True, help="imagenet: the best file published for the variant; else that source's file.")
@click.option("--option", "-o", "options", multiple=True, callback=parse_options,
              help="A variant option KEY=VALUE (repeatable), e.g. version=v1 (keras.applications' ResNets).")
def fetch_command(model, source, options):
    """Downloads, checks and converts MODEL's published ImageNet weights once; prints the cached kcnn weights file.

    Progress goes to stderr; the path, alone on stdout, is what `kcnn.build(MODEL, weights=...)`
    and `kcnn finetune --weights` take (or pass `imagenet` to them directly).

    \b
    Example:
      kcnn weights fetch resnet50 --from keras -o version=v1
    """
    import contextlib
    import sys

    from kcnn.weights.fetch import fetch

    with user_errors(), contextlib.redirect_stdout(sys.stderr):  # get_file's progress bar
        path = fetch(model, source, **options)
    click.echo(path)


@weights.command("info")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the whole metadata as JSON.")
def info(file, as_json):
    """What a kcnn weights file holds: architecture, variant, source, preprocessing.

    \b
    Example:
      kcnn weights info runs/lenet5/model.weights.h5
    """
    from kcnn.weights import read_metadata

    with user_errors():
        metadata = read_metadata(file)
        if metadata is None:
            raise ValueError(f"{file!r} is a Keras weights file without kcnn metadata")
    if as_json:
        click.echo(json.dumps(metadata, indent=2))
        return
    source = metadata["source"]
    for key, value in (
        ("architecture", metadata["architecture"]),
        ("options", json.dumps(metadata["options"])),
        ("classifier", f"{metadata['classes']} classes" if metadata["include_top"] else "none"),
        ("input", "x".join(map(str, metadata["input_shape"]))),
        ("preprocessing", json.dumps(metadata["preprocessing"])),
        ("source", f"{source['library']} {source['file']} (sha256 {source['sha256']})"),
        ("hash check", source.get("hash_check", "not recorded") or "none (not an official file)"),
        ("reported top-1", _percent(source.get("top1")) or "unknown"),
    ):
        click.echo(f"{key:15} {value}")
