"""Numerical parity: keras.applications' weights in kcnn models give the same logits."""

import keras
import numpy as np
import pytest

import kcnn
from kcnn.weights.keras_applications import transfer_keras_applications
from helpers import randomise

CASES = {
    "vgg16": keras.applications.VGG16,
    "vgg19": keras.applications.VGG19,
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_logits_as_keras_applications(name):
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    source = CASES[name](weights=None, classifier_activation=None)
    randomise(source, rng)
    target = transfer_keras_applications(source, kcnn.build(name, classifier_activation=None))
    images = rng.normal(0, 1, (2, 224, 224, 3)).astype("float32")
    expected = source.predict(images, verbose=0)
    got = target.predict(images, verbose=0)
    assert np.abs(expected).max() > 1e-2  # the comparison is not between two near-zero outputs
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_mismatched_architecture_is_named():
    source = keras.applications.ResNet50(weights=None)
    with pytest.raises(ValueError, match="missing in source.*conv4_block10_1_bn"):
        transfer_keras_applications(source, kcnn.build("resnet101"))
