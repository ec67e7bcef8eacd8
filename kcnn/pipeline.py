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
``RUN/<name>/`` and, when it ends, ``RUN/<name>/manifest.json`` (inputs, config, metrics,
outputs, status); ``resume=True`` skips the stages whose manifest says ``completed``. A failing
stage records its error in its manifest, leaves the earlier stages' outputs as they are, and
raises ``StageFailed`` naming it.
"""

import datetime
import json
import os

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


def _call(kind, arguments, out):
    """Runs one stage; returns (metrics, outputs)."""
    if kind == "pretrain":
        from kcnn.train import pretrain

        rows = pretrain(out=out, verbose=0, **_as_tuple(arguments, "input_shape"))
        return rows[-1], {"run": out, "weights": os.path.join(out, "model.weights.h5")}
    if kind == "finetune":
        from kcnn.train import finetune

        arguments = _as_tuple(arguments, "image_size")
        finetune(arguments.pop("backbone"), arguments.pop("task"), arguments.pop("dataset"), out, verbose=0,
                 **arguments)
        with open(os.path.join(out, "metrics.json"), encoding="utf-8") as stream:
            return json.load(stream), {"run": out, "weights": os.path.join(out, "model.weights.h5")}
    if kind == "tune":
        from kcnn.tune.search import tune

        rows = tune(out=out, **_as_tuple(arguments, "input_shape"))
        best = max((row for row in rows if row["score"] is not None), key=lambda row: row["score"])
        return best, {"run": out, "best": os.path.join(out, "best")}
    if kind == "degradation":
        from kcnn.train.degradation import degradation

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


def run(path, out=None, *, resume=False, echo=print):
    """Runs the pipeline in ``path`` into ``out`` (default ``runs/<pipeline name>``); returns the manifests."""
    pipeline = load(path)
    out = os.fspath(out or os.path.join("runs", pipeline.get("name") or os.path.splitext(os.path.basename(path))[0]))
    if os.path.isdir(out) and os.listdir(out) and not resume:
        raise ValueError(f"{out!r} already holds a run of a pipeline; pass --resume to continue it or choose "
                         "another --out")
    os.makedirs(out, exist_ok=True)
    outputs, manifests = {}, []
    for index, stage in enumerate(pipeline["stages"], start=1):
        name, kind = stage["name"], stage["kind"]
        stage_out = os.path.join(out, name)
        previous = _manifest(stage_out)
        if resume and previous and previous["status"] == "completed":
            echo(f"[{index}/{len(pipeline['stages'])}] {name} ({kind}): completed earlier, skipped")
            outputs[name], manifests = previous["outputs"], [*manifests, previous]
            continue
        arguments = {key: _resolve(value, outputs) for key, value in stage.get("with", {}).items()}
        manifest = {"pipeline": os.path.abspath(path), "stage": name, "kind": kind, "config": stage.get("with", {}),
                    "inputs": {key: value for key, value in arguments.items() if value != stage["with"][key]},
                    "started": _now(), "status": "running"}
        echo(f"[{index}/{len(pipeline['stages'])}] {name} ({kind}) -> {stage_out}")
        os.makedirs(stage_out, exist_ok=True)
        try:
            metrics, stage_outputs = _call(kind, arguments, stage_out if kind != "export" else
                                           os.path.join(stage_out, "models"))
        except Exception as error:  # recorded, then re-raised naming the stage
            write_json(os.path.join(stage_out, MANIFEST), {**manifest, "status": "failed", "finished": _now(),
                                                           "error": f"{type(error).__name__}: {error}"})
            raise StageFailed(f"stage {index}/{len(pipeline['stages'])} {name!r} ({kind}) failed: {error}; the "
                              f"stages before it are kept in {out}, and --resume reruns from this one") from error
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
