"""The input normalisation of a set of weights, as a function and as a serializable layer.

``Normalize`` is what ``kcnn.build(..., include_preprocessing=True)`` puts behind the
input (keras.applications' EfficientNet/ConvNeXt convention): the model then takes RGB
pixels in [0, 255], and keeps doing so after a ``.keras`` save and load or
``keras.models.clone_model``, since the normalisation is part of the graph.

>>> import numpy as np
>>> layer = Normalize(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
>>> np.asarray(layer(np.array([[[[0, 255, 127.5]]]], "float32"))).tolist()
[[[[-1.0, 1.0, 0.0]]]]
>>> Normalize.from_config(layer.get_config()).mean
(0.5, 0.5, 0.5)
"""

import keras
from keras import ops

CHANNEL_ORDERS = ("RGB", "BGR")


def normalize(images, *, channel_order="RGB", scale=1.0, mean=(0.0,), std=(1.0,)):
    """``(images[..., order] * scale - mean) / std`` in float32; images are RGB, channels last."""
    x = ops.cast(images, "float32")
    if channel_order == "BGR":
        x = ops.flip(x, axis=-1)
    x = x * scale
    return (x - ops.convert_to_tensor(mean, "float32")) / ops.convert_to_tensor(std, "float32")


@keras.saving.register_keras_serializable(package="kcnn")
class Normalize(keras.layers.Layer):
    """``normalize`` as a layer without weights; it computes in float32 under mixed precision.

    ``preset`` names where the values come from ("torch", "caffe", ...): it is only recorded.
    """

    def __init__(self, *, preset="", channel_order="RGB", scale=1.0, mean=(0.0,), std=(1.0,), **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        if channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"unknown channel_order {channel_order!r}; accepted: {', '.join(CHANNEL_ORDERS)}")
        self.preset, self.channel_order, self.scale = preset, channel_order, float(scale)
        self.mean, self.std = tuple(map(float, mean)), tuple(map(float, std))
        if any(value == 0 for value in self.std):
            raise ValueError(f"std must not contain 0, got {self.std}")

    def call(self, images):
        return normalize(images, channel_order=self.channel_order, scale=self.scale, mean=self.mean, std=self.std)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "preset": self.preset, "channel_order": self.channel_order,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std)}
