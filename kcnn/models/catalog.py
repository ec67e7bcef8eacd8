"""The zoo as data: every architecture of the lecture, registered by name.

``lecture`` holds what the lecture (CV Fall 2022, lecture 12) reports for the
network, verbatim: parameters, FLOPs (multiply-adds) and ImageNet or CIFAR-10 error.
"""

from kcnn.models.alexnet import build_alexnet
from kcnn.models.googlenet import build_googlenet
from kcnn.models.lenet import build_lenet
from kcnn.models.resnet import IMAGENET_STAGES, build_cifar_resnet, build_resnet
from kcnn.models.vgg import VGG_BLOCKS, build_vgg
from kcnn.registry import ModelSpec, register

IMAGENET = dict(input_shape=(224, 224, 3), classes=1000, dataset="imagenet")
CIFAR10 = dict(input_shape=(32, 32, 3), classes=10, dataset="cifar10")
RESNET_PAPER = "He et al., Deep Residual Learning for Image Recognition, 2015"

register(ModelSpec(
    name="lenet5", family="lenet", builder=build_lenet, options={},
    input_shape=(32, 32, 1), classes=10, dataset="mnist", year=1998,
    paper="LeCun et al., Gradient-Based Learning Applied to Document Recognition, 1998",
    lecture={"params": "60 thousand"}, block_pattern=r"^([a-z]\d)",
    description="conv 6@5x5, subsample, conv 16@5x5, subsample, conv 120, FC 84, classes"))

register(ModelSpec(
    name="alexnet", family="alexnet", builder=build_alexnet, options={},
    **{**IMAGENET, "input_shape": (227, 227, 3)}, year=2012,
    paper="Krizhevsky, Sutskever, Hinton, ImageNet Classification with Deep CNNs, 2012",
    lecture={"params": "60 Million", "top5_error": "15.3 %"}, block_pattern=r"^(conv\d|pool\d|fc\d)",
    description="5 conv (96-256-384-384-256) + LRN + overlapping pooling, 3 FC"))

register(ModelSpec(
    name="zfnet", family="alexnet", builder=build_alexnet, options={"variant": "zfnet"},
    **IMAGENET, year=2013,
    paper="Zeiler, Fergus, Visualizing and Understanding Convolutional Networks, 2013",
    lecture={"params": "60MM (same as AlexNet)", "top5_error": "14.8 %"},
    block_pattern=r"^(conv\d|pool\d|fc\d)",
    description="AlexNet with conv1 7x7/2 and conv2 stride 2"))

for _depth in VGG_BLOCKS:
    for _bn in (False, True):
        register(ModelSpec(
            name=f"vgg{_depth}{'_bn' if _bn else ''}", family="vgg", builder=build_vgg,
            options={"depth": _depth, "bn": _bn}, **IMAGENET, year=2014,
            paper="Simonyan, Zisserman, Very Deep Convolutional Networks, 2014",
            lecture={"params": "138 Million", "top5_error": "7.3 %"} if _depth == 16 and not _bn else {},
            block_pattern=r"^(block\d|fc\d)",
            description=f"{_depth} weight layers, 3x3 convolutions{', batch norm' if _bn else ''}"))

register(ModelSpec(
    name="inception_v1", family="googlenet", builder=build_googlenet, options={},
    **IMAGENET, year=2014, aliases=("googlenet",),
    paper="Szegedy et al., Going Deeper with Convolutions, 2014",
    lecture={"params": "4 Million", "top5_error": "6.67 %"},
    block_pattern=r"^(inception_\d[a-e]|aux\d|conv\d|pool\d|norm\d)",
    description="22 layers, 9 inception modules"))

_RESNET_LECTURE = {  # Table 1 FLOPs; Table 4 single-model ImageNet validation errors (top-1 / top-5)
    18: {"flops": "1.8x10^9"},
    34: {"flops": "3.6x10^9", "top1_error": "21.84 % (B) / 21.53 % (C)", "top5_error": "5.71 % (B) / 5.60 % (C)"},
    50: {"flops": "3.8x10^9", "top1_error": "20.74 %", "top5_error": "5.25 %"},
    101: {"flops": "7.6x10^9", "top1_error": "19.87 %", "top5_error": "4.60 %"},
    152: {"flops": "11.3x10^9", "top1_error": "19.38 %", "top5_error": "4.49 %"},
}
for _depth in IMAGENET_STAGES:
    register(ModelSpec(
        name=f"resnet{_depth}", family="resnet", builder=build_resnet, options={"depth": _depth, "plain": False},
        **IMAGENET, year=2015, paper=RESNET_PAPER, lecture=_RESNET_LECTURE[_depth],
        block_pattern=r"^(conv\d|pool\d)", description=f"{_depth}-layer residual network"))
for _depth in (18, 34):
    register(ModelSpec(
        name=f"plain{_depth}", family="resnet", builder=build_resnet,
        options={"depth": _depth, "plain": True}, **IMAGENET, year=2015, paper=RESNET_PAPER,
        block_pattern=r"^(conv\d|pool\d)", description=f"resnet{_depth} without shortcuts (Figure 4)"))

_CIFAR_LECTURE = {  # Table 6: params and CIFAR-10 test error
    20: ("0.27M", "8.75 %"), 32: ("0.46M", "7.51 %"), 44: ("0.66M", "7.17 %"),
    56: ("0.85M", "6.97 %"), 110: ("1.7M", "6.43 %"), 1202: ("19.4M", "7.93 %"),
}
for _depth, (_params, _error) in _CIFAR_LECTURE.items():
    register(ModelSpec(
        name=f"resnet{_depth}", family="cifar_resnet", builder=build_cifar_resnet,
        options={"depth": _depth, "plain": False}, **CIFAR10, year=2015, paper=RESNET_PAPER,
        lecture={"params": _params, "error": _error}, block_pattern=r"^(conv\d)",
        description=f"CIFAR ResNet, n={(_depth - 2) // 6}, option-A shortcuts"))
for _depth in (20, 32, 44, 56, 110):
    register(ModelSpec(
        name=f"plain{_depth}", family="cifar_resnet", builder=build_cifar_resnet,
        options={"depth": _depth, "plain": True}, **CIFAR10, year=2015, paper=RESNET_PAPER,
        block_pattern=r"^(conv\d)", description=f"resnet{_depth} without shortcuts"))
