"""Any zoo model as a multi-scale backbone: a dict of feature maps keyed ``P0``..``P5`` (stride 2^n).

A level's feature map is the deepest *cut point* of the graph at that stride: a
layer every later layer depends on (a stage's ``_out``, an inception module's
concatenation, a VGG block's last ReLU) — never a layer inside a branch. Strides
are read off the graph (each layer's ``strides``), not off sizes, so valid-padded
networks (LeNet, AlexNet) get their levels too.

>>> import kcnn
>>> model = kcnn.backbone("resnet50")
>>> sorted(model.output.keys())
['P1', 'P2', 'P3', 'P4', 'P5']
>>> [(f["level"], f["layer"], f["channels"]) for f in model.feature_info][1:]
[('P2', 'conv2_block3_out', 256), ('P3', 'conv3_block4_out', 512), ('P4', 'conv4_block6_out', 1024), ('P5', 'conv5_block3_out', 2048)]
"""

import math

import keras

from kcnn.graph import parents as parents_of
from kcnn.models import build, deep_graph_recursion
from kcnn.registry import get as get_spec


# The input and padded copies of a map are cut points too, but not features.
NOT_FEATURES = (keras.layers.InputLayer, keras.layers.ZeroPadding2D)


def _stride(layer):
    strides = getattr(layer, "strides", 1)
    return int(strides if isinstance(strides, int) else math.prod(strides) ** (1 / len(strides)))


def feature_taps(model):
    """``{level: layer name}``: the deepest cut point at each cumulative stride 2^level of ``model``."""
    layers_ = model.layers
    stride, last_use = {}, {}
    for i, layer in enumerate(layers_):
        parents = parents_of(layer)
        stride[layer.name] = max((stride[p] for p in parents), default=1) * _stride(layer)
        for parent in parents:
            last_use[parent] = max(last_use.get(parent, 0), i)
    taps, reach = {}, 0
    for i, layer in enumerate(layers_):
        is_cut_point = reach <= i  # nothing before this layer is used after it
        reach = max(reach, last_use.get(layer.name, i))
        level = math.log2(stride[layer.name])
        is_feature = not isinstance(layer, NOT_FEATURES) and len(layer.output.shape) == 4
        if is_cut_point and is_feature and level == int(level):
            taps[int(level)] = layer.name
    return {f"P{level}": taps[level] for level in sorted(taps)}


def backbone(name, *, input_shape=None, levels=None, **options):
    """The zoo model ``name`` without its classifier, returning ``{"P<n>": feature map}``.

    ``input_shape`` defaults to ``(None, None, channels)`` (any size the network
    accepts); ``levels`` picks some of the levels (default: all the network has).
    The returned model carries ``feature_info``: one dict per level with ``level``,
    ``layer``, ``channels`` and ``stride`` (not saved with the model).
    """
    spec = get_spec(name)
    shape = input_shape or (None, None, spec.input_shape[2])
    full = build(spec.name, include_top=False, input_shape=shape, **options)
    taps = feature_taps(full)
    chosen = list(taps) if levels is None else list(levels)
    missing = [level for level in chosen if level not in taps]
    if missing or not chosen:
        raise ValueError(f"{spec.name} has no feature level {missing[0] if missing else 'chosen'}; "
                         f"accepted: {', '.join(taps)}")
    with deep_graph_recursion():
        outputs = {level: full.get_layer(taps[level]).output for level in chosen}
        model = keras.Model(full.input, outputs, name=f"{spec.name}_backbone")
    model.feature_info = [
        {"level": level, "layer": taps[level], "channels": int(outputs[level].shape[-1]),
         "stride": 2 ** int(level[1:])}
        for level in chosen
    ]
    return model
