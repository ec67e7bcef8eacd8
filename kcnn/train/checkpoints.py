"""Resumable checkpoints: one directory per checkpoint, written aside and renamed into place.

A checkpoint holds the model's weights, the optimizer's variables (momentum, step
counter, loss scale) and the loop's state (step, epoch, batch within the epoch, the
history so far). A directory without ``state.json`` never appears under its final
name: it is written as ``.partial-*`` and renamed, so a run killed mid-write leaves
the previous checkpoint as the latest.
"""

import json
import os
import shutil

import numpy as np

STATE, MODEL, OPTIMIZER = "state.json", "model.weights.h5", "optimizer.npz"
PREFIX = "step-"


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


def check_run_dir(out, config, resume):
    """The newest checkpoint of the run in ``out`` (``None`` for a new run), after checking that
    ``resume`` is asked for when one exists and that ``config`` equals the run's ``config.json``."""
    existing = latest(os.path.join(out, "checkpoints"))
    if existing and not resume:
        raise ValueError(f"{out!r} already holds a run (checkpoint {os.path.basename(existing)}); "
                         "pass --resume to continue it or choose another --out")
    config_path = os.path.join(out, "config.json")
    if existing and os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as stream:
            saved = json.load(stream)
        if saved != config:
            changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
            raise ValueError(f"--resume with other settings than the run's ({', '.join(changed)}); "
                             "resume with the same ones or start a new --out")
    return existing


def remove_partials(directory):
    """Deletes what a killed writer left half-written (never a complete checkpoint)."""
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(".partial-"):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def save(directory, model, optimizer, state, *, keep=3):
    """Writes a checkpoint for ``state["step"]`` (once per step) and keeps the newest ``keep``."""
    final = os.path.join(directory, f"{PREFIX}{state['step']:09d}")
    if os.path.exists(final):
        return final
    partial = os.path.join(directory, f".partial-{PREFIX}{state['step']:09d}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        model.save_weights(os.path.join(partial, MODEL))
        np.savez(os.path.join(partial, OPTIMIZER), *[np.asarray(v.numpy()) for v in optimizer.variables])
        with open(os.path.join(partial, STATE), "w", encoding="utf-8") as stream:
            json.dump(state, stream)
        os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    for name in _complete(directory)[:-keep]:
        shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
    return final


def restore(path, model, optimizer):
    """Loads a checkpoint into ``model`` and a built ``optimizer``; returns the loop state."""
    model.load_weights(os.path.join(path, MODEL))
    with np.load(os.path.join(path, OPTIMIZER)) as arrays:
        values = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
    if len(values) != len(optimizer.variables):
        raise ValueError(f"checkpoint {path!r} has {len(values)} optimizer variables, the optimizer "
                         f"{len(optimizer.variables)}: was it written for another model or recipe?")
    for variable, value in zip(optimizer.variables, values):
        variable.assign(value)
    with open(os.path.join(path, STATE), encoding="utf-8") as stream:
        return json.load(stream)
