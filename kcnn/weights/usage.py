"""keras.applications' two helpers for raw images and class scores, driven by the weights' metadata.

``preprocess_input(x, model_or_name)`` normalises RGB [0, 255] images as a model's weights
expect; ``decode_predictions(probabilities, top=5)`` names the best classes.

>>> import numpy as np
>>> print(preprocess_input(np.full((1, 1, 1, 3), 255.0), "vgg16").round(3))  # torchvision's file: mean/std
[[[[2.249 2.429 2.64 ]]]]
>>> decode_predictions(np.eye(1000)[[1, 948]], top=1)
[[(1, 'goldfish', 1.0)], [(948, 'Granny Smith', 1.0)]]
>>> decode_predictions(np.array([[0.2, 0.7, 0.1]]), top=2, class_names=["cat", "dog", "emu"])
[[(1, 'dog', 0.7), (0, 'cat', 0.2)]]
"""

import os

import numpy as np
from keras import ops

from kcnn.layers.normalize import Normalize
from kcnn.weights.catalog import imagenet_class_names
from kcnn.weights.files import read_metadata
from kcnn.weights.preprocessing import Preprocessing, preset

IMAGENET_CLASSES = 1000


def _normalisation(model_or_name):
    """The ``Preprocessing`` of a model, a zoo name (its ImageNet file's) or a kcnn weights file; ``None``
    for a model that normalises inside its graph."""
    if isinstance(model_or_name, (str, os.PathLike)):
        if os.path.isfile(model_or_name):
            metadata = read_metadata(model_or_name)
            if metadata is None:
                raise ValueError(f"{os.fspath(model_or_name)!r} is not a kcnn weights file (no metadata)")
            return Preprocessing.from_dict(metadata["preprocessing"])
        from kcnn.weights.fetch import choose  # the zoo's names: loads the registry
        return preset(choose(model_or_name).preprocessing)
    if any(isinstance(layer, Normalize) for layer in getattr(model_or_name, "layers", ())):
        return None
    preprocessing = getattr(model_or_name, "preprocessing", None)
    if not isinstance(preprocessing, Preprocessing):
        raise ValueError(f"model {getattr(model_or_name, 'name', model_or_name)!r} carries no input normalisation "
                         "(a Python attribute that .keras files and clones lose): build it with weights and "
                         "include_preprocessing=True, or pass the zoo name or its weights file instead")
    return preprocessing


def preprocess_input(x, model_or_name):
    """RGB images in [0, 255] (NHWC), normalised as ``model_or_name``'s weights expect.

    ``model_or_name``: a model from ``kcnn.build(..., weights=...)`` or ``kcnn.load``; a zoo
    name (the normalisation of the file ``weights="imagenet"`` loads for it); or a kcnn weights
    file. A model built with ``include_preprocessing=True`` normalises inside: ``x`` is returned
    as float32, as keras.applications does for such models. NumPy in, NumPy out.
    """
    normalisation = _normalisation(model_or_name)
    result = ops.cast(x, "float32") if normalisation is None else normalisation(x)
    return ops.convert_to_numpy(result) if isinstance(x, (np.ndarray, list, tuple)) else result


def _names(class_names, classes):
    if class_names is None:
        if classes != IMAGENET_CLASSES:
            raise ValueError(f"scores for {classes} classes need class_names (ImageNet's are used for "
                             f"{IMAGENET_CLASSES} classes); a model's: class_names=model")
        return imagenet_class_names()
    if not isinstance(class_names, (list, tuple)):  # a model: its weights' or its fine-tuning's names
        metadata = getattr(class_names, "weights_metadata", None) or getattr(class_names, "task_metadata", None)
        if not metadata or not metadata.get("class_names"):
            raise ValueError(f"model {getattr(class_names, 'name', class_names)!r} carries no class names "
                             "(weights_metadata or task_metadata); pass a list")
        class_names = metadata["class_names"]
    if len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names for scores of {classes} classes")
    return list(class_names)


def decode_predictions(probabilities, top=5, class_names=None):
    """For each row of ``probabilities`` (N x classes), its ``top`` classes as ``(index, name, score)``, best first.

    ``class_names``: a list, a model (the names its weights or fine-tuning recorded), or ``None``
    (ImageNet's for 1,000 classes). Ties keep the lower index first.
    """
    scores = np.asarray(ops.convert_to_numpy(probabilities), dtype="float64")
    if scores.ndim != 2:
        raise ValueError(f"probabilities must be (samples, classes), got shape {scores.shape}")
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    names = _names(class_names, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    return [[(int(i), names[i], float(row[i])) for i in order] for row, order in zip(scores, best)]
