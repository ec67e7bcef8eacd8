"""Parameter and MAC counts against independent references: torchvision 0.29.1 and the lecture's tables."""

import pytest

import kcnn

# torchvision 0.29.1 `num_params` and `GFLOPS` (= multiply-adds) of its ImageNet models.
TORCHVISION = {
    # name: (kcnn name, options, params, GFLOPS or None)
    "alexnet": ("alexnet", {"variant": "torchvision"}, 61_100_840, 0.714),
    "vgg11": ("vgg11", {}, 132_863_336, None),
    "vgg13": ("vgg13", {}, 133_047_848, None),
    "vgg16": ("vgg16", {}, 138_357_544, 15.47),
    "vgg19": ("vgg19", {}, 143_667_240, None),
    "vgg11_bn": ("vgg11_bn", {}, 132_868_840, None),
    "vgg16_bn": ("vgg16_bn", {}, 138_365_992, None),
    "googlenet": ("googlenet", {"variant": "torchvision"}, 6_624_904, 1.50),
    "resnet18": ("resnet18", {"version": "v1.5"}, 11_689_512, 1.814),
    "resnet34": ("resnet34", {"version": "v1.5"}, 21_797_672, 3.664),
    "resnet50": ("resnet50", {"version": "v1.5"}, 25_557_032, 4.089),
    "resnet101": ("resnet101", {"version": "v1.5"}, 44_549_160, 7.801),
    "resnet152": ("resnet152", {"version": "v1.5"}, 60_192_808, 11.514),
}


@pytest.mark.parametrize("reference", sorted(TORCHVISION))
def test_torchvision_params_exact_and_macs_within_2_percent(reference):
    name, options, params, gflops = TORCHVISION[reference]
    counts = kcnn.profile(name, **options)
    assert counts.params == params
    if gflops is not None:
        assert counts.macs / 1e9 == pytest.approx(gflops, rel=0.02)


@pytest.mark.parametrize("depth,gflops", [(18, 1.8), (34, 3.6), (50, 3.8), (101, 7.6), (152, 11.3)])
def test_resnet_v1_flops_match_the_lecture_table(depth, gflops):
    """Table 1's FLOPs (multiply-adds), printed with one decimal (3.66 as 3.6, 7.57 as 7.6: within 0.1)."""
    assert kcnn.profile(f"resnet{depth}").macs / 1e9 == pytest.approx(gflops, abs=0.1)


@pytest.mark.parametrize("depth,millions", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)])
def test_cifar_resnet_params_match_table_6(depth, millions):
    params = kcnn.profile(f"resnet{depth}").params
    digits = 2 if millions < 1 else 1
    assert round(params / 1e6, digits) == millions


def test_plain_twins_have_the_residual_nets_parameters_less_nothing():
    """Option A shortcuts are parameter-free: CIFAR plain and residual nets have equal counts (Figure 4's setup)."""
    assert kcnn.profile("plain56").params == kcnn.profile("resnet56").params
    assert kcnn.profile("plain34").params == kcnn.profile("resnet34", shortcut="A").params


def test_lenet5_counts():
    """61,706 with full C3, 60,806 with the paper's Table I connections (10 classes, 32x32x1)."""
    assert kcnn.profile("lenet5").params == 61_706
    assert kcnn.profile("lenet5", connection_table=True).params == 60_806


def test_alexnet_and_zfnet_near_the_lectures_60_million():
    """The lecture: AlexNet 60M, ZFNet 'same as AlexNet'. Two towers give the paper's 60,965,224."""
    assert kcnn.profile("alexnet", towers=2).params == 60_965_224
    for name in ("alexnet", "zfnet"):
        assert round(kcnn.profile(name).params / 1e6, -1) == 60


def test_lecture_headline_counts():
    assert round(kcnn.profile("vgg16").params / 1e6) == 138
    assert kcnn.profile("lenet5").params == pytest.approx(60_000, rel=0.03)  # "60 Thousand"
    # GoogLeNet "4 Million" is the paper's ballpark; the network itself holds about 7M.
    assert 4e6 < kcnn.profile("inception_v1").params < 7.1e6


# The lecture's GoogLeNet table, inception rows: input channels, output size,
# #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, printed params (K = 1024 weights), printed ops (M).
GOOGLENET_TABLE = {
    "inception_3a": (192, 28, 64, 96, 128, 16, 32, 32, 159, 128),
    "inception_3b": (256, 28, 128, 128, 192, 32, 96, 64, 380, 304),
    "inception_4a": (480, 14, 192, 96, 208, 16, 48, 64, 364, 73),
    "inception_4b": (512, 14, 160, 112, 224, 24, 64, 64, 437, 88),
    "inception_4c": (512, 14, 128, 128, 256, 24, 64, 64, 463, 100),
    "inception_4d": (512, 14, 112, 144, 288, 32, 64, 64, 580, 119),
    "inception_4e": (528, 14, 256, 160, 320, 32, 128, 128, 840, 170),
    "inception_5a": (832, 7, 256, 160, 320, 32, 128, 128, 1072, 54),
    "inception_5b": (832, 7, 384, 192, 384, 48, 128, 128, 1388, 71),
}
# Printed figures that the table's own columns do not give (more than 3% off its arithmetic):
# 4c params 463K (its widths give 497.5K; its 100M ops agree with 497.5K), 5a params 1072K
# (1018K) and ops 54M (51.1M). Outside the inception rows: conv1 prints 2.7K / 34M where
# 7x7x3x64 weights are 9.4K and 118M multiply-adds at 112x112.
LECTURE_ARITHMETIC_OFF = {("inception_4c", "params"), ("inception_5a", "params"), ("inception_5a", "ops")}


def _table_arithmetic(row):
    """Weights and multiply-adds of an inception row, from the table's columns alone."""
    inputs, size, n1, r3, n3, r5, n5, proj = row[:8]
    weights = inputs * (n1 + r3 + r5 + proj) + 9 * r3 * n3 + 25 * r5 * n5
    return weights, weights * size * size


@pytest.mark.parametrize("block", sorted(GOOGLENET_TABLE))
def test_googlenet_rows_match_the_lecture_table(block):
    row = GOOGLENET_TABLE[block]
    weights, ops = _table_arithmetic(row)
    counts = kcnn.profile("inception_v1")
    layers = [r for r in counts.rows if r.name.startswith(block + "_") and r.convs]
    biases = sum(r.output_shape[-1] for r in layers)
    assert sum(r.params for r in layers) - biases == weights  # the model is the table
    assert sum(r.macs for r in layers) == ops
    printed_k, printed_m = row[8:]
    off = {kind for (name, kind) in LECTURE_ARITHMETIC_OFF if name == block}
    assert (abs(weights / 1024 / printed_k - 1) <= 0.03) == ("params" not in off)
    assert (abs(ops / 1e6 / printed_m - 1) <= 0.03) == ("ops" not in off)


def test_googlenet_stem_and_classifier_rows():
    blocks = {row.name: row for row in kcnn.profile("inception_v1").blocks()}
    assert blocks["conv2"].params - 64 - 192 == 114_688  # printed 112K (= 114,688 / 1024)
    assert round(blocks["conv2"].macs / 1e6) == 360
    assert blocks["predictions"].params == 1_025_000 and blocks["predictions"].macs == 1_024_000  # 1000K, 1M
    conv1 = blocks["conv1"]  # printed 2.7K / 34M: see LECTURE_ARITHMETIC_OFF
    assert conv1.params == 7 * 7 * 3 * 64 + 64 and conv1.macs == 7 * 7 * 3 * 64 * 112 * 112


def _googlenet_blocks():
    return {row.name: row for row in kcnn.profile("inception_v1").blocks()}


def test_googlenet_output_sizes_follow_the_table():
    sizes = {name: row.output_shape for name, row in _googlenet_blocks().items()}
    assert sizes["conv1"] == (112, 112, 64) and sizes["conv2"] == (56, 56, 192)
    assert sizes["inception_3b"] == (28, 28, 480) and sizes["inception_4e"] == (14, 14, 832)
    assert sizes["inception_5b"] == (7, 7, 1024) and sizes["predictions"] == (1000,)


def test_keras_count_adds_batch_norm_moving_statistics():
    counts = kcnn.profile("resnet50")
    batch_norm_channels = sum(r.output_shape[-1] for r in counts.rows if r.type == "BatchNormalization")
    assert counts.keras_params == counts.params + 2 * batch_norm_channels
    assert counts.keras_params == kcnn.build("resnet50").count_params()
