"""``load(path)``: whatever kcnn wrote, back as a Keras model.

- a run folder (``kcnn pretrain`` / ``kcnn finetune``), or a kcnn weights file
  (``model.weights.h5``, ``kcnn weights import``): the network with its weights; a
  classifier ends in a softmax, as ``kcnn.build`` gives it; fine-tuned models are the task
  models (``ImageSegmenter``, ``ObjectDetector``: ``fit``, ``predict``, ``.keras`` files);
  ``preprocessing`` (the normalisation the weights expect) is set; a classifier takes it into
  its graph with ``include_preprocessing=True``, as ``kcnn.build`` does (the task models take
  normalised images: their export takes raw ones);
- a ``.keras`` file: ``keras.saving.load_model`` with kcnn's layers and task models known;
- an export (``kcnn export``: a version folder holding ``saved_model.pb``, or the model folder
  TF Serving watches, whose newest version is taken): the served graph as a Keras model for
  inference, RGB ``uint8`` images ``[N, H, W, 3]`` in (signature ``serving_images``), its
  outputs dict out (``keras.layers.TFSMLayer``).

>>> load("/no/such/run")
Traceback (most recent call last):
ValueError: '/no/such/run' does not exist; kcnn.load takes a run folder, a kcnn weights file, a .keras file or an export
"""

import os

import keras

from kcnn.export import MODEL_CARD, next_version, weights_path
from kcnn.models import build
from kcnn.tasks import TASKS, load_task_model

ACCEPTED = "a run folder, a kcnn weights file, a .keras file or an export"
SERVING_SIGNATURE = "serving_images"


def _saved_model_folder(path):
    """The version folder of an export at ``path`` (``None`` when ``path`` is none)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    newest = next_version(path) - 1
    folder = os.path.join(path, str(newest))
    return folder if newest and os.path.isfile(os.path.join(folder, "saved_model.pb")) else None


def _served(folder):
    card = os.path.join(folder, "assets.extra", MODEL_CARD)
    if not os.path.isfile(card):
        raise ValueError(f"{folder!r} is a SavedModel but not a kcnn export (no assets.extra/{MODEL_CARD})")
    images = keras.Input((None, None, 3), dtype="uint8", name="images")
    served = keras.layers.TFSMLayer(folder, call_endpoint=SERVING_SIGNATURE, name="served")
    return keras.Model(images, served(images), name=os.path.basename(os.path.dirname(os.path.abspath(folder))))


def _from_weights(source, include_preprocessing):
    path, metadata = weights_path(source)  # a run folder's model.weights.h5, or the file; with kcnn metadata
    if metadata.get("task", "classification") in TASKS:
        if include_preprocessing:
            raise ValueError(f"{path!r} holds a fine-tuned {metadata['task']} model, which takes normalised "
                             "images (model.preprocessing); include_preprocessing=True is for classifiers")
        return load_task_model(path)
    return build(metadata["architecture"], weights=path, include_preprocessing=include_preprocessing)


def load(path, *, include_preprocessing=False):
    """The Keras model held at ``path`` (see the module's docstring for what it may be).

    >>> import os, tempfile, kcnn
    >>> path = os.path.join(tempfile.mkdtemp(), "lenet.keras")
    >>> kcnn.build("lenet5", include_preprocessing=True).save(path)
    >>> kcnn.load(path).get_layer("preprocessing").preset  # kcnn's layers are known to Keras
    'gray'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path!r} does not exist; kcnn.load takes {ACCEPTED}")
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "model.weights.h5")):
        folder = _saved_model_folder(path)
        if folder is None:
            raise ValueError(f"{path!r} holds neither model.weights.h5 nor a SavedModel; kcnn.load takes {ACCEPTED}")
        return _served(folder)
    if path.endswith(".keras"):  # kcnn's layers and task models are registered (imported above)
        return keras.saving.load_model(path)
    return _from_weights(path, include_preprocessing)
