"""Resumable checkpoints: one directory per checkpoint, written aside and renamed into place.

A checkpoint holds the model's weights (``model.weights.h5``, loadable by any Keras
model of the same network), the rest of the training state as arrays (``state.npz``:
every optimizer's variables — momentum, step counter, loss scale — and the random
seed states of dropout and other random layers) and the loop's state (``state.json``:
step, epoch, batch within the epoch, the epoch's running sums, the history so far).
A directory without ``state.json`` never appears under its final name: it is written as
``.partial-*`` and renamed, so a run killed mid-write leaves the previous checkpoint as
the latest.
"""

import json
import os
import shutil

import numpy as np

STATE, MODEL, ARRAYS = "state.json", "model.weights.h5", "state.npz"
PREFIX = "step-"
HARDWARE = ("precision", "strategy", "replicas")  # resolved on each machine: a resume must resolve them alike


def _complete(directory):
    if not os.path.isdir(directory):
        return []
    names = [name for name in os.listdir(directory)
             if name.startswith(PREFIX) and os.path.isfile(os.path.join(directory, name, STATE))]
    return sorted(names, key=lambda name: int(name[len(PREFIX):]))


def latest(directory):
    """The newest complete checkpoint under ``directory``, or ``None``."""
    names = _complete(directory)
    return os.path.join(directory, names[-1]) if names else None


def check_run_dir(out, config, resume, *, force=False):
    """The newest checkpoint of the run in ``out`` (``None`` for a new run), after checking that
    ``resume`` is asked for when one exists and that ``config`` equals the run's ``config.json``.

    ``config``'s precision, strategy and replicas are resolved values: a resume on a machine that
    resolves them otherwise is refused unless ``force``.
    """
    existing = latest(os.path.join(out, "checkpoints"))
    if existing and not resume:
        raise ValueError(f"{out!r} already holds a run (checkpoint {os.path.basename(existing)}); "
                         "pass --resume to continue it or choose another --out")
    config_path = os.path.join(out, "config.json")
    if existing and os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as stream:
            saved = json.load(stream)
        changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
        settings = [key for key in changed if key not in HARDWARE]
        if settings:
            raise ValueError(f"--resume with other settings than the run's ({', '.join(settings)}); "
                             "resume with the same ones or start a new --out")
        if changed and not force:
            what = ", ".join(f"{key} {saved.get(key)} -> {config.get(key)}" for key in changed)
            raise ValueError(f"--resume here would train with other hardware settings than the run's ({what}); "
                             "pass --precision/--strategy to match the run's, or --force-resume to continue "
                             "with the new ones")
    return existing


def remove_partials(directory):
    """Deletes what a killed writer left half-written (never a complete checkpoint); a checkpoint moved
    aside to be replaced, and not replaced, goes back under its name."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name.startswith(".replaced-"):
            original = os.path.join(directory, name[len(".replaced-"):].rsplit("-", 1)[0])
            if not os.path.exists(original):
                os.replace(path, original)
                continue
        if name.startswith((".partial-", ".replaced-")):
            shutil.rmtree(path, ignore_errors=True)


def save(directory, model, arrays, state, *, keep=3):
    """Writes the checkpoint of ``state["step"]`` (replacing one of the same step) and keeps the newest ``keep``.

    ``arrays``: the training state besides the model's weights, as a list of variables.
    """
    final = os.path.join(directory, f"{PREFIX}{state['step']:09d}")
    partial = os.path.join(directory, f".partial-{PREFIX}{state['step']:09d}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        model.save_weights(os.path.join(partial, MODEL))
        np.savez(os.path.join(partial, ARRAYS), *[np.asarray(v.numpy()) for v in arrays])
        with open(os.path.join(partial, STATE), "w", encoding="utf-8") as stream:
            json.dump(state, stream)
        if os.path.exists(final):  # an epoch's end on a periodic checkpoint's step: the newer state wins
            replaced = os.path.join(directory, f".replaced-{os.path.basename(final)}-{os.getpid()}")
            os.replace(final, replaced)
            os.replace(partial, final)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    for name in _complete(directory)[:-keep]:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return final


def restore(path, model, arrays):
    """Loads a checkpoint into ``model`` and the variables ``arrays`` (as saved); returns the loop state."""
    model.load_weights(os.path.join(path, MODEL))
    with np.load(os.path.join(path, ARRAYS)) as stored:
        values = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    if len(values) != len(arrays) or any(tuple(v.shape) != tuple(a.shape) for v, a in zip(values, arrays)):
        raise ValueError(f"checkpoint {path!r} holds {len(values)} training-state arrays that do not fit this "
                         f"run's {len(arrays)}: was it written for another model or recipe?")
    for variable, value in zip(arrays, values):
        variable.assign(value)
    with open(os.path.join(path, STATE), encoding="utf-8") as stream:
        return json.load(stream)
