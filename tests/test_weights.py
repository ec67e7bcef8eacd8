"""Importing other libraries' weights: logits parity (keras.applications .h5, timm .safetensors), metadata,
variant selection by ``kcnn.build(weights=...)``, and every mismatch named."""

import hashlib
import os
import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import kcnn
from helpers import randomise, torch_state_dict, write_legacy_h5
from kcnn.weights import PRESETS, read_metadata
from kcnn.weights.importer import import_weights

KERAS_APPLICATIONS = {"vgg16": keras.applications.VGG16, "resnet50": keras.applications.ResNet50}


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (2, *shape)).astype("float32")


def _keras_application(name, **kwargs):
    keras.utils.set_random_seed(0)
    model = KERAS_APPLICATIONS[name](weights=None, classifier_activation=None, **kwargs)
    randomise(model, np.random.default_rng(0))
    return model


@pytest.mark.parametrize("name", sorted(KERAS_APPLICATIONS))
def test_keras_applications_h5_gives_the_same_logits(name, tmp_path):
    source = _keras_application(name)
    write_legacy_h5(source, tmp_path / f"{name}.h5")
    metadata = import_weights("keras", name, tmp_path / f"{name}.h5", tmp_path / "out.weights.h5")
    model = kcnn.build(name, weights=tmp_path / "out.weights.h5", classifier_activation=None)

    images = _images((224, 224, 3))
    expected = source.predict(images, verbose=0)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=0, atol=1e-4)
    assert metadata["options"] == ({"version": "v1"} if name == "resnet50" else {})
    assert model.preprocessing == PRESETS["caffe"]
    assert metadata["class_names"][:2] == ["tench", "goldfish"] and len(metadata["class_names"]) == 1000
    assert metadata["source"]["sha256"] == hashlib.sha256((tmp_path / f"{name}.h5").read_bytes()).hexdigest()


def test_keras_notop_file_loads_as_a_backbone_at_another_size(tmp_path):
    source = _keras_application("vgg16", include_top=False, input_shape=(160, 192, 3))
    write_legacy_h5(source, tmp_path / "vgg16_notop.h5")
    metadata = import_weights("keras", "vgg16", tmp_path / "vgg16_notop.h5", tmp_path / "vgg.weights.h5")
    assert metadata["include_top"] is False
    with pytest.raises(ValueError, match="has no classifier; pass include_top=False"):
        kcnn.build("vgg16", weights=tmp_path / "vgg.weights.h5")
    model = kcnn.build("vgg16", include_top=False, input_shape=(160, 192, 3), weights=tmp_path / "vgg.weights.h5")
    images = _images((160, 192, 3))
    np.testing.assert_allclose(model.predict(images, verbose=0), source.predict(images, verbose=0),
                               rtol=0, atol=1e-4)


def _timm_vgg16_tensors(model):
    """keras.applications VGG16 -> timm's layout, written independently of kcnn's tables:
    ``features.N`` counts conv, ReLU and pool modules; fc6/fc7 are 7x7 and 1x1 convolutions."""
    tensors, index = {}, 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            tensors[f"features.{index}.weight"] = kernel.transpose(3, 2, 0, 1)
            tensors[f"features.{index}.bias"] = bias
            index += 2
        elif isinstance(layer, keras.layers.MaxPooling2D):
            index += 1
    fc1, fc1_bias = model.get_layer("fc1").get_weights()
    fc2, fc2_bias = model.get_layer("fc2").get_weights()
    head, head_bias = model.get_layer("predictions").get_weights()
    tensors.update({
        "pre_logits.fc1.weight": fc1.reshape(7, 7, 512, 4096).transpose(3, 2, 0, 1), "pre_logits.fc1.bias": fc1_bias,
        "pre_logits.fc2.weight": fc2.T.reshape(4096, 4096, 1, 1), "pre_logits.fc2.bias": fc2_bias,
        "head.fc.weight": head.T, "head.fc.bias": head_bias,
    })
    return {key: np.ascontiguousarray(value) for key, value in tensors.items()}


def test_timm_safetensors_gives_the_same_logits(tmp_path):
    source = _keras_application("vgg16")
    save_file(_timm_vgg16_tensors(source), str(tmp_path / "model.safetensors"))
    import_weights("timm", "vgg16", tmp_path / "model.safetensors", tmp_path / "vgg16.weights.h5")
    model = kcnn.build("vgg16", weights=tmp_path / "vgg16.weights.h5", classifier_activation=None)
    images = _images((224, 224, 3))
    expected = source.predict(images, verbose=0)
    assert np.abs(expected).max() > 1e-2
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, rtol=0, atol=1e-4)
    assert model.preprocessing == PRESETS["torch"]


@pytest.fixture(scope="module")
def resnet50_timm_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("timm")
    source = kcnn.build("resnet50", version="v1.5")
    save_file(torch_state_dict(source, "timm"), str(folder / "model.safetensors"))
    import_weights("timm", "resnet50", folder / "model.safetensors", folder / "resnet50.weights.h5")
    return folder / "resnet50.weights.h5", source


def test_the_file_builds_the_variant_it_holds(resnet50_timm_file):
    path, _ = resnet50_timm_file
    model = kcnn.build("resnet50", weights=path)
    assert read_metadata(path)["options"] == {"version": "v1.5"}
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2)  # v1.5: the stride sits in the 3x3
    assert model.get_layer("conv3_block1_1_conv").strides == (1, 1)
    with pytest.raises(ValueError, match=r"holds the version='v1.5' variant of resnet50; drop version='v1'"):
        kcnn.build("resnet50", weights=path, version="v1")
    with pytest.raises(ValueError, match="holds resnet50 weights, not resnet101"):
        kcnn.build("resnet101", weights=path)
    with pytest.raises(ValueError, match="has a 1000-class classifier, not 10"):
        kcnn.build("resnet50", weights=path, classes=10)


def test_headless_model_at_another_size_gets_the_same_weights(resnet50_timm_file):
    path, source = resnet50_timm_file
    model = kcnn.build("resnet50", weights=path, include_top=False, pooling="avg", input_shape=(160, 128, 3))
    for layer in (layer for layer in model.layers if layer.weights):
        for got, want in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(got, want)
    assert len([layer for layer in model.layers if layer.weights]) == len(
        [layer for layer in source.layers if layer.weights]) - 1  # everything but the classifier


@pytest.fixture(scope="module")
def resnet18_tensors():
    return torch_state_dict(kcnn.build("resnet18", version="v1.5"), "timm")


def _write(tensors, path):
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("damage, message", [
    (lambda t: t.pop("layer2.0.bn1.running_var"), r"missing tensor 'layer2.0.bn1.running_var'.*shape \(128,\)"),
    (lambda t: t.update({"layer9.0.conv1.weight": np.zeros((1,), "float32")}),
     "unexpected tensor.*layer9.0.conv1.weight"),
    (lambda t: t.update({"layer1.0.conv2.weight": np.zeros((64, 64, 1, 1), "float32")}),
     r"tensor 'layer1.0.conv2.weight' has shape \(64, 64, 1, 1\); kcnn layer 'conv2_block1_2_conv' needs "
     r"\(64, 64, 3, 3\)"),
])
def test_mismatched_tensors_are_named_and_nothing_is_written(resnet18_tensors, tmp_path, damage, message):
    tensors = dict(resnet18_tensors)
    damage(tensors)
    source = _write(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=message):
        import_weights("timm", "resnet18", source, tmp_path / "out.weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors"]


def test_wrong_architecture_is_named(resnet18_tensors, tmp_path):
    source = _write(resnet18_tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="holds resnet18 weights, not resnet34; import it with --model resnet18"):
        import_weights("timm", "resnet34", source, tmp_path / "out.weights.h5")


def test_official_file_name_with_another_hash_is_refused(resnet18_tensors, tmp_path):
    source = tmp_path / "resnet18-f37072fd.pth"
    source.write_bytes(b"a truncated download")
    with pytest.raises(ValueError, match="not the file torchvision publishes.*download it again from "
                                         "https://download.pytorch.org/models/resnet18-f37072fd.pth"):
        import_weights("torchvision", "resnet18", source, tmp_path / "out.weights.h5")


def test_pth_without_torch_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine without torch
    source = tmp_path / "my_resnet18.pth"
    source.write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"needs torch: pip install 'kcnn\[torch\]'"):
        import_weights("torchvision", "resnet18", source, tmp_path / "out.weights.h5")


@pytest.mark.parametrize("arguments, message", [
    (("caffe", "resnet18", "x.safetensors", "out.weights.h5"), "unknown source 'caffe'; accepted: torchvision"),
    (("timm", "resnet18", "x.safetensors", "out.h5"), r"must end with \.weights\.h5"),
    (("timm", "alexnet", "x.safetensors", "out.weights.h5"), "timm has no alexnet weights"),
    (("keras", "resnet18", "x.h5", "out.weights.h5"), "keras.applications has no resnet18"),
])
def test_bad_arguments(resnet18_tensors, tmp_path, arguments, message):
    library, model, source, out = arguments
    _write(resnet18_tensors, tmp_path / "x.safetensors")
    (tmp_path / "x.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=message):
        import_weights(library, model, tmp_path / source, tmp_path / out)


def test_torchvision_googlenet_layout_picks_its_variant_and_names_untrained_heads(tmp_path):
    source = kcnn.build("googlenet", variant="torchvision", aux_logits=True)
    _write(torch_state_dict(source), tmp_path / "googlenet.safetensors")
    metadata = import_weights("torchvision", "googlenet", tmp_path / "googlenet.safetensors",
                              tmp_path / "googlenet.weights.h5")
    assert metadata["options"] == {"variant": "torchvision"}
    assert "aux1.fc2.weight" in metadata["skipped_tensors"] and "aux2.conv.conv.weight" in metadata["skipped_tensors"]
    assert all(key.startswith(("aux1.", "aux2.")) for key in metadata["skipped_tensors"])
    model = kcnn.build("googlenet", weights=tmp_path / "googlenet.weights.h5")
    assert model.get_layer("inception_3a_5x5_conv").kernel_size == (3, 3)
    with pytest.raises(ValueError, match="no tensors for layer.*aux1"):
        kcnn.build("googlenet", weights=tmp_path / "googlenet.weights.h5", aux_logits=True)


@pytest.mark.parametrize("preset, mode", [("caffe", "caffe"), ("torch", "torch"), ("inception", "tf")])
def test_preprocessing_presets_match_keras_applications_modes(preset, mode):
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = keras.applications.imagenet_utils.preprocess_input(images.copy(), mode=mode)
    np.testing.assert_allclose(np.asarray(PRESETS[preset](images)), expected, rtol=1e-5, atol=1e-4)
