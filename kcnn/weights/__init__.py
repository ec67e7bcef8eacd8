"""Weight importers: other libraries' checkpoints -> kcnn models computing the same function."""

from kcnn.weights.keras_applications import transfer_keras_applications

__all__ = ["transfer_keras_applications"]
