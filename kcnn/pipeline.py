"""``run``: a YAML pipeline of stages (pretrain -> finetune -> export, tune -> export, ...) in one directory.

A pipeline file::

    name: shapes_segmentation
    stages:
      - name: train                  # the stage's folder under the run directory
        kind: finetune               # pretrain | finetune | tune | degradation | evaluate | export
        with: {backbone: resnet18, task: segmentation, head: unet, dataset: shapes, epochs: 8}
      - name: serve
        kind: export
        with: {source: $train, model_name: shapes_segmenter}   # $stage: that stage's output

The whole file is checked before anything runs: unknown keys, wrong types and references to
stages that do not come earlier are refused with the key and its line. Each stage writes into
``RUN/<name>/`` and keeps ``RUN/<name>/manifest.json`` (atomically rewritten): ``status``
``running`` and ``started`` before the stage is called (a killed stage keeps saying
``running``), then ``completed`` (with ``finished``, ``metrics`` and ``outputs``) or ``failed``
(with ``error``). The manifest also holds the stage's ``config`` (its ``with:`` as written),
``inputs`` (the ``$stage`` references resolved), ``attempt`` (an id per execution) and
``upstream`` (the attempt of each stage it refers to with ``$stage``). A failing stage leaves
the earlier stages' outputs as they are and raises ``StageFailed`` naming it.

``resume=True`` (``kcnn run --resume``) goes through the stages in order and, for each one:

- ``completed`` with the same ``with:`` and inputs: skipped, its outputs reused.
- ``completed`` but its ``with:`` changed: refused (a one-line ``ValueError`` naming the stage
  and the changed keys) before any stage runs; ``rerun_changed=True`` (``--rerun-changed``)
  reruns it from scratch instead.
- ``running`` (killed) or ``failed``: ``pretrain``/``finetune`` continue from the stage's newest
  checkpoint (``resume=True``; the manifest says ``resumed_from``) and start from scratch when
  it has none; ``tune`` continues its search (keras-tuner's state in the stage folder);
  ``degradation`` continues each of its runs that has a checkpoint (its own rule); ``evaluate``
  and ``export`` run again. An interrupted stage with a checkpoint or search state whose
  ``with:`` changed is refused like a completed one (its state was made with other settings);
  ``rerun_changed=True`` restarts it from scratch.
- Dependencies: a stage whose ``$stage`` inputs ran again (in this call, or in an earlier one
  that was interrupted before reaching it: ``upstream`` no longer matches) is run again from
  scratch, so that a rerun stage's new outputs reach every stage that uses them, directly or
  through others. Only ``$stage`` references count: a stage that reads another stage's folder
  by path is not known to depend on it.

"From scratch" moves the stage folder aside under a hidden name (one rename, so no
half-deleted folder ever carries the old manifest) and deletes it; a hidden leftover of a
killed deletion is removed by the next call. Export stages are the exception: their folder
keeps the models already exported (a TF Serving server may be serving them) and the rerun
writes the next version, or replaces the version the stage pins with ``version:`` (as
``force: true`` would; an explicit ``force: false`` is kept, and export then refuses).
``rerun_changed=True`` implies ``resume=True``. Two ``run`` calls on the same directory at once
are not supported.
"""

import datetime
import json
import os
import shutil
import uuid

import yaml

from kcnn.atomic import write_json

TOP_KEYS = {"name": str, "description": str, "stages": list}
STAGE_KEYS = {"name": str, "kind": str, "with": dict}
NUMBER = (int, float)
# Per kind: the arguments a stage may set and their types (list also accepts a YAML sequence).
KINDS = {
    "pretrain": {"model": str, "dataset": str, "recipe": str, "overrides": dict, "epochs": int, "steps": int,
                 "precision": str, "strategy": str, "input_shape": list, "model_options": dict,
                 "checkpoint_every": int, "seed": int, "data_dir": str, "manual_dir": str, "download": bool,
                 "xla": bool},
    "finetune": {"backbone": str, "task": str, "dataset": str, "head": str, "recipe": str, "overrides": dict,
                 "epochs": int, "steps": int, "weights": str, "image_size": list, "freeze_backbone_epochs": int,
                 "freeze_bn": bool, "backbone_lr_factor": NUMBER, "backbone_options": dict, "head_options": dict,
                 "precision": str, "strategy": str, "checkpoint_every": int, "seed": int, "data_dir": str,
                 "manual_dir": str, "download": bool},
    "tune": {"space": str, "dataset": str, "tuner": str, "max_trials": int, "max_epochs": int, "max_params": int,
             "max_macs": int, "input_shape": list, "precision": str, "seed": int},
    "degradation": {"dataset": str, "depths": list, "epochs": int, "steps": int, "overrides": dict,
                    "precision": str, "seed": int},
    "evaluate": {"source": str, "dataset": str, "split": str, "batch_size": int, "data_dir": str, "manual_dir": str},
    "export": {"source": str, "model_name": str, "version": int, "force": bool, "top_k": int},
}
REQUIRED = {"pretrain": ("model", "dataset"), "finetune": ("backbone", "task", "dataset"),
            "tune": ("space", "dataset"), "degradation": ("dataset",), "evaluate": ("source", "dataset"),
            "export": ("source", "model_name")}
MANIFEST = "manifest.json"


class StageFailed(RuntimeError):
    """A stage raised; the earlier stages' outputs are kept."""


def _compose(text, path):
    """The YAML as Python data, plus ``{key path: line}`` for error messages."""
    lines = {}

    def convert(node, where):
        lines[where] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            return {key.value: convert(value, (*where, key.value)) for key, value in node.value}
        if isinstance(node, yaml.SequenceNode):
            return [convert(item, (*where, index)) for index, item in enumerate(node.value)]
        return yaml.safe_load(yaml.serialize(node))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from None
    return (convert(root, ()) if root is not None else None), lines


def _typed(value, expected):
    if expected is bool:
        return isinstance(value, bool)
    if expected in (int, NUMBER):
        return isinstance(value, expected) and not isinstance(value, bool)
    return isinstance(value, expected)


def _check_keys(mapping, schema, where, lines, path, label):
    for key, value in mapping.items():
        line = lines.get((*where, key), "?")
        if key not in schema:
            raise ValueError(f"{path}:{line}: unknown key {key!r} in {label}; accepted: {', '.join(schema)}")
        expected = schema[key]
        if not _typed(value, expected):
            kind = "number" if expected is NUMBER else expected.__name__
            raise ValueError(f"{path}:{line}: {label} key {key!r} must be a {kind}, got {value!r}")


def load(path):
    """The pipeline in ``path``, checked (every error names the key and its line)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as stream:
        data, lines = _compose(stream.read(), path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a pipeline is a mapping with keys {', '.join(TOP_KEYS)}")
    _check_keys(data, TOP_KEYS, (), lines, path, "the pipeline")
    if not data.get("stages"):
        raise ValueError(f"{path}: the pipeline needs a non-empty 'stages' list")
    seen = []
    for index, stage in enumerate(data["stages"]):
        where = ("stages", index)
        line = lines.get(where, "?")
        if not isinstance(stage, dict):
            raise ValueError(f"{path}:{line}: stage {index + 1} must be a mapping with name, kind, with")
        _check_keys(stage, STAGE_KEYS, where, lines, path, f"stage {index + 1}")
        name, kind = stage.get("name"), stage.get("kind")
        if not name or name in seen or not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"{path}:{line}: stage {index + 1} needs a unique name of letters, digits, - and _, "
                             f"got {name!r}")
        if kind not in KINDS:
            raise ValueError(f"{path}:{lines.get((*where, 'kind'), line)}: stage {name!r}: unknown kind {kind!r}; "
                             f"accepted: {', '.join(KINDS)}")
        arguments = stage.get("with", {})
        _check_keys(arguments, KINDS[kind], (*where, "with"), lines, path, f"stage {name!r} ({kind})")
        missing = [key for key in REQUIRED[kind] if key not in arguments]
        if missing:
            raise ValueError(f"{path}:{line}: stage {name!r} ({kind}) needs {', '.join(missing)}")
        for key, value in arguments.items():
            if isinstance(value, str) and value.startswith("$") and value[1:] not in seen:
                raise ValueError(f"{path}:{lines.get((*where, 'with', key), line)}: stage {name!r}: {key} refers "
                                 f"to {value}, which is not an earlier stage ({', '.join(seen) or 'none'})")
        seen.append(name)
    return data


def _call(kind, arguments, out, *, resume=False):
    """Runs one stage; returns (metrics, outputs). ``resume``: continue a training stage's newest checkpoint
    or a search's state."""
    if kind == "pretrain":
        from kcnn.train import pretrain

        rows = pretrain(out=out, verbose=0, resume=resume, **_as_tuple(arguments, "input_shape"))
        return rows[-1], {"run": out, "weights": os.path.join(out, "model.weights.h5")}
    if kind == "finetune":
        from kcnn.train import finetune

        arguments = _as_tuple(arguments, "image_size")
        finetune(arguments.pop("backbone"), arguments.pop("task"), arguments.pop("dataset"), out, verbose=0,
                 resume=resume, **arguments)
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as stream:
            return json.load(stream), {"run": out, "weights": os.path.join(out, "model.weights.h5")}
    if kind == "tune":
        from kcnn.tune.search import tune

        rows = tune(out=out, resume=resume, **_as_tuple(arguments, "input_shape"))
        best = max((row for row in rows if row["score"] is not None), key=lambda row: row["score"])
        return best, {"run": out, "best": os.path.join(out, "best")}
    if kind == "degradation":
        from kcnn.train.degradation import degradation

        # continues each of its runs that has a checkpoint by itself
        histories = degradation(out=out, **_as_tuple(arguments, "depths"))
        return {name: rows[-1] for name, rows in histories.items()}, {"run": out,
                                                                      "figure": os.path.join(out, "degradation.png")}
    if kind == "evaluate":
        from kcnn.train.dense_evaluate import evaluate_task, task_weights
        from kcnn.train.evaluate import evaluate

        function = evaluate_task if task_weights(arguments["source"]) else evaluate
        metrics = function(**arguments)
        write_json(os.path.join(out, "metrics.json"), metrics)
        return metrics, {"metrics": os.path.join(out, "metrics.json")}
    from kcnn.export import export

    arguments = dict(arguments)
    version = export(arguments.pop("source"), os.path.join(out, arguments.pop("model_name")), **arguments)
    return {}, {"model": version}


def _as_tuple(arguments, key):
    return {**arguments, key: tuple(arguments[key])} if key in arguments else dict(arguments)


def _manifest(out):
    path = os.path.join(out, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def _checkpoint(kind, stage_out):
    """What an interrupted stage of ``kind`` can continue from: a training stage's newest checkpoint, a
    search's oracle state, a degradation run's checkpoints; ``None`` when it has to start from scratch."""
    from kcnn.train.checkpoints import latest

    if kind in ("pretrain", "finetune"):
        return latest(os.path.join(stage_out, "checkpoints"))
    if kind == "tune":  # the chief's state file (kcnn.tune.search refuses a search by it too)
        state = os.path.join(stage_out, "keras_tuner", "oracle.json")
        return state if os.path.isfile(state) else None
    if kind == "degradation":
        runs = sorted(os.listdir(stage_out)) if os.path.isdir(stage_out) else []
        found = [latest(os.path.join(stage_out, name, "checkpoints")) for name in runs]
        return next((path for path in found if path), None)
    return None


def _references(stage):
    """The stages that ``stage`` takes outputs of (its ``$stage`` values), in order."""
    values = stage.get("with", {}).values()
    return list(dict.fromkeys(value[1:] for value in values if isinstance(value, str) and value.startswith("$")))


def _changed(previous, kind, config):
    """The keys of ``with:`` (and ``kind``) that differ from the manifest's."""
    saved = previous.get("config") or {}
    keys = sorted(key for key in set(saved) | set(config) if saved.get(key, None) != config.get(key, None)
                  or (key in saved) != (key in config))
    return (["kind"] if previous.get("kind") != kind else []) + keys


def _plan(stages, out, resume, rerun_changed):
    """Per stage ``(action, previous manifest, why, checkpoint to resume from)``, action ``skip``, ``resume``
    or ``fresh``; and ``{stage: attempt id}`` (the previous one for a skipped stage, a new one otherwise).
    Decided for every stage before any runs, so that a refusal leaves everything as it is."""
    total, plan, runs, attempts = len(stages), [], set(), {}
    for index, stage in enumerate(stages, start=1):
        name, kind = stage["name"], stage["kind"]
        label = f"stage {index}/{total} {name!r} ({kind})"
        stage_out = os.path.join(out, name)
        previous = _manifest(stage_out) if resume else None
        config = _jsonable(stage.get("with", {}))
        references = _references(stage)
        recorded = (previous or {}).get("upstream")
        reran = [ref for ref in references
                 if ref in runs or (recorded is not None and recorded.get(ref) != attempts.get(ref))]
        changed = _changed(previous, kind, config) if previous else []
        checkpoint = _checkpoint(kind, stage_out) if resume else None
        status = (previous or {}).get("status")
        if changed and (status == "completed" or checkpoint):
            if not rerun_changed:
                state = ("completed" if status == "completed" else
                         f"was interrupted ({status or 'no manifest'}) with a checkpoint made")
                raise ValueError(f"{label} {state} with other settings (changed: {', '.join(changed)}); rerun it "
                                 "from scratch with --rerun-changed, put the settings back or choose another --out")
            action, why = "fresh", f"rerun from scratch (changed: {', '.join(changed)})"
        elif reran:
            action, why = "fresh", f"rerun from scratch: its input stage {', '.join(map(repr, reran))} ran again"
        elif status == "completed":
            action, why = "skip", "completed earlier, skipped"
        elif checkpoint:
            action, why = "resume", f"continues from {os.path.basename(checkpoint)}"
        elif status or (resume and os.path.isdir(stage_out)):
            action, why = "fresh", f"started again ({status or 'no manifest'}, nothing to continue from)"
        else:
            action, why = "fresh", ""
        if action == "skip":
            attempts[name] = previous.get("attempt")
        else:
            runs.add(name)
            attempts[name] = uuid.uuid4().hex[:12]
        plan.append((action, previous, why, checkpoint if action == "resume" else None))
    return plan, attempts


def _clear(out, name):
    """Moves ``out/name`` aside (one rename) and deletes it; see ``_remove_leftovers``."""
    stage_out = os.path.join(out, name)
    if not os.path.exists(stage_out):
        return
    aside = os.path.join(out, f".{name}.replaced-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    os.rename(stage_out, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_leftovers(out):
    """Deletes the folders a killed ``_clear`` left half-deleted (hidden names, never a stage's)."""
    for name in os.listdir(out):
        if name.startswith(".") and ".replaced-" in name:
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)


def run(path, out=None, *, resume=False, rerun_changed=False, echo=print):
    """Runs the pipeline in ``path`` into ``out`` (default ``runs/<pipeline name>``); returns the manifests.

    ``resume``: continue a run in ``out`` (skip what completed, continue what was interrupted);
    ``rerun_changed``: rerun from scratch the stages whose ``with:`` changed, and the stages that use their
    outputs (implies ``resume``). See the module's docstring.
    """
    pipeline = load(path)
    out = os.fspath(out or os.path.join("runs", pipeline.get("name") or os.path.splitext(os.path.basename(path))[0]))
    resume = resume or rerun_changed
    if os.path.isdir(out) and os.listdir(out) and not resume:
        raise ValueError(f"{out!r} already holds a run of a pipeline; pass --resume to continue it or choose "
                         "another --out")
    os.makedirs(out, exist_ok=True)
    _remove_leftovers(out)
    stages = pipeline["stages"]
    plan, attempts = _plan(stages, out, resume, rerun_changed)
    outputs, manifests, total = {}, [], len(stages)
    for index, (stage, (action, previous, why, checkpoint)) in enumerate(zip(stages, plan), start=1):
        name, kind = stage["name"], stage["kind"]
        stage_out = os.path.join(out, name)
        if action == "skip":
            echo(f"[{index}/{total}] {name} ({kind}): {why}")
            outputs[name], manifests = previous["outputs"], [*manifests, previous]
            continue
        config = stage.get("with", {})
        arguments = {key: _resolve(value, outputs) for key, value in config.items()}
        manifest = {"pipeline": os.path.abspath(path), "stage": name, "kind": kind, "config": config,
                    "inputs": {key: value for key, value in arguments.items() if value != config[key]},
                    "attempt": attempts[name], "upstream": {ref: attempts[ref] for ref in _references(stage)},
                    "started": _now(), "status": "running"}
        if checkpoint:
            manifest["resumed_from"] = os.path.basename(checkpoint)
        if kind == "export":
            if "version" in arguments and os.path.isdir(os.path.join(stage_out, "models")):
                arguments.setdefault("force", True)  # this stage's own earlier export of that version
        elif action == "fresh":
            _clear(out, name)
        echo(f"[{index}/{total}] {name} ({kind}) -> {stage_out}{': ' + why if why else ''}")
        os.makedirs(stage_out, exist_ok=True)
        write_json(os.path.join(stage_out, MANIFEST), manifest)
        try:
            metrics, stage_outputs = _call(kind, arguments, stage_out if kind != "export" else
                                           os.path.join(stage_out, "models"), resume=action == "resume")
        except Exception as error:  # recorded, then re-raised naming the stage
            message = " ".join(f"{type(error).__name__}: {error}".split())
            write_json(os.path.join(stage_out, MANIFEST), {**manifest, "status": "failed", "finished": _now(),
                                                           "error": message})
            raise StageFailed(f"stage {index}/{total} {name!r} ({kind}) failed: {' '.join(str(error).split())}; "
                              f"the stages before it are kept in {out}, and --resume continues from this one "
                              "(from its newest checkpoint if it wrote one)") from error
        manifest.update(status="completed", finished=_now(), metrics=_jsonable(metrics), outputs=stage_outputs)
        write_json(os.path.join(stage_out, MANIFEST), manifest)
        outputs[name], manifests = stage_outputs, [*manifests, manifest]
    return manifests


def _resolve(value, outputs):
    """``$stage`` -> that stage's main output (its run directory, best run or exported model);
    ``~/...`` -> the home directory's path."""
    if isinstance(value, str) and value.startswith("~/"):
        return os.path.expanduser(value)
    if not (isinstance(value, str) and value.startswith("$")):
        return value
    produced = outputs[value[1:]]
    return produced.get("best") or produced.get("run") or produced.get("model")


def _jsonable(metrics):
    return json.loads(json.dumps(metrics, default=float))


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
