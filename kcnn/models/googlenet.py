"""GoogLeNet / Inception-v1 (Szegedy et al. 2014), the network of the lecture's GoogLeNet table.

- ``paper``: convolutions with bias and ReLU, LRN after the first two stages (size 5,
  alpha 1e-4 averaged over the window, beta 0.75, k 1: the BVLC reference's settings),
  "5x5" branches with 5x5 kernels, dropout 40%, auxiliary classifiers after
  4a and 4d (``aux_logits=True``; 5x5/3 average pool, 1x1 conv 128, fc 1024,
  dropout 70%).
- ``torchvision``: the port torchvision ships — conv + BN (eps 1e-3) + ReLU, no
  LRN, a 3x3 kernel in the "5x5" branch, a 2x2 pool before stage 5, dropout 20%
  (6,624,904 parameters without the auxiliary classifiers); its auxiliary heads
  pool adaptively to 4x4.

Max pools round their output size up (``ceil_mode``), as in Caffe and torchvision.

With ``aux_logits=True`` the model returns a dict: ``predictions``, ``aux1``, ``aux2``.

>>> import kcnn
>>> kcnn.profile("googlenet", variant="torchvision").params  # torchvision's count, without aux heads
6624904
"""

from keras import layers

from kcnn.layers import LocalResponseNormalization, conv, conv_bn_act, inception_module, max_pool
from kcnn.models.heads import pooled_classifier, predictions, without_top

# The lecture's table: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj); "pool" rows are 3x3/2 max pools.
INCEPTION_V1_TABLE = (
    ("inception_3a", (64, 96, 128, 16, 32, 32)),
    ("inception_3b", (128, 128, 192, 32, 96, 64)),
    ("pool3", None),
    ("inception_4a", (192, 96, 208, 16, 48, 64)),
    ("inception_4b", (160, 112, 224, 24, 64, 64)),
    ("inception_4c", (128, 128, 256, 24, 64, 64)),
    ("inception_4d", (112, 144, 288, 32, 64, 64)),
    ("inception_4e", (256, 160, 320, 32, 128, 128)),
    ("pool4", None),
    ("inception_5a", (256, 160, 320, 32, 128, 128)),
    ("inception_5b", (384, 192, 384, 48, 128, 128)),
)
AUX_AFTER = {"inception_4a": "aux1", "inception_4d": "aux2"}

GOOGLENET_VARIANTS = {
    "paper": dict(batch_norm=False, lrn=True, wide_kernel=5, pool4_size=3, dropout=0.4, aux_pool="5x5/3"),
    "torchvision": dict(batch_norm=True, lrn=False, wide_kernel=3, pool4_size=2, dropout=0.2, aux_pool="adaptive"),
}


def _conv_unit(batch_norm):
    """``unit(x, filters, kernel, name, strides=1)``: conv+BN+ReLU (torchvision) or conv+ReLU (paper)."""
    if batch_norm:
        return lambda x, filters, kernel, name, strides=1: conv_bn_act(
            x, filters, kernel, strides=strides, bn_epsilon=1e-3, name=name)
    return lambda x, filters, kernel, name, strides=1: conv(
        x, filters, kernel, strides=strides, activation="relu", name=name)


def _aux_classifier(x, classes, activation, conv_unit, pool, name):
    if pool == "adaptive":
        x = layers.AdaptiveAveragePooling2D(4, name=f"{name}_pool")(x)
    else:
        x = layers.AveragePooling2D(5, 3, name=f"{name}_pool")(x)
    x = conv_unit(x, 128, 1, f"{name}_conv")
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", name=f"{name}_fc")(x)
    x = layers.Dropout(0.7, name=f"{name}_dropout")(x)
    return predictions(x, classes, activation, name=f"{name}_predictions")


def build_googlenet(inputs, *, include_top, pooling, classes, classifier_activation,
                    variant="paper", aux_logits=False, dropout=None):
    """The stem, nine inception modules from ``INCEPTION_V1_TABLE``, and the classifier."""
    if variant not in GOOGLENET_VARIANTS:
        raise ValueError(f"unknown inception_v1 variant {variant!r}; accepted: {', '.join(GOOGLENET_VARIANTS)}")
    row = GOOGLENET_VARIANTS[variant]
    unit = _conv_unit(row["batch_norm"])

    x = unit(inputs, 64, 7, "conv1", strides=2)
    x = max_pool(x, 3, 2, ceil_mode=True, name="pool1")
    if row["lrn"]:
        x = LocalResponseNormalization(alpha=2e-5, bias=1.0, name="norm1")(x)
    x = unit(x, 64, 1, "conv2_reduce")
    x = unit(x, 192, 3, "conv2")
    if row["lrn"]:
        x = LocalResponseNormalization(alpha=2e-5, bias=1.0, name="norm2")(x)
    x = max_pool(x, 3, 2, ceil_mode=True, name="pool2")

    aux_outputs = {}
    for name, table_row in INCEPTION_V1_TABLE:
        if table_row is None:
            size = row["pool4_size"] if name == "pool4" else 3
            x = max_pool(x, size, 2, ceil_mode=True, name=name)
            continue
        x = inception_module(x, table_row, conv_unit=unit, wide_kernel=row["wide_kernel"], name=name)
        if aux_logits and include_top and name in AUX_AFTER:
            aux = AUX_AFTER[name]
            aux_outputs[aux] = _aux_classifier(x, classes, classifier_activation, unit, row["aux_pool"], aux)
    if not include_top:
        return without_top(x, pooling)
    rate = row["dropout"] if dropout is None else dropout
    main = pooled_classifier(x, classes, classifier_activation, dropout=rate)
    return {"predictions": main, **aux_outputs} if aux_outputs else main
