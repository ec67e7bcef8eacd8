"""build's keras.applications conventions: tops, pooling, weights files, defaults per family."""

import numpy as np
import pytest

import kcnn


@pytest.mark.parametrize("pooling,shape", [(None, (None, 7, 7, 512)), ("avg", (None, 512)), ("max", (None, 512))])
def test_include_top_false_and_pooling(pooling, shape):
    model = kcnn.build("resnet18", include_top=False, pooling=pooling)
    assert model.output_shape == shape


def test_defaults_follow_the_dataset():
    assert kcnn.build("lenet5").input_shape == (None, 32, 32, 1)
    assert kcnn.build("resnet20").output_shape == (None, 10)
    assert kcnn.build("alexnet").input_shape == (None, 227, 227, 3)
    assert kcnn.build("zfnet", include_top=False).output_shape == (None, 6, 6, 256)


def test_softmax_by_default_and_logits_on_request():
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    probabilities = kcnn.build("resnet20")(images)
    np.testing.assert_allclose(np.sum(probabilities, axis=-1), 1.0, atol=1e-5)
    logits = kcnn.build("resnet20", classifier_activation=None)(images)
    assert np.abs(np.sum(logits, axis=-1) - 1.0).max() > 1e-3


def test_weights_file_round_trip(tmp_path):
    images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    trained = kcnn.build("resnet20", shortcut="B")
    path = tmp_path / "resnet20.weights.h5"
    trained.save_weights(path)
    restored = kcnn.build("resnet20", shortcut="B", weights=str(path))
    np.testing.assert_array_equal(restored(images), trained(images))


def test_weights_of_another_variant_are_refused(tmp_path):
    path = tmp_path / "resnet20.weights.h5"
    kcnn.build("resnet20", shortcut="B").save_weights(path)
    with pytest.raises(ValueError, match="does not fit 'resnet20' with these options") as raised:
        kcnn.build("resnet20", weights=str(path))  # option A has no projection layers
    assert "\n" not in str(raised.value)


def test_weights_of_another_depth_are_refused(tmp_path):
    path = tmp_path / "resnet20.weights.h5"
    kcnn.build("resnet20").save_weights(path)
    with pytest.raises(ValueError, match="does not fit 'resnet32'"):
        kcnn.build("resnet32", weights=str(path))


def test_grouped_towers_compute_like_two_separate_convolutions():
    """towers=2: conv2's first 128 maps see only conv1's first 48 (the paper's GPU split)."""
    model = kcnn.build("alexnet", towers=2, include_top=False)
    conv2 = model.get_layer("conv2")
    assert conv2.kernel.shape == (5, 5, 48, 256) and conv2.groups == 2
