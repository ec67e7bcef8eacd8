"""ResNet building blocks (He et al. 2015): basic and bottleneck, shortcut options A/B/C, plain twins.

Names follow keras.applications (``conv2_block1_1_conv``, ``conv2_block1_0_conv`` for
the projection, ``conv2_block1_out``), so weights port by name.

>>> import keras
>>> x = keras.Input((56, 56, 64))
>>> residual_block(x, 64, kind="bottleneck", strides=1, shortcut="B", name="b").shape
(None, 56, 56, 256)
"""

from keras import layers

from kcnn.layers.common import batch_norm, conv, conv_bn_act
from kcnn.layers.custom import ChannelPadShortcut

SHORTCUTS = ("A", "B", "C")
EXPANSION = {"basic": 1, "bottleneck": 4}


def _shortcut(x, out_channels, strides, option, name):
    changes_shape = strides != 1 or x.shape[-1] != out_channels
    if option == "A":
        return ChannelPadShortcut(out_channels, strides, name=f"{name}_0_pad")(x) if changes_shape else x
    if option == "B" and not changes_shape:
        return x
    x = conv(x, out_channels, 1, strides=strides, use_bias=False, name=f"{name}_0_conv")
    return batch_norm(x, name=f"{name}_0_bn")


def residual_block(x, filters, *, kind, strides, shortcut, stride_in_3x3=True, dilation=(1, 1), name):
    """One block. ``shortcut`` is "A", "B", "C", or ``None`` for the plain (shortcut-free) twin.

    ``stride_in_3x3`` places a bottleneck's stride in its 3x3 (v1.5) instead of its first 1x1 (v1).
    ``dilation`` gives the dilation of the block's first and later 3x3 convolutions (a
    basic block has two, a bottleneck one: the first); dilation changes no weight shape.
    """
    out_channels = filters * EXPANSION[kind]
    residual = None if shortcut is None else _shortcut(x, out_channels, strides, shortcut, name)
    if kind == "basic":
        y = conv_bn_act(x, filters, 3, strides=strides, dilation=dilation[0], name=f"{name}_1")
        y = conv_bn_act(y, out_channels, 3, activation=None, dilation=dilation[1], name=f"{name}_2")
    else:
        y = conv_bn_act(x, filters, 1, strides=1 if stride_in_3x3 else strides, name=f"{name}_1")
        y = conv_bn_act(y, filters, 3, strides=strides if stride_in_3x3 else 1, dilation=dilation[0],
                        name=f"{name}_2")
        y = conv_bn_act(y, out_channels, 1, activation=None, name=f"{name}_3")
    if residual is not None:
        y = layers.Add(name=f"{name}_add")([residual, y])
    return layers.Activation("relu", name=f"{name}_out")(y)
