"""Training: paper recipes as data, precision and distribution, the loops (pretraining and fine-tuning),
checkpoints and history."""

from kcnn.train.engine import TrainingStopped, pretrain
from kcnn.train.finetune import finetune
from kcnn.train.recipes import RECIPES, Recipe

__all__ = ["RECIPES", "Recipe", "TrainingStopped", "finetune", "pretrain"]
