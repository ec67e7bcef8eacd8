"""Weights: the kcnn weights file, preprocessing presets, and importers of other libraries' checkpoints.

This package's ``__init__`` holds only what ``kcnn.build`` needs to read a file
(``files``, ``preprocessing``); the importers, which build models, are in
``kcnn.weights.importer`` and ``kcnn.weights.keras_applications``.
"""

from kcnn.weights.files import read_metadata
from kcnn.weights.preprocessing import PRESETS, Preprocessing

__all__ = ["PRESETS", "Preprocessing", "read_metadata"]
