"""Search spaces as data: YAML naming the hyperparameters, and how they become zoo build options and
recipe fields. The hypermodel calls the zoo's builders with them; no builder code is repeated.

A space file has ``model`` (a zoo name, or a template such as ``resnet{depth}``),
``hyperparameters`` (``{values: [...]}`` is a choice whose first value is the default;
``{min, max[, step][, sampling: log][, default]}`` an int or float range), ``options`` (the
``kcnn.build`` options) and ``recipe`` (recipe fields: lr, weight_decay, batch_size, ...), where
``$name`` stands for a hyperparameter's value. Optional: ``input_shape``.

>>> space = load("zfnet")
>>> space.resolve(space.defaults())[0]
'alexnet'
>>> name, options, recipe = space.resolve({**space.defaults(), "variant": "zfnet", "conv1_kernel": 7,
...                                          "conv1_stride": 2})
>>> options["widths"], options["conv1_kernel"], recipe["lr"]
([96, 256, 384, 384, 256], 7, 0.01)
"""

import dataclasses
import os

import importlib_resources
import yaml

BUILT_IN = ("zfnet", "resnet", "vgg")
KEYS = {"model", "hyperparameters", "options", "recipe", "input_shape"}
RANGE_KEYS = {"min", "max", "step", "sampling", "default"}


@dataclasses.dataclass(frozen=True)
class Space:
    name: str
    model: str
    hyperparameters: dict
    options: dict
    recipe: dict
    input_shape: tuple = None

    def define(self, hp):
        """Registers the hyperparameters on a keras_tuner ``HyperParameters``; returns their values."""
        for key, spec in self.hyperparameters.items():
            if "values" in spec and all(isinstance(v, bool) for v in spec["values"]):
                hp.Boolean(key, default=spec.get("default", spec["values"][0]))  # Choice would make them 0/1
            elif "values" in spec:
                hp.Choice(key, spec["values"], default=spec.get("default", spec["values"][0]))
            elif all(isinstance(spec[k], int) for k in ("min", "max")) and isinstance(spec.get("step", 1), int):
                hp.Int(key, spec["min"], spec["max"], step=spec.get("step"), sampling=spec.get("sampling", "linear"),
                       default=spec.get("default"))
            else:
                hp.Float(key, spec["min"], spec["max"], step=spec.get("step"),
                         sampling=spec.get("sampling", "linear"), default=spec.get("default"))
        return {key: hp.get(key) for key in self.hyperparameters}

    def defaults(self):
        """The default point: each choice's first value (or ``default``), each range's default or minimum."""
        return {key: spec.get("default", spec["values"][0] if "values" in spec else spec["min"])
                for key, spec in self.hyperparameters.items()}

    def resolve(self, values):
        """(zoo name, build options, recipe overrides) of the point ``values``."""
        missing = sorted(set(self.hyperparameters) - set(values))
        if missing:
            raise ValueError(f"space {self.name!r}: no value for hyperparameter(s) {', '.join(missing)}")
        return (self.model.format(**values), _substitute(self.options, values), _substitute(self.recipe, values))


def _substitute(template, values):
    if isinstance(template, str) and template.startswith("$"):
        return values[template[1:]]
    if isinstance(template, list):
        return [_substitute(item, values) for item in template]
    if isinstance(template, dict):
        return {key: _substitute(item, values) for key, item in template.items()}
    return template


def _check(name, data):
    if not isinstance(data, dict):
        raise ValueError(f"space {name!r} must be a mapping with keys {', '.join(sorted(KEYS))}")
    unknown = sorted(set(data) - KEYS)
    if unknown or "model" not in data or "hyperparameters" not in data:
        raise ValueError(f"space {name!r}: unknown key {unknown[0]!r}" if unknown else
                         f"space {name!r} needs 'model' and 'hyperparameters'; accepted keys: {', '.join(sorted(KEYS))}")
    for key, spec in data["hyperparameters"].items():
        ok = isinstance(spec, dict) and (
            ("values" in spec and isinstance(spec["values"], list) and spec["values"]
             and set(spec) <= {"values", "default"})
            or ({"min", "max"} <= set(spec) and set(spec) <= RANGE_KEYS))
        if not ok:
            raise ValueError(f"space {name!r}: hyperparameter {key!r} must be {{values: [...]}} or "
                             f"{{min: ..., max: ...[, step, sampling, default]}}, got {spec!r}")
    referenced = set()

    def collect(template):
        if isinstance(template, str) and template.startswith("$"):
            referenced.add(template[1:])
        elif isinstance(template, (list, dict)):
            for item in (template.values() if isinstance(template, dict) else template):
                collect(item)
    collect(data.get("options", {}))
    collect(data.get("recipe", {}))
    undefined = sorted(referenced - set(data["hyperparameters"]))
    if undefined:
        raise ValueError(f"space {name!r} uses ${undefined[0]}, which is not one of its hyperparameters")


def load(name_or_path):
    """A built-in space by name (``zfnet``, ``resnet``, ``vgg``) or a YAML file."""
    text_path = os.fspath(name_or_path)
    if text_path in BUILT_IN:
        text, name = importlib_resources.files("kcnn.tune").joinpath("spaces", f"{text_path}.yaml").read_text(), text_path
    elif os.path.isfile(text_path):
        with open(text_path, encoding="utf-8") as stream:
            text, name = stream.read(), os.path.splitext(os.path.basename(text_path))[0]
    else:
        raise ValueError(f"unknown search space {text_path!r}; accepted: {', '.join(BUILT_IN)} or a YAML file")
    data = yaml.safe_load(text)
    _check(name, data)
    shape = data.get("input_shape")
    return Space(name=name, model=data["model"], hyperparameters=data["hyperparameters"],
                 options=data.get("options", {}), recipe=data.get("recipe", {}),
                 input_shape=tuple(shape) if shape else None)
