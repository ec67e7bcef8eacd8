"""Training: paper recipes as data, precision and distribution, one loop for pretraining and fine-tuning,
checkpoints and history."""

from kcnn.train.engine import TrainingStopped
from kcnn.train.pretrain import pretrain
from kcnn.train.finetune import finetune
from kcnn.train.recipes import RECIPES, Recipe

__all__ = ["RECIPES", "Recipe", "TrainingStopped", "finetune", "pretrain"]
