"""Each paper's training schedule as data: optimizer, batch, learning-rate schedule, length, augmentation.

Schedules count in ``steps`` (iterations, as the ResNet CIFAR recipe does) or in
``epochs``; the engine turns epochs into steps once it knows the dataset size
(``Recipe.in_steps``), and ``Recipe.for_run`` fits a recipe to ``--epochs`` or ``--steps``
by scaling its boundaries and keeping its warm-up. ``Recipe.lr_schedule`` gives the
same rates as a Keras ``LearningRateSchedule`` (``RecipeSchedule``).
Where a paper lowered the rate "when the validation error stopped improving", the
recipe lowers it at fixed epochs instead (the comments say which), so runs repeat.

>>> resnet = get("resnet_cifar")
>>> resnet.lr, resnet.batch_size, resnet.boundaries, resnet.length, resnet.unit
(0.1, 128, (32000, 48000), 64000, 'steps')
>>> round(get("resnet_cifar", lr=0.05, boundaries=(50,)).learning_rate(60, steps_per_epoch=10), 6)
0.005
"""

import dataclasses
import difflib
import math
import operator

import keras
import numpy as np

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine", "poly")
POLY_POWER = 0.9  # DeepLab's "poly" schedule: lr * (1 - progress) ** 0.9


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    paper: str
    lr: float
    batch_size: int
    length: int              # how long to train, in ``unit``
    unit: str = "epochs"     # "epochs" or "steps"
    boundaries: tuple = ()   # where the rate is multiplied by ``factor``, in ``unit``
    factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    augment: str = "none"
    warmup: int = 0          # linear warm-up, in ``unit``
    optimizer: str = "sgd"   # "sgd" (with ``momentum``) or "adam"
    schedule: str = "step"   # "step" (``boundaries``/``factor``), "cosine" or "poly" (to 0 at the end)

    def to_steps(self, value, steps_per_epoch):
        return int(value) if self.unit == "steps" else int(round(value * steps_per_epoch))

    def total_steps(self, steps_per_epoch):
        return self.to_steps(self.length, steps_per_epoch)

    def learning_rate(self, step, steps_per_epoch):
        """The rate at ``step`` (0-based), as a Python float."""
        warmup = self.to_steps(self.warmup, steps_per_epoch)
        if warmup and step < warmup:
            return self.lr * (step + 1) / warmup
        if self.schedule == "step":
            drops = sum(step >= self.to_steps(b, steps_per_epoch) for b in self.boundaries)
            return self.lr * self.factor ** drops
        progress = min(1.0, (step - warmup) / max(self.total_steps(steps_per_epoch) - warmup, 1))
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr * (1 - progress) ** POLY_POWER

    def in_steps(self, steps_per_epoch):
        """This recipe with ``unit="steps"``: length, boundaries and warm-up in steps.

        An epochs recipe's values become ``round(value * steps_per_epoch)`` (as ``learning_rate``
        counts them), so the copy gives the same rate at every step; a steps recipe is returned as is.
        """
        steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
        if self.unit == "steps":
            return self
        return self.replace(unit="steps", length=self.total_steps(steps_per_epoch),
                            boundaries=tuple(self.to_steps(b, steps_per_epoch) for b in self.boundaries),
                            warmup=self.to_steps(self.warmup, steps_per_epoch))

    def for_run(self, steps_per_epoch, *, epochs=None, steps=None):
        """``(recipe in steps, note)`` for a run of ``epochs`` or ``steps`` (neither: the recipe's own length).

        A new length scales the boundaries proportionally (rounded to steps, strictly increasing,
        within ``1 .. total - 1``; ones that rounding merges, or that the recipe never reached, are
        dropped) and keeps the warm-up in steps, at most a tenth of the run. ``note`` is one line
        saying what changed, for the run to print once; ``None`` when the length is the recipe's own.

        >>> recipe, note = get("retinanet").for_run(75, epochs=10)
        >>> recipe.length, recipe.boundaries, recipe.warmup, recipe.unit
        (750, (500, 667), 75, 'steps')
        >>> print(note)
        recipe retinanet: 90000 steps -> 750 steps (--epochs 10 x 75 steps); lr x0.1 at steps 60000, 80000 -> 500, 667; warm-up 500 -> 75 steps (at most a tenth of the run)
        """
        if epochs is not None and steps is not None:
            raise ValueError("give --epochs or --steps, not both")
        base = self.in_steps(steps_per_epoch)
        spe = _positive_int("steps_per_epoch", steps_per_epoch)
        if epochs is None and steps is None:
            return base, None
        if epochs is not None:
            total, how = _positive_int("--epochs", epochs) * spe, f"--epochs {epochs} x {spe} steps"
        else:
            total, how = _positive_int("--steps", steps), f"--steps {steps}"
        old_total = base.length
        if total == old_total:
            return base, None
        boundaries, merged, unreached = _scale_boundaries(base.boundaries, old_total, total)
        warmup = min(base.warmup, max(0, total // 10))
        recipe = base.replace(length=total, boundaries=boundaries, warmup=warmup)

        was = f"{self.length} epochs ({old_total} steps)" if self.unit == "epochs" else f"{old_total} steps"
        parts = [f"recipe {self.name}: {was} -> {total} steps ({how})"]
        if self.schedule == "step" and base.boundaries:
            scaled = f"lr x{self.factor:g} at steps {_step_list(sorted(base.boundaries))} -> {_step_list(boundaries)}"
            dropped = [f"{n} {why}" for n, why in ((merged, "merged by rounding"),
                                                    (unreached, "never reached")) if n]
            parts.append(scaled + (f" ({', '.join(dropped)}: dropped)" if dropped else ""))
        elif self.schedule != "step":
            parts.append(f"{self.schedule} decay over the {total} steps")
        if base.warmup and warmup != base.warmup:
            parts.append(f"warm-up {base.warmup} -> {warmup} steps (at most a tenth of the run)")
        elif base.warmup:
            parts.append(f"warm-up {warmup} steps kept")
        return recipe, "; ".join(parts)

    def lr_schedule(self, steps_per_epoch, factor=1.0, offset=0):
        """This recipe's rates as a Keras ``LearningRateSchedule`` (``factor`` x the rate at step + ``offset``).

        Named ``lr_schedule`` because ``schedule`` is the field naming the decay ("step", "cosine", "poly").
        """
        return RecipeSchedule(self, steps_per_epoch, factor=factor, offset=offset)

    def build_optimizer(self, learning_rate=None):
        """A fresh Keras optimizer for this recipe.

        ``learning_rate`` may be a number (the loop then sets the rate every step) or a schedule
        such as ``self.lr_schedule(steps_per_epoch)``.
        """
        learning_rate = self.lr if learning_rate is None else learning_rate
        if self.optimizer == "adam":
            return keras.optimizers.Adam(learning_rate)
        return keras.optimizers.SGD(learning_rate, momentum=self.momentum)

    def replace(self, **overrides):
        """A copy with some fields changed; unknown fields and wrong types raise naming the field."""
        fields = {field.name: field for field in dataclasses.fields(self)}
        for key, value in overrides.items():
            if key not in fields:
                raise ValueError(f"unknown recipe field {key!r}; accepted: {', '.join(sorted(fields))}")
            expected = type(getattr(self, key))
            if expected is tuple and isinstance(value, list):
                overrides[key] = value = tuple(value)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                overrides[key] = value = float(value)
            if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
                raise ValueError(f"recipe field {key!r} must be {expected.__name__}, got {value!r}")
        if overrides.get("unit", self.unit) not in ("epochs", "steps"):
            raise ValueError(f"recipe unit must be 'epochs' or 'steps', got {overrides['unit']!r}")
        if overrides.get("length", self.length) < 1:
            raise ValueError(f"training length must be at least 1, got {overrides['length']}")
        for key, accepted in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if overrides.get(key, getattr(self, key)) not in accepted:
                raise ValueError(f"recipe {key} must be one of {', '.join(accepted)}, got {overrides[key]!r}")
        return dataclasses.replace(self, **overrides)


def _positive_int(name, value):
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a whole number, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")
    return value


def _scale_boundaries(boundaries, old_total, total):
    """``boundaries`` (steps of ``old_total``) scaled to ``total``: (kept, merged by rounding, never reached)."""
    kept, merged, unreached = [], 0, 0
    for boundary in sorted(boundaries):
        if boundary >= old_total:
            unreached += 1
            continue
        step = min(max(round(boundary * total / old_total), 1), total - 1)
        if step < 1 or (kept and step <= kept[-1]):
            merged += 1
            continue
        kept.append(step)
    return tuple(kept), merged, unreached


def _step_list(steps, most=6):
    steps = [str(step) for step in steps]
    if not steps:
        return "none"
    if len(steps) <= most:
        return ", ".join(steps)
    return f"{', '.join(steps[:3])}, ..., {steps[-1]} ({len(steps)} boundaries)"


@keras.saving.register_keras_serializable(package="kcnn")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A recipe's learning rate as a Keras schedule: ``factor * recipe.learning_rate(step + offset)``.

    Computed with ``keras.ops`` in float32 (graph-safe, so it runs inside a compiled train step).
    ``offset`` is for an optimizer that starts counting later than the run, e.g. a fine-tuning
    backbone's optimizer after frozen epochs: its iteration ``i`` is the run's step ``i + offset``.

    >>> schedule = get("retinanet").lr_schedule(steps_per_epoch=100)
    >>> [round(float(schedule(step)), 6) for step in (0, 499, 60000, 80000)]
    [2e-05, 0.01, 0.001, 0.0001]
    """

    def __init__(self, recipe, steps_per_epoch, factor=1.0, offset=0):
        super().__init__()
        self.recipe = recipe
        self.steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)
        self.factor, self.offset = float(factor), int(offset)
        steps = recipe.in_steps(self.steps_per_epoch)
        self._warmup, self._denominator = steps.warmup, max(steps.length - steps.warmup, 1)
        self._peak = self.factor * recipe.lr
        # the step schedule's rates, worked out in float64 as learning_rate does, then stored in float32
        self._boundaries = np.asarray([int(b) for b in steps.boundaries], "int32")
        self._rates = np.asarray([self.factor * (recipe.lr * recipe.factor ** drops)
                                  for drops in range(len(steps.boundaries) + 1)], "float32")

    def __call__(self, step):
        ops = keras.ops
        step = ops.cast(step, "int32") + self.offset
        schedule = self.recipe.schedule
        if schedule == "step":
            drops = ops.sum(ops.cast(ops.greater_equal(step, self._boundaries), "int32")) if len(
                self._boundaries) else ops.zeros((), "int32")
            rate = ops.take(ops.convert_to_tensor(self._rates), drops)
        else:
            # 1 - progress, from whole steps (exact) and one division, so the end of the decay keeps
            # its precision; cosine uses 0.5 * (1 + cos(pi * p)) = sin(pi / 2 * (1 - p)) ** 2
            remaining = ops.maximum(self._denominator - (step - self._warmup), 0)
            left = ops.cast(remaining, "float32") / np.float32(self._denominator)
            if schedule == "cosine":
                rate = np.float32(self._peak) * ops.square(ops.sin(left * np.float32(math.pi / 2)))
            else:
                rate = np.float32(self._peak) * ops.power(left, np.float32(POLY_POWER))
        if self._warmup:
            ramp = ops.cast(step + 1, "float32") * np.float32(self._peak / self._warmup)
            rate = ops.where(ops.less(step, self._warmup), ramp, rate)
        return ops.cast(rate, "float32")

    def get_config(self):
        recipe = dataclasses.asdict(self.recipe)
        recipe["boundaries"] = list(recipe["boundaries"])
        return {"recipe": recipe, "steps_per_epoch": self.steps_per_epoch, "factor": self.factor,
                "offset": self.offset}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        fields = dict(config.pop("recipe"))
        fields["boundaries"] = tuple(fields.get("boundaries", ()))
        return cls(Recipe(**fields), **config)


RECIPES = {recipe.name: recipe for recipe in (
    # Krizhevsky et al. 2012, section 5: SGD batch 128, momentum 0.9, weight decay 5e-4, lr 0.01
    # divided by 10 three times (on plateaus), about 90 epochs.
    Recipe("alexnet", "Krizhevsky et al. 2012", lr=0.01, batch_size=128, length=90,
           boundaries=(30, 60, 80), weight_decay=5e-4, augment="alexnet"),
    # Zeiler & Fergus 2013, section 3: as AlexNet, lr 0.01 annealed by hand, 70 epochs.
    Recipe("zfnet", "Zeiler, Fergus 2013", lr=0.01, batch_size=128, length=70,
           boundaries=(30, 55), weight_decay=5e-4, augment="alexnet"),
    # Simonyan & Zisserman 2014, section 3.1: batch 256, momentum 0.9, wd 5e-4, lr 0.01 divided by
    # 10 three times on plateaus, stopped after 74 epochs; scale jittering S in [256, 512].
    Recipe("vgg", "Simonyan, Zisserman 2014", lr=0.01, batch_size=256, length=74,
           boundaries=(30, 50, 65), weight_decay=5e-4, augment="vgg"),
    # Szegedy et al. 2014, section 6: momentum 0.9, lr decreased by 4% every 8 epochs.
    Recipe("googlenet", "Szegedy et al. 2014", lr=0.01, batch_size=128, length=250,
           boundaries=tuple(range(8, 250, 8)), factor=0.96, weight_decay=2e-4, augment="googlenet"),
    # He et al. 2015, section 3.4: batch 256, lr 0.1 divided by 10 on plateaus (epochs 30, 60),
    # up to 60e4 iterations (about 120 epochs; 90 is the usual practice), wd 1e-4, momentum 0.9.
    Recipe("resnet_imagenet", "He et al. 2015", lr=0.1, batch_size=256, length=90,
           boundaries=(30, 60), weight_decay=1e-4, augment="resnet_imagenet"),
    # He et al. 2015, section 4.2: batch 128, lr 0.1 /10 at 32k and 48k iterations, stop at 64k.
    Recipe("resnet_cifar", "He et al. 2015", lr=0.1, batch_size=128, length=64000, unit="steps",
           boundaries=(32000, 48000), weight_decay=1e-4, augment="cifar"),
    # kcnn's recipe for small offline runs (digits, LeNet): short, translations only.
    Recipe("small", "kcnn", lr=0.05, batch_size=64, length=20, boundaries=(15,), weight_decay=5e-4,
           augment="shift"),
    # Chen et al. 2017 (DeepLabv3), section 4.1: SGD momentum 0.9, lr 0.007 with the poly schedule,
    # batch 16, 30k iterations, weight decay 1e-4 (the usual fine-tuning recipe for FCN and U-Net too).
    Recipe("deeplabv3", "Chen et al. 2017", lr=0.007, batch_size=16, length=30000, unit="steps",
           weight_decay=1e-4, schedule="poly"),
    # Lin et al. 2017 (RetinaNet), section 5.1: SGD momentum 0.9, lr 0.01, batch 16, 90k iterations,
    # lr /10 at 60k and 80k, weight decay 1e-4 (plus Goyal et al.'s linear warm-up, 500 iterations).
    Recipe("retinanet", "Lin et al. 2017", lr=0.01, batch_size=16, length=90000, unit="steps",
           boundaries=(60000, 80000), weight_decay=1e-4, warmup=500),
    # He et al. 2017 (Mask R-CNN), section 3.1: SGD momentum 0.9, lr 0.02, batch 16, 160k iterations, lr /10 at
    # 120k, weight decay 1e-4 (Faster R-CNN with FPN alike; plus Detectron's linear warm-up, 1,000 iterations).
    Recipe("mask_rcnn", "He et al. 2017", lr=0.02, batch_size=16, length=160000, unit="steps",
           boundaries=(120000,), weight_decay=1e-4, warmup=1000),
    # kcnn's recipe for segmentation and detection from scratch on small data (a user's folder of a few
    # thousand images or fewer, the generated `shapes`): Adam, warm-up, cosine decay. In steps, as the papers'
    # dense recipes: from scratch needs a number of updates whatever the folder's size (1,200 steps: about 19
    # epochs of 1,000 images, 9.6 of shapes' 2,000); minutes on 2 CPU cores at 128x128 (benchmarks/README.md).
    Recipe("small_data", "kcnn", lr=2e-3, batch_size=16, length=1200, unit="steps", weight_decay=1e-5,
           warmup=100, optimizer="adam", schedule="cosine"),
)}
ALIASES = {"shapes": "small_data"}  # former names

DEFAULT_RECIPE = {"lenet": "small", "alexnet": "alexnet", "vgg": "vgg", "googlenet": "googlenet",
                  "resnet": "resnet_imagenet", "cifar_resnet": "resnet_cifar"}
# from weights, by head; from scratch: small_data
FINETUNE_RECIPE = {"fcn": "deeplabv3", "deeplabv3": "deeplabv3", "unet": "deeplabv3", "retinanet": "retinanet",
                   "faster_rcnn": "mask_rcnn", "mask_rcnn": "mask_rcnn"}


def get(name, **overrides):
    """A recipe by name (or a former name, ``ALIASES``), with ``overrides`` applied (e.g. from CLI flags or a YAML
    file).

    >>> get("shapes").name
    'small_data'
    """
    name = ALIASES.get(name, name)
    if name not in RECIPES:
        close = difflib.get_close_matches(name, RECIPES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown recipe {name!r}{hint}; accepted: {', '.join(RECIPES)}")
    return RECIPES[name].replace(**overrides) if overrides else RECIPES[name]
