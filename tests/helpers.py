"""Fixtures shared by the weight tests: randomised reference models and files in other libraries' layouts."""

import h5py
import keras
import numpy as np
from keras.src.legacy.saving import legacy_h5_format

import kcnn
from kcnn.weights.torch_layout import module_names


def randomise(model, rng):
    """Random conv biases and BN statistics, so that bias folding and BN are really exercised."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, channels), rng.normal(0, 0.1, channels),
                               rng.normal(0, 0.1, channels), rng.uniform(0.5, 2.0, channels)])
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])


def write_legacy_h5(model, path):
    """The HDF5 layout keras.applications publishes its weights in (``layer_names`` + one group per layer)."""
    with h5py.File(path, "w") as stream:
        legacy_h5_format.save_weights_to_hdf5_group(stream, model)


def torch_state_dict(model, library="torchvision"):
    """``model``'s tensors under torchvision/timm names and in PyTorch's axis order.

    For files whose values do not matter (errors, variant selection): a linear layer
    after a flatten keeps Keras' input order.
    """
    spec = kcnn.model_info(model.name)
    weighted = [layer for layer in model.layers if layer.weights]
    modules = module_names(spec.family, library, [layer.name for layer in weighted], spec.options)
    tensors = {}
    for layer in weighted:
        prefix, values = modules[layer.name], [np.asarray(v) for v in layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            names = ("weight", "bias", "running_mean", "running_var")
            tensors[f"{prefix}.num_batches_tracked"] = np.zeros((), "int64")
        else:
            names = ("weight", "bias")
            values[0] = values[0].transpose(3, 2, 0, 1) if values[0].ndim == 4 else values[0].T
        tensors.update({f"{prefix}.{name}": np.ascontiguousarray(value) for name, value in zip(names, values)})
    return tensors
