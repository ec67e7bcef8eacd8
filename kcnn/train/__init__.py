"""Training: paper recipes as data, precision and distribution, the loop, checkpoints and history."""

from kcnn.train.engine import TrainingStopped, pretrain
from kcnn.train.recipes import RECIPES, Recipe

__all__ = ["RECIPES", "Recipe", "TrainingStopped", "pretrain"]
