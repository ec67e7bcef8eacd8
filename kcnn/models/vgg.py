"""VGG-11/13/16/19 (Simonyan, Zisserman 2014, Table 1 configurations A, B, D, E), with or without BN.

Layer names are keras.applications' (``block1_conv1`` ... ``fc1``, ``fc2``,
``predictions``), so its VGG16/VGG19 weights port by name. The BN variants keep
the convolution bias, like torchvision's ``vgg*_bn``.

>>> import kcnn
>>> kcnn.build("vgg16").count_params()
138357544
"""

from keras import layers

from kcnn.layers import batch_norm, conv, scaled_widths
from kcnn.models.heads import dense_classifier, without_top

VGG_BLOCKS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)


def build_vgg(inputs, *, include_top, pooling, classes, classifier_activation, depth,
              bn=False, dropout=0.5, fc_units=(4096, 4096), width_multiplier=1.0):
    """Five blocks of 3x3 convolutions, each closed by a 2x2/2 max pool; ``width_multiplier`` scales
    the convolutions' widths (64..512)."""
    x = inputs
    widths = scaled_widths(VGG_WIDTHS, width_multiplier)
    for block, (convs, width) in enumerate(zip(VGG_BLOCKS[depth], widths), start=1):
        for i in range(1, convs + 1):
            name = f"block{block}_conv{i}"
            if bn:
                x = conv(x, width, 3, name=name)
                x = batch_norm(x, name=f"{name}_bn")
                x = layers.Activation("relu", name=f"{name}_relu")(x)
            else:
                x = conv(x, width, 3, activation="relu", name=name)
        x = layers.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)
    if not include_top:
        return without_top(x, pooling)
    return dense_classifier(x, classes, classifier_activation, units=tuple(fc_units), dropout=dropout)
