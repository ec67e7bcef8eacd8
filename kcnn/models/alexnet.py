"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) and ZFNet (Zeiler, Fergus 2013) as one family.

The variants are rows of one table: five convolutions ``(filters, kernel, stride,
padding)``, the max pools after conv 1, 2 and 5 ``(size, stride, padding)``, LRN
or not, and the input size.

- ``paper``: 96-256-384-384-256, LRN after conv1/conv2, overlapping 3x3/2 pooling,
  dropout 0.5, 227x227 input (the size the paper's 55x55 conv1 output implies).
  ``towers=2`` splits conv2, conv4 and conv5 into the paper's two GPU towers
  (60,965,224 parameters; one tower: 62,378,344).
- ``torchvision``: the single-tower 64-192-384-256-256 network torchvision ships
  (61,100,840 parameters), no LRN, 224x224.
- ``zfnet``: conv1 7x7/2, conv2 stride 2 (ZFNet, Figure 3), 224x224 input;
  padding chosen so the maps are the paper's 110-55-26-13-13-6.

>>> import kcnn
>>> kcnn.build("alexnet", variant="torchvision").count_params()
61100840
>>> kcnn.build("alexnet", towers=2).count_params()
60965224
"""

from kcnn.layers import LocalResponseNormalization, conv, max_pool
from kcnn.models.heads import dense_classifier, without_top

ALEXNET_VARIANTS = {
    "paper": dict(
        convs=((96, 11, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)),
        pools={1: (3, 2, 0), 2: (3, 2, 0), 5: (3, 2, 0)}, lrn=True, input_size=227,
    ),
    "torchvision": dict(
        convs=((64, 11, 4, 2), (192, 5, 1, 2), (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1)),
        pools={1: (3, 2, 0), 2: (3, 2, 0), 5: (3, 2, 0)}, lrn=False, input_size=224,
    ),
    "zfnet": dict(
        convs=((96, 7, 2, 1), (256, 5, 2, 0), (384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)),
        pools={1: (3, 2, 1), 2: (3, 2, 1), 5: (3, 2, 0)}, lrn=True, input_size=224,
    ),
}
TOWER_SPLIT_CONVS = (2, 4, 5)  # the paper's convolutions that see only their own GPU's maps


def _check_ints(name, values, count):
    if len(values) != count or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{name} must be {count} positive integers, got {values!r}")


def build_alexnet(inputs, *, include_top, pooling, classes, classifier_activation,
                  variant="paper", towers=1, lrn=None, widths=None, conv1_kernel=None,
                  conv1_stride=None, dropout=0.5, fc_units=(4096, 4096)):
    """``widths``/``conv1_kernel``/``conv1_stride``/``lrn`` override the variant's table row."""
    if variant not in ALEXNET_VARIANTS:
        raise ValueError(f"unknown alexnet variant {variant!r}; accepted: {', '.join(ALEXNET_VARIANTS)}")
    if towers not in (1, 2):
        raise ValueError(f"towers must be 1 or 2, got {towers!r}")
    row = ALEXNET_VARIANTS[variant]
    convs = [list(c) for c in row["convs"]]
    if widths is not None:
        _check_ints("widths", tuple(widths), 5)
        for spec, width in zip(convs, widths):
            spec[0] = width
    if conv1_kernel is not None:
        _check_ints("conv1_kernel", (conv1_kernel,), 1)
        convs[0][1] = conv1_kernel
    if conv1_stride is not None:
        _check_ints("conv1_stride", (conv1_stride,), 1)
        convs[0][2] = conv1_stride
    if towers == 2 and any(convs[i - 1][0] % 2 for i in (1, *TOWER_SPLIT_CONVS)):
        raise ValueError(f"towers=2 needs even widths, got {[c[0] for c in convs]}")
    use_lrn = row["lrn"] if lrn is None else bool(lrn)

    x = inputs
    for i, (filters, kernel, stride, padding) in enumerate(convs, start=1):
        groups = towers if i in TOWER_SPLIT_CONVS else 1
        x = conv(x, filters, kernel, strides=stride, padding=padding, groups=groups,
                 activation="relu", name=f"conv{i}")
        if use_lrn and i in (1, 2):
            x = LocalResponseNormalization(name=f"conv{i}_norm")(x)
        if i in row["pools"]:
            size, stride, padding = row["pools"][i]
            x = max_pool(x, size, stride, padding=padding, name=f"pool{i}")
    if not include_top:
        return without_top(x, pooling)
    return dense_classifier(x, classes, classifier_activation, units=tuple(fc_units), dropout=dropout)
