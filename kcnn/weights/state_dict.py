"""PyTorch state dicts (``.pth`` through torch, ``.safetensors`` without it) into kcnn models.

Layouts differ only in axis order: a convolution kernel ``(out, in, kh, kw)``
becomes ``(kh, kw, in, out)``, a linear ``(out, in)`` becomes ``(in, out)``, and the
first linear layer after a flatten has its inputs reordered from PyTorch's
channel-major ``(C, H, W)`` flattening to Keras' ``(H, W, C)``. A 4-D kernel feeding
a Keras ``Dense`` (timm's VGG keeps fc6/fc7 as 7x7 and 1x1 convolutions) is the
same reordering.

>>> import numpy as np
>>> torch_linear = np.arange(2 * 3 * 2 * 2).reshape(2, 12)  # 2 outputs over a C=3, H=W=2 map
>>> dense_kernel(torch_linear, (2, 2, 3))[:4, 0].tolist()  # pixel (0, 0): channels 0, 1, 2, then (0, 1)
[0, 4, 8, 1]
"""

import os

import keras
import numpy as np

from kcnn.graph import parents

IGNORED = ("num_batches_tracked",)  # BatchNorm's step counter: state, not a weight
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
WRAPPER_KEYS = ("state_dict", "model")
READABLE = (".pth", ".pt", ".bin", ".safetensors")


def _read_pth(path):
    try:
        import torch
    except ImportError:
        raise ValueError(f"reading {os.path.basename(path)!r} (a PyTorch pickle) needs torch: "
                         "pip install 'kcnn[torch]', or convert it to .safetensors first") from None
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in WRAPPER_KEYS:  # training checkpoints nest the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return {key: value.detach().float().numpy() for key, value in state.items() if hasattr(value, "detach")}


def read_state_dict(path):
    """``{tensor name: float32 array}`` from a ``.pth``/``.pt``/``.bin`` or ``.safetensors`` file.

    A ``module.`` prefix (DataParallel checkpoints) is removed.
    """
    path = os.fspath(path)
    if not path.endswith(READABLE):
        raise ValueError(f"cannot read {os.path.basename(path)!r}: accepted state dict files end with "
                         f"{', '.join(READABLE)}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        tensors = {key: value.astype("float32") for key, value in load_file(path).items()}
    else:
        tensors = _read_pth(path)
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    return tensors


def state_dict_keys(path):
    """The tensor names of a state dict file, without reading its tensors (safetensors' header; a ``.pth`` file
    memory-mapped), ``module.`` prefixes removed."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, "np") as stream:
            keys = list(stream.keys())
    elif path.endswith(READABLE):
        try:
            import torch
        except ImportError:
            return []  # read_state_dict says what is missing
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        for key in WRAPPER_KEYS:
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        keys = list(state) if isinstance(state, dict) else []
    else:
        return []
    return [key[len("module."):] for key in keys] if keys and all(k.startswith("module.") for k in keys) else keys


def dense_kernel(tensor, flattened_from=None):
    """A PyTorch linear (or 1x1/kxk conv as linear) weight as a Keras ``Dense`` kernel.

    ``flattened_from`` is the ``(H, W, C)`` map the Keras layer's input was flattened from.
    """
    out = tensor.shape[0]
    if flattened_from is None:
        return tensor.reshape(out, -1).T
    height, width, channels = flattened_from
    return tensor.reshape(out, channels, height, width).transpose(2, 3, 1, 0).reshape(-1, out)


def _flattened_from(model, layer):
    (parent,) = parents(layer)
    parent = model.get_layer(parent)
    if isinstance(parent, keras.layers.Flatten) and len(parent.input.shape) == 4:
        return tuple(parent.input.shape[1:])
    return None


def _torch_shape(layer, variable):
    """The shape PyTorch stores ``variable`` in (for messages and checks)."""
    shape = tuple(variable.shape)
    if isinstance(layer, keras.layers.Conv2D) and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if isinstance(layer, keras.layers.Dense) and len(shape) == 2:
        return (shape[1], shape[0])
    return shape


def _fits(tensor, expected, layer):
    if tensor.shape == expected:
        return True
    # a conv-as-linear kernel (out, C, kh, kw) for a Dense (out, C*kh*kw)
    return (isinstance(layer, keras.layers.Dense) and len(expected) == 2 and tensor.ndim == 4
            and tensor.shape[0] == expected[0] and int(np.prod(tensor.shape[1:])) == expected[1])


def _convert(model, layer, variable, tensor):
    if isinstance(layer, keras.layers.Conv2D) and tensor.ndim == 4:
        return tensor.transpose(2, 3, 1, 0)
    if isinstance(layer, keras.layers.Dense) and len(variable.shape) == 2:
        flattened = _flattened_from(model, layer)
        if tensor.ndim == 4 and flattened is None:
            flattened = (tensor.shape[2], tensor.shape[3], tensor.shape[1])
        return dense_kernel(tensor, flattened)
    return tensor


def _tensor_names(layer, module):
    if isinstance(layer, keras.layers.BatchNormalization):
        return [f"{module}.{name}" for name in BN_TENSORS]
    return [f"{module}.{name}" for name in ("weight", "bias")[:len(layer.weights)]]


def load_state_dict(model, tensors, modules, *, optional_prefixes=()):
    """Sets every weighted layer of ``model`` from ``tensors`` (PyTorch names, via ``modules``).

    Nothing is set unless everything fits. Raises ``ValueError`` naming the first
    layer without a module, missing tensor, tensor of another shape (both shapes,
    PyTorch layout), or tensor the model has no place for. Tensors under
    ``optional_prefixes`` may stay unused; the returned list names them.
    """
    arrays, used = {}, set()
    for layer in (layer for layer in model.layers if layer.weights):
        if layer.name not in modules:
            raise ValueError(f"kcnn layer {layer.name!r} has no counterpart in the source layout")
        converted = []
        for variable, key in zip(layer.weights, _tensor_names(layer, modules[layer.name])):
            if key not in tensors:
                raise ValueError(f"missing tensor {key!r} (for kcnn layer {layer.name!r}, "
                                 f"shape {_torch_shape(layer, variable)})")
            expected = _torch_shape(layer, variable)
            if not _fits(tensors[key], expected, layer):
                raise ValueError(f"tensor {key!r} has shape {tuple(tensors[key].shape)}; kcnn layer "
                                 f"{layer.name!r} needs {expected} (PyTorch layout)")
            converted.append(_convert(model, layer, variable, tensors[key]))
            used.add(key)
        arrays[layer.name] = converted
    leftover = sorted(key for key in tensors if key not in used and not key.endswith(IGNORED))
    unexpected = [key for key in leftover if not key.startswith(tuple(optional_prefixes))]
    if unexpected:
        raise ValueError(f"unexpected tensor(s) in the source, with no kcnn layer to take them: "
                         f"{', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}")
    for name, values in arrays.items():
        model.get_layer(name).set_weights(values)
    return leftover
