"""Backbones: every zoo model yields multi-scale features whose sizes match their strides."""

import numpy as np
import pytest

import kcnn

# Independent expectations: keras.applications / keras-hub ResNet50 pyramid taps.
RESNET50_TAPS = {"P2": "conv2_block3_out", "P3": "conv3_block4_out", "P4": "conv4_block6_out",
                 "P5": "conv5_block3_out"}


@pytest.mark.parametrize("name", [n for n in kcnn.list_models() if n != "resnet1202"])
def test_feature_maps_have_their_stride(name):
    spec = kcnn.model_info(name)
    size = 64 if spec.dataset != "imagenet" else 224
    model = kcnn.backbone(name, input_shape=(size, size, spec.input_shape[2]))
    features = model(np.zeros((1, size, size, spec.input_shape[2]), "float32"))
    assert list(features) == [info["level"] for info in model.feature_info]
    assert len(features) >= 3
    for info in model.feature_info:
        feature = features[info["level"]]
        assert feature.shape[-1] == info["channels"]
        if spec.family in ("resnet", "cifar_resnet", "vgg", "googlenet"):  # padded so that size / stride is exact
            assert feature.shape[1] == size // info["stride"], info
        else:  # valid convolutions trim the borders (LeNet, AlexNet, ZFNet)
            assert size // info["stride"] // 2 <= feature.shape[1] <= size // info["stride"] + 1, info


def test_resnet50_taps_are_the_stage_outputs():
    model = kcnn.backbone("resnet50", levels=["P2", "P3", "P4", "P5"])
    assert {f["level"]: f["layer"] for f in model.feature_info} == RESNET50_TAPS
    assert [f["channels"] for f in model.feature_info] == [256, 512, 1024, 2048]


def test_backbone_takes_any_input_size_and_variant_options():
    model = kcnn.backbone("resnet18", version="v1.5", levels=["P3", "P5"])
    features = model(np.zeros((1, 96, 160, 3), "float32"))
    assert features["P3"].shape == (1, 12, 20, 128) and features["P5"].shape == (1, 3, 5, 512)


def test_googlenet_taps_are_module_outputs():
    taps = kcnn.feature_taps(kcnn.build("inception_v1", include_top=False))
    assert taps["P3"] == "inception_3b_output" and taps["P4"] == "inception_4e_output"
    assert taps["P5"] == "inception_5b_output"


def test_unknown_level_is_refused():
    with pytest.raises(ValueError, match="has no feature level 'P6'|has no feature level P6"):
        kcnn.backbone("resnet20", levels=["P6"])
