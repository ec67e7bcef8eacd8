"""Parity with torchvision itself: random-weight torchvision models, saved as .pth (and as timm-layout
.safetensors), imported, give the same logits at 224x224 and at an odd detection-style size.

Needs torch and torchvision (``make test-parity`` installs them); deselected from ``make test``.
"""

import sys

import numpy as np
import pytest

import kcnn
from kcnn.weights.importer import import_weights
from kcnn.weights.state_dict import load_state_dict, read_state_dict
from kcnn.weights.torch_layout import module_names

pytestmark = pytest.mark.parity

TORCHVISION_NAMES = {  # kcnn name -> torchvision builder
    "alexnet": "alexnet", "inception_v1": "googlenet",
    **{name: name for name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
                               "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
}
OTHER_SIZE = (199, 257)  # odd and even: stride-2 padding and ceil-mode pooling must both be PyTorch's
FIXED_SIZE_CLASSIFIERS = ("alexnet", "vgg")  # flatten -> fc: compared on features at other sizes


def _import_torchvision():
    """torchvision imports torch._dynamo, which loads triton (GPU kernels, unused here); triton's LLVM
    crashes the process when TensorFlow is already loaded, so it is kept out."""
    sys.modules.setdefault("triton", None)
    import torchvision

    return torchvision


def _torch_model(torchvision_name):
    import torch

    torchvision = _import_torchvision()

    torch.manual_seed(0)
    extra = {"aux_logits": True, "init_weights": False} if torchvision_name == "googlenet" else {}
    model = getattr(torchvision.models, torchvision_name)(weights=None, **extra)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.0)
                module.bias.normal_(0, 0.1)
                module.momentum = 1.0
        for module in model.modules():  # after the loop above, which would overwrite these
            # A residual branch's last BN gets a small scale, as in trained ResNets (torchvision can even
            # zero it): with O(1) scales, 50 random blocks amplify fp32 rounding past 1e-4 in PyTorch
            # itself (resnet152: 7e-4 between PyTorch's own float32 and float64 logits).
            if isinstance(module, torchvision.models.resnet.Bottleneck):
                module.bn3.weight.uniform_(0.0, 0.5)
            elif isinstance(module, torchvision.models.resnet.BasicBlock):
                module.bn2.weight.uniform_(0.0, 0.5)
        # inference statistics of a real batch, so that activations stay O(1) however deep the net
        model.train()(torch.randn(8, 3, 224, 224))
    return model.eval()


def _run_torch(function, images):
    import torch

    with torch.no_grad():
        output = function(torch.from_numpy(images.transpose(0, 3, 1, 2)))
    output = output.numpy()
    return output.transpose(0, 2, 3, 1) if output.ndim == 4 else output


def _images(height, width, seed=0):
    return np.random.default_rng(seed).normal(0, 1, (2, height, width, 3)).astype("float32")


def _assert_close(got, expected, scale=1.0):
    assert np.abs(expected).max() > 1e-2  # not two near-zero outputs
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)


def _assert_close_features(got, expected):
    """Unpooled feature maps reach several units; 1e-4 is then below float32's own noise (PyTorch's float32
    VGG-19-BN features at 199x257 differ from its float64 ones by 1.1e-4 at a maximum of 4.6): the
    tolerance is 1e-4 of the maps' largest value."""
    _assert_close(got, expected, scale=max(1.0, float(np.abs(expected).max())))


@pytest.fixture(scope="module")
def torch_save(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("torchvision")

    def save(name):
        model = _torch_model(TORCHVISION_NAMES[name])
        path = folder / f"{name}-random.pth"
        torch.save(model.state_dict(), path)
        return model, path
    return save


@pytest.mark.parametrize("name", sorted(TORCHVISION_NAMES))
def test_same_logits_as_torchvision(name, torch_save, tmp_path):
    reference, source = torch_save(name)
    import_weights("torchvision", name, source, tmp_path / "w.weights.h5")
    model = kcnn.build(name, weights=tmp_path / "w.weights.h5", classifier_activation=None)
    images = _images(224, 224)
    _assert_close(model.predict(images, verbose=0), _run_torch(reference, images))

    images = _images(*OTHER_SIZE, seed=1)
    family = kcnn.model_info(name).family
    if family in FIXED_SIZE_CLASSIFIERS:
        model = kcnn.build(name, weights=tmp_path / "w.weights.h5", include_top=False,
                           input_shape=(*OTHER_SIZE, 3))
        _assert_close_features(model.predict(images, verbose=0), _run_torch(reference.features, images))
    else:
        model = kcnn.build(name, weights=tmp_path / "w.weights.h5", classifier_activation=None,
                           input_shape=(*OTHER_SIZE, 3))
        _assert_close(model.predict(images, verbose=0), _run_torch(reference, images))


def _timm_layout(state_dict):
    """torchvision VGG classifier -> timm's pre_logits ConvMlp (fc6 as a 7x7 conv, fc7 as 1x1) + head.fc."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("classifier.0."):
            key, value = "pre_logits.fc1." + key.split(".")[-1], value.reshape(4096, 512, 7, 7) if value.ndim == 2 else value
        elif key.startswith("classifier.3."):
            key, value = "pre_logits.fc2." + key.split(".")[-1], value.reshape(4096, 4096, 1, 1) if value.ndim == 2 else value
        elif key.startswith("classifier.6."):
            key = "head.fc." + key.split(".")[-1]
        renamed[key] = np.ascontiguousarray(value)
    return renamed


@pytest.mark.parametrize("name", ["resnet50", "vgg16_bn"])
def test_timm_safetensors_same_logits_as_torchvision(name, torch_save, tmp_path):
    from safetensors.numpy import save_file

    reference, source = torch_save(name)
    save_file(_timm_layout(read_state_dict(source)), str(tmp_path / "model.safetensors"))
    import_weights("timm", name, tmp_path / "model.safetensors", tmp_path / "w.weights.h5")
    model = kcnn.build(name, weights=tmp_path / "w.weights.h5", classifier_activation=None)
    images = _images(224, 224)
    _assert_close(model.predict(images, verbose=0), _run_torch(reference, images))


def test_googlenet_auxiliary_classifiers_match_torchvision(torch_save):
    import torch

    reference, source = torch_save("inception_v1")
    model = kcnn.build("googlenet", variant="torchvision", aux_logits=True, classifier_activation=None)
    load_state_dict(model, read_state_dict(source),
                    module_names("googlenet", "torchvision", [layer.name for layer in model.layers]))
    taps = {}
    reference.inception4a.register_forward_hook(lambda module, inputs, output: taps.__setitem__("4a", output))
    reference.inception4d.register_forward_hook(lambda module, inputs, output: taps.__setitem__("4d", output))
    images = _images(224, 224)
    outputs = model.predict(images, verbose=0)
    logits = _run_torch(reference, images)
    with torch.no_grad():
        aux1, aux2 = reference.aux1(taps["4a"]).numpy(), reference.aux2(taps["4d"]).numpy()
    _assert_close(outputs["predictions"], logits)
    _assert_close(outputs["aux1"], aux1)
    _assert_close(outputs["aux2"], aux2)


@pytest.mark.parametrize("output_stride, dilate", [(16, [False, False, True]), (8, [False, True, True])])
def test_dilated_resnet_matches_torchvision_replace_stride_with_dilation(output_stride, dilate, torch_save):
    """DeepLab's atrous ResNet-50: same weights, torchvision's dilation rule, same logits at an odd size."""
    import torch

    _, source = torch_save("resnet50")
    reference = _import_torchvision().models.resnet50(weights=None, replace_stride_with_dilation=dilate)
    reference.load_state_dict(torch.load(source))
    model = kcnn.build("resnet50", version="v1.5", output_stride=output_stride, classifier_activation=None,
                       input_shape=(*OTHER_SIZE, 3))
    load_state_dict(model, read_state_dict(source),
                    module_names("resnet", "torchvision", [layer.name for layer in model.layers]))
    images = _images(*OTHER_SIZE, seed=2)
    _assert_close(model.predict(images, verbose=0), _run_torch(reference.eval(), images))
