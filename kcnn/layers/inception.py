"""The Inception module with dimension reductions (Szegedy et al. 2014, Figure 2b).

A row of the GoogLeNet table — ``(#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj)`` —
becomes four parallel branches concatenated on channels.

>>> import keras
>>> from kcnn.layers.common import conv
>>> unit = lambda x, f, k, name: conv(x, f, k, activation="relu", name=name)
>>> x = keras.Input((28, 28, 192))
>>> inception_module(x, (64, 96, 128, 16, 32, 32), conv_unit=unit, name="inception_3a").shape
(None, 28, 28, 256)
"""

from keras import layers


def inception_module(x, row, *, conv_unit, wide_kernel=5, name):
    """``conv_unit(x, filters, kernel, name)`` makes each convolution (with its BN/ReLU).

    ``wide_kernel`` is the kernel of the "5x5" branch: 5 in the paper, 3 in torchvision's port.
    """
    n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj = row
    branch1 = conv_unit(x, n1x1, 1, f"{name}_1x1")
    branch2 = conv_unit(x, n3x3_reduce, 1, f"{name}_3x3_reduce")
    branch2 = conv_unit(branch2, n3x3, 3, f"{name}_3x3")
    branch3 = conv_unit(x, n5x5_reduce, 1, f"{name}_5x5_reduce")
    branch3 = conv_unit(branch3, n5x5, wide_kernel, f"{name}_5x5")
    branch4 = layers.MaxPooling2D(3, 1, padding="same", name=f"{name}_pool")(x)
    branch4 = conv_unit(branch4, pool_proj, 1, f"{name}_pool_proj")
    return layers.Concatenate(axis=-1, name=f"{name}_output")([branch1, branch2, branch3, branch4])
