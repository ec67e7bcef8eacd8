"""Bad input gets one clear ValueError: what was received and what is accepted."""

import pytest

import kcnn


@pytest.mark.parametrize("call,message", [
    (lambda: kcnn.build("resnt50"), r"unknown model 'resnt50'; did you mean: resnet50"),
    (lambda: kcnn.build("resnet50", shortcut="D"), r"unknown shortcut option 'D'; accepted: A, B, C"),
    (lambda: kcnn.build("resnet50", version="v2"), r"unknown resnet version 'v2'; accepted: v1, v1.5"),
    (lambda: kcnn.build("resnet50", towers=2), r"unknown option 'towers' for 'resnet50'; accepted: version, shortcut"),
    (lambda: kcnn.build("resnet20", depth=32), r"depth is fixed by the name 'resnet20'"),
    (lambda: kcnn.build("plain20", shortcut="B"), r"plain networks have no shortcuts"),
    (lambda: kcnn.build("alexnet", variant="caffe"), r"accepted: paper, torchvision, zfnet"),
    (lambda: kcnn.build("alexnet", widths=(96, 256)), r"widths must be 5 positive integers"),
    (lambda: kcnn.build("vgg16", classes=0), r"classes must be a positive integer, got 0"),
    (lambda: kcnn.build("vgg16", pooling="mean"), r"unknown pooling 'mean'"),
    (lambda: kcnn.build("vgg16", input_shape=(224, 224)), r"input_shape must be \(height, width, channels\)"),
    (lambda: kcnn.build("vgg16", weights="missing.h5"), r"weights must be None or the path of a .weights.h5 file"),
    (lambda: kcnn.build("lenet5", weights="imagenet"), r"no published ImageNet weights for lenet5"),
    (lambda: kcnn.build("alexnet", input_shape=(66, 66, 3)), r"too small for 'alexnet'.*67x67"),
    (lambda: kcnn.build("lenet5", input_shape=(28, 28, 1)), r"too small for 'lenet5'.*32x32"),
    (lambda: kcnn.list_models(family="densenet"), r"unknown family 'densenet'; accepted: alexnet, cifar_resnet"),
    (lambda: kcnn.profile("resnet18", input_shape=(None, None, 3)), r"profile needs a fixed input size"),
])
def test_bad_input_raises_one_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message) as raised:
        call()
    assert "\n" not in str(raised.value)


def test_smallest_input_size_is_exact():
    """At the smallest size every map keeps a pixel; one pixel less is refused."""
    for name in ("lenet5", "alexnet", "zfnet", "vgg11", "inception_v1"):
        size = kcnn.smallest_input_size(name)
        kcnn.build(name, input_shape=(size, size, kcnn.model_info(name).input_shape[2]), include_top=False)
        if size > 1:
            with pytest.raises(ValueError, match="too small"):
                kcnn.build(name, input_shape=(size - 1, size - 1, kcnn.model_info(name).input_shape[2]))


def test_registry_refuses_duplicates():
    from kcnn import registry

    spec = registry.get("resnet50")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(spec)
