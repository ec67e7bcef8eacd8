"""Convolution and pooling helpers shared by every family.

Padding follows PyTorch's convention: ``padding`` zeros on every side. For a
stride-1 odd kernel that is Keras' ``"same"``; otherwise an explicit
``ZeroPadding2D`` is inserted, because TF's ``"same"`` pads asymmetrically for
stride 2 on even sizes and would shift every feature map by one pixel.

>>> import keras
>>> x = keras.Input((224, 224, 3))
>>> conv_bn_act(x, 64, 7, strides=2, name="conv1").shape
(None, 112, 112, 64)
"""

from keras import layers

CONV_INIT = "he_normal"  # He et al. 2015 initialisation, for ReLU networks


def conv(x, filters, kernel, *, strides=1, padding=None, dilation=1, groups=1,
         use_bias=True, activation=None, name):
    """A 2-D convolution with symmetric zero padding (``None``: ``dilation * (kernel - 1) // 2``)."""
    if padding is None:
        padding = dilation * (kernel - 1) // 2
    keras_padding = "valid"
    if padding and strides == 1 and 2 * padding == dilation * (kernel - 1):
        keras_padding = "same"
    elif padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    return layers.Conv2D(
        filters, kernel, strides=strides, padding=keras_padding, dilation_rate=dilation,
        groups=groups, use_bias=use_bias, activation=activation,
        kernel_initializer=CONV_INIT, name=name,
    )(x)


def scaled_widths(widths, multiplier):
    """``widths`` times ``multiplier`` (rounded, at least 1): the width knob of a search space.

    >>> scaled_widths((16, 32, 64), 1.5)
    (24, 48, 96)
    """
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier <= 0:
        raise ValueError(f"width_multiplier must be a positive number, got {multiplier!r}")
    return tuple(max(1, round(width * multiplier)) for width in widths)


def batch_norm(x, *, epsilon=1e-5, name):
    """BatchNormalization over channels with PyTorch's default epsilon and momentum (0.1 there = 0.9 here)."""
    return layers.BatchNormalization(axis=-1, epsilon=epsilon, momentum=0.9, name=name)(x)


def conv_bn_act(x, filters, kernel, *, strides=1, padding=None, dilation=1,
                activation="relu", bn_epsilon=1e-5, name):
    """``{name}_conv`` (no bias) -> ``{name}_bn`` -> ``{name}_relu`` (keras.applications names)."""
    x = conv(x, filters, kernel, strides=strides, padding=padding, dilation=dilation,
             use_bias=False, name=f"{name}_conv")
    x = batch_norm(x, epsilon=bn_epsilon, name=f"{name}_bn")
    if activation is None:
        return x
    return layers.Activation(activation, name=f"{name}_{activation}")(x)


def max_pool(x, size, strides, *, padding=0, ceil_mode=False, name):
    """Max pooling with ``padding`` zeros per side, as PyTorch's ``MaxPool2d``.

    ``ceil_mode`` rounds the output size up like PyTorch (and Caffe): the map gets
    ``strides - 1`` extra zeros at its bottom and right, so the last window may hang
    over the edge while every window still starts inside the input. TF's ``"same"``
    agrees on even sizes only: it pads the top/left too on odd ones.
    Zero padding equals PyTorch's ``-inf`` padding because every max pool of the
    zoo follows a ReLU (inputs are non-negative).

    >>> import keras
    >>> max_pool(keras.Input((111, 111, 8)), 3, 2, ceil_mode=True, name="pool").shape
    (None, 55, 55, 8)
    """
    if padding:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad")(x)
    if ceil_mode and strides > 1:
        x = layers.ZeroPadding2D(((0, strides - 1), (0, strides - 1)), name=f"{name}_ceil_pad")(x)
    return layers.MaxPooling2D(size, strides, padding="valid", name=name)(x)
