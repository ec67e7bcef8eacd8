"""Weights: the kcnn weights file, preprocessing presets, and importers of other libraries' checkpoints.

This package's ``__init__`` holds only what ``kcnn.build`` needs to read a file
(``files``, ``preprocessing``) and the evaluation transform a file records; the importers, which build models, are in
``kcnn.weights.importer`` and ``kcnn.weights.keras_applications``.
"""

from kcnn.weights.files import eval_transform_of, read_metadata
from kcnn.weights.preprocessing import PRESETS, Preprocessing, default_preprocessing

__all__ = ["PRESETS", "Preprocessing", "default_preprocessing", "eval_transform_of", "read_metadata"]
