"""One harness over the whole registry (and the named variants), as Keras task models (``ImageClassifier``):
build, run, differentiate, serialise (config, ``.keras`` in safe mode, every custom layer's config)."""

import keras
import numpy as np
import pytest

import kcnn
from kcnn.graph import consumers
from kcnn.tasks import ImageClassifier

VARIANTS = [
    ("lenet5", {"connection_table": True}),
    ("alexnet", {"variant": "torchvision"}),
    ("alexnet", {"towers": 2}),
    ("inception_v1", {"variant": "torchvision"}),
    ("inception_v1", {"aux_logits": True, "input_shape": (96, 96, 3)}),
    ("resnet50", {"version": "v1.5"}),
    ("resnet18", {"shortcut": "A"}),
    ("resnet50", {"shortcut": "C"}),
    ("resnet20", {"shortcut": "B"}),
]
CASES = [(name, {}) for name in kcnn.list_models()] + VARIANTS
CLASSES = 5


def _case_id(case):
    name, options = case
    return name + "".join(f"-{k}={v}" for k, v in options.items() if k != "input_shape")


def _tiny_model(name, options):
    """The model at the smallest convenient input (at least 32 pixels), with a 5-class linear top."""
    options = dict(options)
    spec = kcnn.model_info(name)
    shape = options.pop("input_shape", None)
    if shape is None:
        size = max(32, kcnn.smallest_input_size(name, **options))
        shape = (size, size, spec.input_shape[2])
    keras.utils.set_random_seed(1)
    model = ImageClassifier(name, CLASSES, input_shape=shape, backbone_options=options)
    return model, np.random.default_rng(0).normal(size=(2, *shape)).astype("float32")


def _outputs(model, images, training=False):
    return keras.tree.flatten(model(images, training=training))


def _biases_cancelled_by_batch_norm(model):
    """Conv biases feeding only a BatchNorm: their training-mode gradient is zero by construction."""
    taken_by = consumers(model)
    return {
        layer.bias.path for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and layer.use_bias
        and all(isinstance(model.get_layer(c), keras.layers.BatchNormalization) for c in taken_by[layer.name])
    }


def _calibrate_batch_norm(model, images):
    """Sets every BN's moving statistics to this batch's, as a trained network would have them.

    At initialisation (mean 0, variance 1) inference-mode BN is the identity and the
    residual sums of resnet1202 double 600 times: float32 overflows. With data statistics
    each block is normalised as in training.
    """
    batch_norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in batch_norms]
    for layer in batch_norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(batch_norms, momenta):
        layer.momentum = momentum


def _check_outputs(model, images):
    for training in (False, True):
        for output in _outputs(model, images, training):
            assert output.shape == (2, CLASSES)
            assert np.isfinite(output).all(), f"non-finite output (training={training})"


def _check_gradients(model, images):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = sum(tf.reduce_mean(tf.square(y - 1.0)) for y in _outputs(model, images, training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    cancelled = _biases_cancelled_by_batch_norm(model)
    for variable, gradient in zip(model.trainable_variables, gradients):
        assert gradient is not None, f"no gradient reaches {variable.path}"
        assert np.isfinite(gradient).all(), f"non-finite gradient for {variable.path}"
        if variable.path not in cancelled:
            assert np.abs(gradient).max() > 0, f"zero gradient for {variable.path}"


def check_custom_layers_round_trip(model):
    """Every kcnn layer of ``model`` rebuilds from its config to the same config."""
    custom = [layer for layer in model.layers if type(layer).__module__.startswith("kcnn.")]
    for layer in custom:
        config = layer.get_config()
        assert type(layer).from_config(config).get_config() == config, layer.name
    return custom


def _check_round_trips(model, images, directory):
    expected = _outputs(model, images)
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    path = directory / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert type(loaded) is ImageClassifier and loaded.get_config() == model.get_config()
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    for other in (clone, loaded):
        for got, want in zip(_outputs(other, images), expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    check_custom_layers_round_trip(model)


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_model_contract(case, tmp_path):
    """Builds; right output shape; finite outputs; gradients reach every weight; config and .keras round trips."""
    with kcnn.deep_graph_recursion():
        model, images = _tiny_model(*case)
        _calibrate_batch_norm(model, images)
        _check_outputs(model, images)
        _check_gradients(model, images)
        _check_round_trips(model, images, tmp_path)
