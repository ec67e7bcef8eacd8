"""Each paper's training schedule as data: optimizer, batch, learning-rate schedule, length, augmentation.

Schedules count in ``steps`` (iterations, as the ResNet CIFAR recipe does) or in
``epochs``; the engine turns epochs into steps once it knows the dataset size.
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

import keras

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

    def with_length(self, length, unit):
        """This recipe trained for ``length`` ``unit``; a schedule counted in the other unit is dropped."""
        if unit == self.unit:
            return self.replace(length=length, warmup=min(self.warmup, length - 1))
        return self.replace(length=length, unit=unit, boundaries=(), warmup=0)

    def build_optimizer(self, learning_rate=None):
        """A fresh Keras optimizer for this recipe (the loop sets its rate every step)."""
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
    # kcnn's recipe for fine-tuning from scratch on the generated `shapes` (2 CPU cores, minutes).
    Recipe("shapes", "kcnn", lr=2e-3, batch_size=16, length=12, weight_decay=1e-5, warmup=1,
           optimizer="adam", schedule="cosine"),
)}

DEFAULT_RECIPE = {"lenet": "small", "alexnet": "alexnet", "vgg": "vgg", "googlenet": "googlenet",
                  "resnet": "resnet_imagenet", "cifar_resnet": "resnet_cifar"}
FINETUNE_RECIPE = {"segmentation": "deeplabv3", "detection": "retinanet"}  # `shapes` runs: "shapes"


def get(name, **overrides):
    """A recipe by name, with ``overrides`` applied (e.g. from CLI flags or a YAML file)."""
    if name not in RECIPES:
        close = difflib.get_close_matches(name, RECIPES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown recipe {name!r}{hint}; accepted: {', '.join(RECIPES)}")
    return RECIPES[name].replace(**overrides) if overrides else RECIPES[name]
