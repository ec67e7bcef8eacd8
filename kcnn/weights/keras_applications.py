"""keras.applications models -> the matching kcnn model, by layer name.

kcnn's VGG and ResNet layers carry keras.applications' names. keras.applications'
ResNets put a bias in every convolution before BatchNorm; kcnn's convolutions
there have none, and the bias is folded exactly into BN's moving mean:
``BN(conv(x) + b)`` with mean ``m`` equals ``BN(conv(x))`` with mean ``m - b``.
"""

import keras

from kcnn.graph import consumers
from kcnn.weights.files import check_shapes


def _weighted(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


def transfer_keras_applications(source, target):
    """Copies ``source``'s (a keras.applications model) weights into ``target`` (a kcnn model).

    A layer missing on either side, or a tensor of another shape, raises ``ValueError``
    naming it; nothing is copied then.
    """
    source_layers, target_layers = _weighted(source), _weighted(target)
    missing = sorted(set(target_layers) - set(source_layers))
    unexpected = sorted(set(source_layers) - set(target_layers))
    if missing or unexpected:
        raise ValueError(f"{source.name} does not match {target.name}: missing in source {missing[:5]}, "
                         f"unexpected in source {unexpected[:5]}")
    taken_by = consumers(target)
    source_weights = {name: source_layers[name].get_weights() for name in target_layers}
    folded_bias = {}
    for name, layer in target_layers.items():
        weights = source_weights[name]
        if isinstance(layer, keras.layers.Conv2D) and len(weights) == 2 and not layer.use_bias:
            (bn_name,) = taken_by[name]
            if not isinstance(target.get_layer(bn_name), keras.layers.BatchNormalization):
                raise ValueError(f"layer {name!r} has a bias in the source and no BatchNorm to fold it into")
            folded_bias[bn_name] = weights.pop()
    for name, bias in folded_bias.items():
        gamma, beta, mean, variance = source_weights[name]
        source_weights[name] = [gamma, beta, mean - bias, variance]
    for name, layer in target_layers.items():
        check_shapes(name, layer.weights, source_weights[name])
    for name, layer in target_layers.items():
        layer.set_weights(source_weights[name])
    return target
