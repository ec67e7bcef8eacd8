"""The few layers Keras does not ship: LRN, option-A shortcuts, LeNet's C3 table.

All are serializable (``get_config``) and registered under the ``kcnn`` package, so
``.keras`` files that use them load with plain ``keras.saving.load_model`` once
``kcnn`` is imported.

>>> import numpy as np
>>> layer = ChannelPadShortcut(filters=8, strides=2)
>>> tuple(layer(np.ones((1, 4, 4, 3), "float32")).shape)
(1, 2, 2, 8)
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kcnn")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel LRN of AlexNet (Krizhevsky et al. 2012, section 3.3).

    ``b = a / (bias + alpha * sum_{|j-i| <= size//2} a_j^2) ** beta`` — the paper's
    form, where ``alpha`` multiplies the plain sum (Caffe and PyTorch divide it by
    ``size``; pass ``alpha / size`` to reproduce them).
    """

    def __init__(self, size=5, alpha=1e-4, beta=0.75, bias=2.0, **kwargs):
        super().__init__(**kwargs)
        if size < 1 or size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd integer, got {size}")
        self.size, self.alpha, self.beta, self.bias = size, alpha, beta, bias

    def call(self, inputs):
        half = self.size // 2
        squared = ops.square(inputs)
        padded = ops.pad(squared, [[0, 0], [0, 0], [0, 0], [half, half]])
        channels = ops.shape(inputs)[-1]
        window = sum(padded[..., i : i + channels] for i in range(self.size))
        return inputs / ops.power(self.bias + self.alpha * window, self.beta)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "alpha": self.alpha,
                "beta": self.beta, "bias": self.bias}


@keras.saving.register_keras_serializable(package="kcnn")
class ChannelPadShortcut(keras.layers.Layer):
    """ResNet shortcut option A: identity, subsampled by ``strides``, zero-padded to ``filters``.

    Parameter-free (He et al. 2015, section 3.3 and the CIFAR experiments).
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.strides = int(filters), int(strides)

    def call(self, inputs):
        x = inputs[:, :: self.strides, :: self.strides, :]
        extra = self.filters - x.shape[-1]
        if extra < 0:
            raise ValueError(f"option-A shortcut cannot shrink {x.shape[-1]} channels to {self.filters}")
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]]) if extra else x

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        shrink = lambda d: None if d is None else -(-d // self.strides)  # noqa: E731
        return (n, shrink(h), shrink(w), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package="kcnn")
class ConnectionTableConv2D(keras.layers.Layer):
    """A valid convolution where output map ``i`` sees only the input maps ``table[i]``.

    LeNet-5's C3 (LeCun et al. 1998, Table I) connects its 16 maps to subsets of
    S2's 6 maps: 1,516 parameters instead of the 2,416 of a full connection.
    Each output map owns a kernel of shape ``(k, k, len(table[i]), 1)``, so
    ``count_params()`` counts only the real connections.
    """

    def __init__(self, table, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.table = [tuple(int(c) for c in row) for row in table]
        self.kernel_size = int(kernel_size)

    def build(self, input_shape):
        channels = input_shape[-1]
        for row in self.table:
            if not row or min(row) < 0 or max(row) >= channels:
                raise ValueError(f"connection table row {row} does not fit {channels} input maps")
        k = self.kernel_size
        self.kernels = [
            self.add_weight(name=f"kernel_{i}", shape=(k, k, len(row), 1), initializer="glorot_uniform")
            for i, row in enumerate(self.table)
        ]
        self.bias = self.add_weight(name="bias", shape=(len(self.table),), initializer="zeros")

    def call(self, inputs):
        maps = [
            ops.conv(ops.take(inputs, list(row), axis=-1), kernel, padding="valid")
            for row, kernel in zip(self.table, self.kernels)
        ]
        return ops.concatenate(maps, axis=-1) + self.bias

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        shrink = lambda d: None if d is None else d - self.kernel_size + 1  # noqa: E731
        return (n, shrink(h), shrink(w), len(self.table))

    def get_config(self):
        return {**super().get_config(), "table": [list(r) for r in self.table],
                "kernel_size": self.kernel_size}
