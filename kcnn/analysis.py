"""Per-layer profile of a model: output shape, parameters, multiply-adds; totals; tables and JSON.

Conventions (the torchvision/fvcore ones, and the lecture's):
- **MACs** are multiply-accumulates of convolutions and linear layers (weights x
  output positions); bias adds, BatchNorm, activations, pooling and LRN count 0.
  The lecture's and torchvision's "FLOPs"/"GFLOPS" are this number.
- **params** leave out BatchNorm's moving mean and variance (PyTorch buffers);
  ``keras_params`` is Keras' ``count_params()``, which includes them.

>>> p = profile("lenet5")
>>> p.params, p.macs
(61706, 416520)
>>> print(p.to_table(by="block", fmt="plain").splitlines()[0])
block  type  output  params  MACs  convs
"""

import dataclasses
import json
import math
import re
from typing import List, Optional, Tuple

import keras

from kcnn.layers import ConnectionTableConv2D
from kcnn.registry import get as get_spec


@dataclasses.dataclass(frozen=True)
class Row:
    """One layer (or one block of layers) of a profile."""

    name: str
    type: str
    output_shape: Tuple
    params: int
    keras_params: int
    macs: int
    convs: int  # convolution and linear layers in the row


def _call_outputs(layer):
    """The first output tensor of each call of ``layer`` (a layer shared by several inputs, like a
    detection head over the pyramid levels, is called once per input)."""
    nodes = getattr(layer, "_inbound_nodes", None) or []
    outputs = [keras.tree.flatten(node.outputs)[0] for node in nodes if node.outputs]
    return outputs or [keras.tree.flatten(layer.output)[0]]


def _macs(layer):
    """Multiply-adds of ``layer`` over all its calls."""
    return sum(_call_macs(layer, output.shape) for output in _call_outputs(layer))


def _call_macs(layer, shape):
    if isinstance(layer, ConnectionTableConv2D):
        _, h, w, _ = shape
        return h * w * sum(layer.kernel_size ** 2 * len(row) for row in layer.table)
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, per_group_in, out = layer.kernel.shape
        _, h, w, _ = shape
        return h * w * out * kh * kw * per_group_in
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(shape[1:-1])
        return positions * layer.kernel.shape[0] * layer.kernel.shape[1]
    return 0


def _params(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
        return sum(math.prod(w.shape) for w in (layer.gamma, layer.beta) if w is not None)
    return layer.count_params()


def _is_weighted_op(layer):
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, ConnectionTableConv2D))


def _block_type(block, first_row):
    """A block is named for what it is when its name says so (``inception_3a``), else its first layer."""
    return "inception" if block.startswith("inception_") else first_row.type


def _shape(layer):
    shape = _call_outputs(layer)[0].shape
    return tuple(shape[1:]) if isinstance(shape, tuple) else tuple(shape)


@dataclasses.dataclass
class Profile:
    """A model's layer rows and totals. ``block_pattern``'s first group names a layer's block."""

    model_name: str
    input_shape: Tuple
    rows: List[Row]
    block_pattern: str = r"^(.*)$"

    @property
    def params(self):
        return sum(r.params for r in self.rows)

    @property
    def keras_params(self):
        return sum(r.keras_params for r in self.rows)

    @property
    def macs(self):
        return sum(r.macs for r in self.rows)

    def blocks(self):
        """Rows merged by block (consecutive layers whose names share the block), in order."""
        merged: List[Row] = []
        for row in self.rows:
            match = re.match(self.block_pattern, row.name)
            block = match.group(1) if match else row.name
            if merged and merged[-1].name == block:
                last = merged[-1]
                # a block is named for its first conv/linear layer, else for its last layer
                kind = last.type if last.convs or last.type == "inception" else row.type
                merged[-1] = Row(block, kind, row.output_shape, last.params + row.params,
                                 last.keras_params + row.keras_params, last.macs + row.macs,
                                 last.convs + row.convs)
            else:
                merged.append(dataclasses.replace(row, name=block, type=_block_type(block, row)))
        return merged

    def to_dict(self):
        return {
            "model": self.model_name,
            "input_shape": list(self.input_shape),
            "conventions": {
                "macs": "multiply-accumulates of conv and linear layers (bias, BN, activations, pooling: 0)",
                "params": "trainable + non-trainable, without BatchNorm moving mean/variance",
                "keras_params": "Keras count_params(): with BatchNorm moving mean/variance",
            },
            "totals": {"params": self.params, "keras_params": self.keras_params, "macs": self.macs},
            "layers": [dict(dataclasses.asdict(r), output_shape=list(r.output_shape)) for r in self.rows],
            "blocks": [dict(dataclasses.asdict(r), output_shape=list(r.output_shape)) for r in self.blocks()],
        }

    def to_json(self, **kwargs):
        return json.dumps(self.to_dict(), **kwargs)

    def to_table(self, by="layer", fmt="markdown"):
        """``by``: "layer" or "block"; ``fmt``: "markdown" or "plain" (aligned columns)."""
        if by not in ("layer", "block"):
            raise ValueError(f"by must be 'layer' or 'block', got {by!r}")
        if fmt not in ("markdown", "plain"):
            raise ValueError(f"fmt must be 'markdown' or 'plain', got {fmt!r}")
        rows = self.rows if by == "layer" else self.blocks()
        header = [by, "type", "output", "params", "MACs", "convs"]
        body = [[r.name, r.type, "x".join(str(d) for d in r.output_shape), human(r.params),
                 human(r.macs), str(r.convs)] for r in rows]
        body.append(["total", "", "", f"{self.params:,}", f"{self.macs:,}", str(sum(r.convs for r in rows))])
        if fmt == "markdown":
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])
        widths = [max(len(c) for c in column) for column in zip(header, *body)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
                         for cells in [header, *body])


def human(number):
    """Three significant digits in decimal units: ``human(2_700)`` -> '2.7K', ``human(34_000_000)`` -> '34M'.

    >>> human(0), human(950), human(2_700), human(163_328), human(15_470_000_000)
    ('0', '950', '2.7K', '163K', '15.5G')
    """
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if number >= scale:
            value = number / scale
            return f"{value:.3g}{unit}"
    return str(number)


def profile(name_or_model, input_shape: Optional[Tuple] = None, **build_options):
    """Profiles a zoo name (built with ``input_shape`` and ``build_options``) or a built ``keras.Model``."""
    if isinstance(name_or_model, keras.Model):
        if input_shape is not None or build_options:
            raise ValueError("input_shape and build options apply to zoo names, not to a built model")
        model, pattern = name_or_model, r"^(.*)$"
        try:
            pattern = get_spec(model.name).block_pattern
        except ValueError:
            pass
    else:
        from kcnn.models import build  # local: analysis sits beside the zoo, not above it

        spec = get_spec(name_or_model)
        with keras.StatelessScope():  # counting needs shapes only: skip weight initialisation
            model = build(spec.name, input_shape=input_shape, **build_options)
        pattern = spec.block_pattern
    for layer in model.layers:
        shape = _call_outputs(layer)[0].shape
        if len(shape) == 4 and None in shape[1:3] and _is_weighted_op(layer):
            raise ValueError("profile needs a fixed input size: pass input_shape=(H, W, C)")
    rows = [
        Row(layer.name, type(layer).__name__, _shape(layer), _params(layer), layer.count_params(),
            _macs(layer), int(_is_weighted_op(layer)))
        for layer in model.layers
    ]
    return Profile(model.name, tuple(model.input_shape[1:]), rows, pattern)
