"""ResNets (He, Zhang, Ren, Sun 2015): ImageNet (Table 1), CIFAR-10 (section 4.2) and their plain twins.

ImageNet options: ``version`` "v1" (the paper: a bottleneck's stride in its first
1x1, as keras.applications) or "v1.5" (stride in the 3x3, as torchvision);
``shortcut`` "A" (zero-padded identity), "B" (projection where the shape
changes; default) or "C" (projection everywhere); ``output_stride`` 32 (the paper),
16 or 8: the last one or two stages keep their resolution and dilate their 3x3
convolutions instead of striding (DeepLab's atrous ResNet, torchvision's
``replace_stride_with_dilation``: a stage's first block keeps the previous
dilation, its later blocks take the new one). Weights are the same tensors.
CIFAR nets have 6n+2 layers, widths 16/32/64 and option A by default.

>>> import kcnn
>>> kcnn.profile("resnet20").params, kcnn.profile("resnet50", version="v1.5").params
(269722, 25557032)
>>> kcnn.backbone("resnet50", input_shape=(64, 64, 3), output_stride=8).output["P3"].shape
(None, 8, 8, 2048)
"""

from kcnn.layers import SHORTCUTS, conv_bn_act, max_pool, residual_block, scaled_widths
from kcnn.models.heads import pooled_classifier, without_top

IMAGENET_STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)
VERSIONS = ("v1", "v1.5")
OUTPUT_STRIDES = (8, 16, 32)


def _resolve_shortcut(shortcut, plain, default):
    if plain:
        if shortcut is not None:
            raise ValueError(f"plain networks have no shortcuts; drop shortcut={shortcut!r}")
        return None
    shortcut = default if shortcut is None else str(shortcut).upper()
    if shortcut not in SHORTCUTS:
        raise ValueError(f"unknown shortcut option {shortcut!r}; accepted: {', '.join(SHORTCUTS)}")
    return shortcut


def _stages(x, kind, repeats, widths, *, shortcut, stride_in_3x3, first_stage, dilated_stages=0):
    """The residual stages; the last ``dilated_stages`` of them dilate instead of striding."""
    dilation = 1
    for stage, (blocks, width) in enumerate(zip(repeats, widths)):
        strides, previous = (2 if stage > 0 else 1), dilation
        if strides == 2 and stage >= len(repeats) - dilated_stages:
            strides, dilation = 1, dilation * 2
        for block in range(blocks):
            rates = (previous, dilation) if block == 0 else (dilation, dilation)
            x = residual_block(x, width, kind=kind, strides=strides if block == 0 else 1, shortcut=shortcut,
                               stride_in_3x3=stride_in_3x3, dilation=rates,
                               name=f"conv{stage + first_stage}_block{block + 1}")
    return x


def build_resnet(inputs, *, include_top, pooling, classes, classifier_activation, depth,
                 plain=False, version="v1", shortcut=None, output_stride=32):
    """ImageNet ResNet-18/34/50/101/152 (or plain-18/34): 7x7/2 stem, 3x3/2 pool, four stages."""
    if version not in VERSIONS:
        raise ValueError(f"unknown resnet version {version!r}; accepted: {', '.join(VERSIONS)}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"unknown output_stride {output_stride!r}; accepted: {', '.join(map(str, OUTPUT_STRIDES))}")
    shortcut = _resolve_shortcut(shortcut, plain, default="B")
    kind, repeats = IMAGENET_STAGES[depth]
    x = conv_bn_act(inputs, 64, 7, strides=2, name="conv1")
    x = max_pool(x, 3, 2, padding=1, name="pool1")
    x = _stages(x, kind, repeats, IMAGENET_WIDTHS, shortcut=shortcut,
                stride_in_3x3=version == "v1.5", first_stage=2,
                dilated_stages={32: 0, 16: 1, 8: 2}[output_stride])
    if not include_top:
        return without_top(x, pooling)
    return pooled_classifier(x, classes, classifier_activation)


def build_cifar_resnet(inputs, *, include_top, pooling, classes, classifier_activation, depth,
                       plain=False, shortcut=None, width_multiplier=1.0):
    """CIFAR ResNet-(6n+2): 3x3 conv 16, three stages of n basic blocks at 32/16/8 pixels;
    ``width_multiplier`` scales the widths 16/32/64."""
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
    shortcut = _resolve_shortcut(shortcut, plain, default="A")
    widths = scaled_widths(CIFAR_WIDTHS, width_multiplier)
    x = conv_bn_act(inputs, widths[0], 3, name="conv1")
    x = _stages(x, "basic", ((depth - 2) // 6,) * 3, widths, shortcut=shortcut,
                stride_in_3x3=True, first_stage=2)
    if not include_top:
        return without_top(x, pooling)
    return pooled_classifier(x, classes, classifier_activation)
