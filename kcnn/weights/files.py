"""kcnn weights files: a Keras ``.weights.h5`` with the conversion's metadata inside.

The metadata is JSON in the file's root attribute ``kcnn``: the architecture and the
options of its variant, whether the classifier is included and for how many classes,
the input size, the preprocessing the weights expect, the class names, the source
(library, file name, sha256) and the evaluation transform the weights are validated,
evaluated and served with (``eval_transform``, see ``eval_transform_of``).
``kcnn.build(name, weights=path)`` reads it to build exactly that variant. Files are
written beside their destination and renamed into place, so a reader never sees half a file.
"""

import json
import os

import h5py

from kcnn.atomic import atomic_path
from kcnn.data.augment import check_eval_transform

METADATA_ATTRIBUTE = "kcnn"
FORMAT_VERSION = 1
SUFFIX = ".weights.h5"


def check_destination(path):
    """A weights destination must end with ``.weights.h5`` (Keras' own suffix for weights files)."""
    path = os.fspath(path)
    if not path.endswith(SUFFIX):
        raise ValueError(f"the output file must end with {SUFFIX}, got {path!r}")
    return path


def read_metadata(path):
    """The metadata dict of a kcnn weights file; ``None`` for a Keras weights file without any."""
    try:
        with h5py.File(path, "r") as stream:
            text = stream.attrs.get(METADATA_ATTRIBUTE)
    except OSError as error:
        raise ValueError(f"{os.fspath(path)!r} is not a readable HDF5 weights file ({error})") from None
    if text is None:
        return None
    metadata = json.loads(text)
    if metadata.get("format") != FORMAT_VERSION:
        raise ValueError(f"{os.fspath(path)!r} has kcnn weights format {metadata.get('format')!r}; "
                         f"this kcnn reads format {FORMAT_VERSION}")
    return metadata


def eval_transform_of(metadata):
    """The evaluation transform ("center_crop" or "resize", ``kcnn.data.augment``) of a metadata dict.

    Segmenters and detectors resize. Files written before the ``eval_transform`` key existed:
    "center_crop" for imported weights (ImageNet-style evaluation), "resize" for kcnn runs (the
    transform their training validation used, whatever the recipe).
    """
    if metadata.get("task", "classification") != "classification":
        return "resize"
    if "eval_transform" in metadata:
        return check_eval_transform(metadata["eval_transform"])
    return "resize" if metadata["source"]["library"] == "kcnn" else "center_crop"


def save(model, path, metadata):
    """Writes ``model``'s weights and ``metadata`` to ``path`` atomically."""
    with atomic_path(check_destination(path)) as temporary:
        model.save_weights(temporary)
        with h5py.File(temporary, "a") as stream:
            stream.attrs[METADATA_ATTRIBUTE] = json.dumps({"format": FORMAT_VERSION, **metadata})
    return os.fspath(path)


def check_shapes(name, expected, given):
    """Raises naming the layer when ``given`` arrays do not have ``expected`` variables' shapes."""
    if len(expected) != len(given):
        raise ValueError(f"layer {name!r}: source has {len(given)} tensors, target expects {len(expected)}")
    for want, got in zip(expected, given):
        if tuple(want.shape) != tuple(got.shape):
            raise ValueError(f"layer {name!r}: source tensor has shape {tuple(got.shape)}, "
                             f"target expects {tuple(want.shape)}")


def transfer_by_name(source, target):
    """Copies every weighted layer of ``target`` from the layer of the same name in ``source``.

    Layers only ``source`` has (a classifier that ``target`` leaves off) are ignored;
    a layer only ``target`` has, or one of another shape, raises naming it.
    """
    source_layers = {layer.name: layer for layer in source.layers if layer.weights}
    target_layers = [layer for layer in target.layers if layer.weights]
    missing = [layer.name for layer in target_layers if layer.name not in source_layers]
    if missing:
        raise ValueError(f"the weights have no tensors for layer(s) {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
    arrays = {layer.name: source_layers[layer.name].get_weights() for layer in target_layers}
    for layer in target_layers:
        check_shapes(layer.name, layer.weights, arrays[layer.name])
    for layer in target_layers:
        layer.set_weights(arrays[layer.name])
    return target
