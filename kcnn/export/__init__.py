"""SavedModels that TF Serving loads as they are, in the layout it watches.

``export(source, "models/NAME")`` writes ``models/NAME/<version>/`` holding
``saved_model.pb``, ``variables/``, ``assets/labels.txt`` and ``assets.extra/``
(``tf_serving_warmup_requests`` and ``model_card.json``). The version is written as
``models/NAME/.partial-<version>-<pid>`` and renamed into place: TF Serving, polling
``models/NAME``, never sees half a version (it ignores names that are not integers).
``models_config("models")`` writes ``models/models.config`` for serving every model there.
"""

import json
import os
import shutil

import keras
import tensorflow as tf

from kcnn import registry
from kcnn.analysis import profile
from kcnn.export import warmup
from kcnn.export.signatures import ServingModule
from kcnn.models import build
from kcnn.session import caller_state_kept
from kcnn.tasks import TASKS, load_task_model
from kcnn.weights import Preprocessing, eval_transform_of, read_metadata

MODEL_CARD = "model_card.json"
LABELS = "labels.txt"


def weights_path(source):
    """(path, metadata) of a run directory's model.weights.h5 or a kcnn weights file; anything else is refused."""
    source = os.fspath(source)
    path = os.path.join(source, "model.weights.h5") if os.path.isdir(source) else source
    if not os.path.isfile(path):
        raise ValueError(f"{source!r} is neither a kcnn run directory (with model.weights.h5) nor a weights file")
    try:
        metadata = read_metadata(path)
    except ValueError:
        metadata = None
    if metadata is None:
        raise ValueError(f"{path!r} holds no kcnn metadata: export a kcnn run or a `kcnn weights import` file")
    return path, metadata


def load_for_serving(source):
    """(model, task, metadata) of a run directory or weights file; ``model.preprocessing`` is set."""
    path, metadata = weights_path(source)
    task = metadata.get("task", "classification")
    if task in TASKS:
        return load_task_model(path), task, metadata
    model = build(metadata["architecture"], weights=path, classifier_activation=None)
    return model, "classification", metadata


def next_version(model_dir):
    """1 + the largest integer version under ``model_dir`` (1 for none)."""
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()] if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1


def _run_metrics(source):
    for name in ("metrics.json", "history.json"):
        path = os.path.join(os.fspath(source), name)
        if os.path.isdir(os.fspath(source)) and os.path.isfile(path):
            with open(path, encoding="utf-8") as stream:
                loaded = json.load(stream)
            return loaded[-1] if isinstance(loaded, list) and loaded else loaded
    return None


def model_card(model, task, metadata, source, signatures):
    """Architecture, size, evaluation transform, preprocessing, the run's metrics, the signatures' inputs and
    outputs."""
    spec = registry.get(metadata["architecture"])
    counts = profile(model)
    return {
        "task": task, "architecture": spec.name, "head": metadata.get("head"), "options": metadata["options"],
        "paper": spec.paper, "classes": metadata["classes"], "class_names": metadata["class_names"],
        "input_shape": metadata["input_shape"], "eval_transform": eval_transform_of(metadata),
        "preprocessing": metadata["preprocessing"],
        "params": counts.params, "macs": counts.macs,
        "metrics": _run_metrics(source), "source": metadata["source"],
        "signatures": {name: {"inputs": {spec_.name: {"dtype": spec_.dtype.name, "shape": spec_.shape.as_list()}
                                         for spec_ in function.input_signature},
                              "outputs": {key: {"dtype": value.dtype.name, "shape": value.shape.as_list()}
                                          for key, value in function.get_concrete_function().structured_outputs.items()}}
                       for name, function in signatures.items()},
    }


@caller_state_kept()
def export(source, out, *, version=None, force=False, top_k=5):
    """Exports ``source`` (a pretrain/finetune run directory or a kcnn weights file) to ``out/<version>``.

    The SavedModel transforms images as the weights were validated (``kcnn.weights.eval_transform_of``).

    ``version`` defaults to the next integer; an existing version is replaced only with
    ``force=True``. Returns the version directory.

    >>> import os, tempfile, numpy as np, kcnn
    >>> root = tempfile.mkdtemp()
    >>> rows = kcnn.pretrain("lenet5", "digits", os.path.join(root, "lenet"), steps=1, verbose=0)
    >>> os.path.basename(kcnn.export(os.path.join(root, "lenet"), os.path.join(root, "models", "lenet")))
    '1'
    >>> served = kcnn.load(os.path.join(root, "models", "lenet"))  # the served graph: uint8 RGB in
    >>> served.predict(np.zeros((1, 40, 30, 3), "uint8"), verbose=0)["probabilities"].shape
    (1, 10)
    """
    out = os.fspath(out)
    model, task, metadata = load_for_serving(source)
    version = next_version(out) if version is None else int(version)
    if version < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    final = os.path.join(out, str(version))
    if os.path.exists(final) and not force:
        raise ValueError(f"{final!r} already exists; pass --force to replace it or choose another --version")
    module = ServingModule(model, task=task, preprocessing=Preprocessing.from_dict(metadata["preprocessing"]),
                           class_names=metadata["class_names"], eval_transform=eval_transform_of(metadata),
                           top_k=top_k)
    signatures = module.signatures()
    os.makedirs(out, exist_ok=True)
    partial = os.path.join(out, f".partial-{version}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        tf.saved_model.save(module, partial, signatures=signatures)
        _write_text(os.path.join(partial, "assets", LABELS), "".join(f"{name}\n" for name in metadata["class_names"]))
        extra = os.path.join(partial, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        height, width = metadata["input_shape"][:2]
        samples = [warmup.sample_jpeg(height, width), warmup.sample_jpeg(height + 7, width + 13)]
        warmup.write(os.path.join(extra, warmup.WARMUP_FILE), warmup.prediction_logs(os.path.basename(out), samples))
        card = model_card(model, task, metadata, source, signatures)
        _write_text(os.path.join(extra, MODEL_CARD), json.dumps(card, indent=2))
        _replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    keras.backend.clear_session()  # the model's graph is not needed again; the caller's session comes back
    return final


def _write_text(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as stream:
        stream.write(text)


def _replace(partial, final):
    """Renames ``partial`` to ``final``; an existing ``final`` is moved aside first and removed after."""
    if not os.path.exists(final):
        os.rename(partial, final)
        return
    aside = f"{final}.replaced-{os.getpid()}"
    os.rename(final, aside)
    os.rename(partial, final)
    shutil.rmtree(aside, ignore_errors=True)


def models_config(base):
    """Writes ``base/models.config`` (TF Serving's ``--model_config_file``) naming every model under
    ``base`` that has at least one version; returns its path."""
    base = os.fspath(base)
    names = sorted(name for name in os.listdir(base) if os.path.isdir(os.path.join(base, name))
                   and next_version(os.path.join(base, name)) > 1) if os.path.isdir(base) else []
    if not names:
        raise ValueError(f"no exported model under {base!r} (expected {base}/NAME/<version>/saved_model.pb)")
    entries = "".join(f'  config {{\n    name: "{name}"\n    base_path: "/models/{name}"\n'
                      f'    model_platform: "tensorflow"\n  }}\n' for name in names)
    path = os.path.join(base, "models.config")
    partial = f"{path}.partial-{os.getpid()}"
    _write_text(partial, f"model_config_list {{\n{entries}}}\n")
    os.replace(partial, path)
    return path
