"""kcnn: the classic CNNs of the ImageNet era, exact, for Keras 3.

>>> import kcnn
>>> model = kcnn.build("inception_v1")
>>> model.output_shape
(None, 1000)
>>> "resnet1202" in kcnn.list_models(family="cifar_resnet")
True

The public names below are imported on first use (PEP 562): ``import kcnn`` alone does not load
TensorFlow, so the ``kcnn`` command's ``--help`` answers at once. Using any of them loads the zoo
(``kcnn.models``, which registers every model in ``kcnn.registry``) and TensorFlow with it.
"""

import importlib
import importlib.util
import os
import sys
import types

# Whether the user chose TensorFlow's C++ log level; if not, kcnn's default (warnings and errors) applies
# and the CLI may choose another (kcnn.cli.quiet). TensorFlow reads it when it loads.
_TF_LOG_LEVEL_GIVEN = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# public name -> (module, attribute), imported by __getattr__ on first use
_PUBLIC = {
    "ImageClassifier": ("kcnn.tasks", "ImageClassifier"),
    "ImageSegmenter": ("kcnn.tasks", "ImageSegmenter"),
    "InstanceSegmenter": ("kcnn.tasks", "InstanceSegmenter"),
    "ModelSpec": ("kcnn.registry", "ModelSpec"),
    "ObjectDetector": ("kcnn.tasks", "ObjectDetector"),
    "Profile": ("kcnn.analysis", "Profile"),
    "backbone": ("kcnn.backbone", "backbone"),
    "build": ("kcnn.models", "build"),
    "decode_predictions": ("kcnn.weights.usage", "decode_predictions"),
    "deep_graph_recursion": ("kcnn.models", "deep_graph_recursion"),
    "export": ("kcnn.export", "export"),
    "feature_taps": ("kcnn.backbone", "feature_taps"),
    "finetune": ("kcnn.train.finetune", "finetune"),
    "import_weights": ("kcnn.weights.importer", "import_weights"),
    "list_models": ("kcnn.registry", "list_models"),
    "load": ("kcnn.export.load", "load"),
    "model_info": ("kcnn.registry", "get"),
    "preprocess_input": ("kcnn.weights.usage", "preprocess_input"),
    "pretrain": ("kcnn.train.pretrain", "pretrain"),
    "profile": ("kcnn.analysis", "profile"),
    "smallest_input_size": ("kcnn.models", "smallest_input_size"),
    "tune": ("kcnn.tune.search", "tune"),
    "variant_options": ("kcnn.models", "variant_options"),
}
__all__ = list(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        importlib.import_module("kcnn.models")  # the zoo: kcnn.registry is empty until it is imported
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # found directly from now on
        return value
    # ``kcnn.data`` etc. after a bare ``import kcnn``, as when the package imported the zoo eagerly
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_PUBLIC})


class _Package(types.ModuleType):
    """The package's module type: the function ``kcnn.backbone`` shares its name with the module
    ``kcnn.backbone``, and the import system binds a submodule on its package when it first loads it;
    the name stays the function's (as when the package imported it eagerly)."""

    def __setattr__(self, name, value):
        if name in _PUBLIC and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
