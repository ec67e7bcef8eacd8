"""Where each kcnn layer's tensors live in torchvision's and timm's state dicts.

``module_names(family, library, layer_names, options)`` maps every weighted kcnn
layer to the PyTorch module holding its tensors (``conv2_block1_1_conv`` ->
``layer1.0.conv1``). Tables, not code per model: a family's rules are regular
expressions over kcnn's hierarchical names, VGG's indices are counted off
``VGG_BLOCKS``.

>>> module_names("resnet", "torchvision", ["conv1_bn", "conv3_block2_1_conv", "conv4_block1_0_bn", "predictions"])
{'conv1_bn': 'bn1', 'conv3_block2_1_conv': 'layer2.1.conv1', 'conv4_block1_0_bn': 'layer3.0.downsample.1', 'predictions': 'fc'}
"""

import re

from kcnn.models.vgg import VGG_BLOCKS

LIBRARIES = ("torchvision", "timm")

RESNET_RULES = (
    (r"conv1_conv", lambda m: "conv1"),
    (r"conv1_bn", lambda m: "bn1"),
    (r"conv(\d)_block(\d+)_0_conv", lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.downsample.0"),
    (r"conv(\d)_block(\d+)_0_bn", lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.downsample.1"),
    (r"conv(\d)_block(\d+)_(\d)_(conv|bn)", lambda m: f"layer{int(m[1]) - 1}.{int(m[2]) - 1}.{m[4]}{m[3]}"),
    (r"predictions", lambda m: "fc"),
)

GOOGLENET_BRANCHES = {"1x1": "branch1", "3x3_reduce": "branch2.0", "3x3": "branch2.1",
                      "5x5_reduce": "branch3.0", "5x5": "branch3.1", "pool_proj": "branch4.1"}
GOOGLENET_STEM = {"conv1": "conv1", "conv2_reduce": "conv2", "conv2": "conv3"}  # torchvision counts convs
GOOGLENET_RULES = (
    (r"(conv1|conv2_reduce|conv2)_(conv|bn)", lambda m: f"{GOOGLENET_STEM[m[1]]}.{m[2]}"),
    (r"inception_(\d[a-e])_(1x1|3x3_reduce|3x3|5x5_reduce|5x5|pool_proj)_(conv|bn)",
     lambda m: f"inception{m[1]}.{GOOGLENET_BRANCHES[m[2]]}.{m[3]}"),
    (r"(aux\d)_conv_(conv|bn)", lambda m: f"{m[1]}.conv.{m[2]}"),
    (r"(aux\d)_fc", lambda m: f"{m[1]}.fc1"),
    (r"(aux\d)_predictions", lambda m: f"{m[1]}.fc2"),
    (r"predictions", lambda m: "fc"),
)

ALEXNET_MODULES = {  # torchvision's Sequential indices (ReLU, pool and dropout modules between)
    "conv1": "features.0", "conv2": "features.3", "conv3": "features.6", "conv4": "features.8",
    "conv5": "features.10", "fc1": "classifier.1", "fc2": "classifier.4", "predictions": "classifier.6",
}
VGG_HEADS = {
    "torchvision": {"fc1": "classifier.0", "fc2": "classifier.3", "predictions": "classifier.6"},
    "timm": {"fc1": "pre_logits.fc1", "fc2": "pre_logits.fc2", "predictions": "head.fc"},
}

# Which families each library ships in this layout.
SUPPORTED = {
    "torchvision": ("alexnet", "vgg", "googlenet", "resnet"),
    "timm": ("vgg", "resnet"),
}


def _vgg_modules(depth, bn, library):
    """``features.N`` indices: each conv is followed by BN (if any) and ReLU, each block by a pool."""
    modules, index = {}, 0
    for block, convs in enumerate(VGG_BLOCKS[depth], start=1):
        for i in range(1, convs + 1):
            modules[f"block{block}_conv{i}"] = f"features.{index}"
            if bn:
                modules[f"block{block}_conv{i}_bn"] = f"features.{index + 1}"
            index += 3 if bn else 2
        index += 1
    return {**modules, **VGG_HEADS[library]}


def _by_rules(rules, names):
    modules = {}
    for name in names:
        for pattern, module in rules:
            match = re.fullmatch(pattern, name)
            if match:
                modules[name] = module(match)
                break
    return modules


def module_names(family, library, layer_names, options=None):
    """``{kcnn layer name: PyTorch module name}`` for the given weighted layers.

    A layer without a counterpart is left out (the caller reports it as missing).
    """
    if library not in SUPPORTED:
        raise ValueError(f"unknown source library {library!r}; accepted: {', '.join(LIBRARIES)}")
    if family not in SUPPORTED[library]:
        raise ValueError(f"{library} has no {family} weights in a layout kcnn reads; "
                         f"{library} families: {', '.join(SUPPORTED[library])}")
    options = options or {}
    if family == "resnet":
        return _by_rules(RESNET_RULES, layer_names)
    if family == "googlenet":
        return _by_rules(GOOGLENET_RULES, layer_names)
    table = ALEXNET_MODULES if family == "alexnet" else _vgg_modules(options["depth"], options["bn"], library)
    return {name: table[name] for name in layer_names if name in table}
