"""``build``: a zoo name + options -> a ``keras.Model``, with clear errors for bad input.

>>> import kcnn
>>> model = kcnn.build("resnet18", classes=10, input_shape=(64, 64, 3))
>>> model.output_shape
(None, 10)
>>> kcnn.build("resnet18", shortcut="D")
Traceback (most recent call last):
...
ValueError: unknown shortcut option 'D'; accepted: A, B, C
"""

import contextlib
import inspect
import os
import sys

import keras

from kcnn import registry
from kcnn.models import catalog  # noqa: F401  (registers the zoo)
from kcnn.models.heads import POOLINGS
from kcnn.weights import PRESETS, Preprocessing, default_preprocessing, read_metadata
from kcnn.weights.fetch import KEYWORDS as FETCHED
from kcnn.weights.fetch import fetch
from kcnn.weights.files import transfer_by_name

COMMON_ARGUMENTS = ("inputs", "include_top", "pooling", "classes", "classifier_activation")
DEEP_GRAPH_RECURSION_LIMIT = 30_000


@contextlib.contextmanager
def deep_graph_recursion(limit=DEEP_GRAPH_RECURSION_LIMIT):
    """Raises Python's recursion limit while Keras walks a very deep graph.

    Keras builds, clones, saves and loads functional graphs recursively; resnet1202
    (about 4,000 layers deep) needs more than Python's default 1,000 frames.
    """
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def variant_options(name):
    """The keyword options ``build(name, ...)`` accepts beyond the common ones, with defaults."""
    spec = registry.get(name)
    parameters = inspect.signature(spec.builder).parameters
    return {
        key: p.default for key, p in parameters.items()
        if key not in COMMON_ARGUMENTS and key not in spec.options
    }


def _check_arguments(spec, classes, input_shape, pooling, options):
    accepted = variant_options(spec.name)
    fixed = sorted(set(options) & set(spec.options))
    if fixed:
        raise ValueError(f"{fixed[0]} is fixed by the name {spec.name!r}; pick another model name instead")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listed = ", ".join(accepted) or "none"
        raise ValueError(f"unknown option {unknown[0]!r} for {spec.name!r}; accepted: {listed}")
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"classes must be a positive integer, got {classes!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; accepted: None, 'avg', 'max'")
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(d is None or (isinstance(d, int) and d > 0) for d in shape):
        raise ValueError(
            f"input_shape must be (height, width, channels) of positive integers (None for any), got {input_shape!r}")
    if shape[2] is None:
        raise ValueError(f"input_shape needs a known channel count, got {input_shape!r}")
    return shape


def _has_empty_feature_map(model):
    for layer in model.layers:
        shape = layer.output.shape
        if len(shape) == 4 and any(d is not None and d < 1 for d in shape[1:3]):
            return True
    return False


def _graph(spec, shape, *, include_top, pooling, classes, classifier_activation, options, preprocessing=None):
    inputs = keras.Input(shape, name="input")
    x = inputs if preprocessing is None else preprocessing.layer()(inputs)
    outputs = spec.builder(x, include_top=include_top, pooling=pooling, classes=classes,
                           classifier_activation=classifier_activation, **spec.options, **options)
    model = keras.Model(inputs, outputs, name=spec.name)
    if _has_empty_feature_map(model):
        raise ValueError("a feature map has no pixels left")
    return model


def _fits(spec, size, channels, options):
    try:
        _graph(spec, (size, size, channels), include_top=False, pooling=None, classes=1,
               classifier_activation=None, options=options)
        return True
    except ValueError:
        return False


def smallest_input_size(name, channels=None, **options):
    """The smallest square input (pixels) whose feature maps all keep at least one pixel.

    >>> smallest_input_size("lenet5"), smallest_input_size("alexnet"), smallest_input_size("zfnet")
    (32, 67, 53)
    """
    spec = registry.get(name)
    channels = channels or spec.input_shape[2]
    low, high = 1, max(spec.input_shape[:2])  # every default size fits
    with deep_graph_recursion():
        while low < high:
            middle = (low + high) // 2
            if _fits(spec, middle, channels, options):
                high = middle
            else:
                low = middle + 1
    return low


def _file_settings(spec, weights, options, include_top, classes):
    """The metadata of a kcnn weights file, checked against what the caller asked for (``None`` without any)."""
    if weights is None:
        return None
    metadata = read_metadata(weights)
    if metadata is None:
        return None
    label = f"weights file {os.path.basename(os.fspath(weights))!r}"
    if metadata.get("task", "classification") != "classification":
        raise ValueError(f"{label} holds a fine-tuned {metadata['task']} model on a {metadata['architecture']} "
                         "backbone; rebuild it with kcnn.tasks.load_task_model(path)")
    if metadata["architecture"] != spec.name:
        raise ValueError(f"{label} holds {metadata['architecture']} weights, not {spec.name}; "
                         f"build({metadata['architecture']!r}, weights=...) instead")
    for key, value in metadata["options"].items():
        if key in options and options[key] != value:
            raise ValueError(f"{label} holds the {key}={value!r} variant of {spec.name}; "
                             f"drop {key}={options[key]!r} or use another file")
    if include_top and not metadata["include_top"]:
        raise ValueError(f"{label} has no classifier; pass include_top=False")
    if include_top and classes not in (None, metadata["classes"]):
        raise ValueError(f"{label} has a {metadata['classes']}-class classifier, not {classes}; pass "
                         f"classes={metadata['classes']}, or include_top=False to train a new head")
    return metadata


def _load_file(spec, model, weights, metadata, arguments, shape):
    """Loads a kcnn weights file into ``model``, which may leave off its classifier or take another input size."""
    same_network = (arguments["include_top"] and metadata["include_top"]
                    and arguments["options"] == metadata["options"]
                    and list(shape) == metadata["input_shape"])
    if same_network:
        _load_weights_strictly(model, weights)
        return
    reference = _graph(spec, tuple(metadata["input_shape"]), include_top=metadata["include_top"],
                       pooling=None, classes=metadata["classes"] or spec.classes,
                       classifier_activation=None, options=metadata["options"])
    _load_weights_strictly(reference, weights)
    try:
        transfer_by_name(reference, model)
    except ValueError as error:
        raise ValueError(f"weights file {os.fspath(weights)!r} does not fit {model.name!r} "
                         f"with these options: {error}") from None


def build(name, *, classes=None, input_shape=None, include_top=True, pooling=None, weights=None,
          classifier_activation="softmax", include_preprocessing=False, **options):
    """Builds the zoo model ``name`` with keras.applications' conventions.

    ``classes`` and ``input_shape`` default to the model's dataset (ImageNet 224x224x3,
    CIFAR-10 32x32x3, LeNet 32x32x1); ``include_top=False`` returns the last feature
    map (or its global ``pooling``); ``**options`` pick a variant (see
    ``kcnn.models.variant_options(name)``).

    ``weights`` is a ``.weights.h5`` file, or "imagenet" (the best file published for
    this variant, ``kcnn weights list``), "torchvision", "timm" or "keras" (that source's
    file): downloaded into the Keras cache, checked against its published hash and
    converted on the first call, read from the cache afterwards (``kcnn.weights.fetch``).
    One written by ``kcnn weights import``
    picks the variant it holds (an explicit option contradicting it is refused),
    the default classes and input size, and may be loaded with ``include_top=False``
    or at another input size; the model then carries ``preprocessing`` (the
    normalisation the weights expect, a ``kcnn.weights.Preprocessing``) and
    ``weights_metadata``.

    ``include_preprocessing=True`` puts that normalisation into the graph instead (a
    ``kcnn.layers.Normalize`` layer named "preprocessing" behind the input; without weights,
    the one kcnn trains with from scratch): the model takes RGB pixels in [0, 255] and keeps
    doing so after a ``.keras`` save and load or ``keras.models.clone_model``; its
    ``preprocessing`` attribute is then "none".

    >>> model = build("resnet18", classes=10, input_shape=(32, 32, 3), include_preprocessing=True)
    >>> model.get_layer("preprocessing").preset, model.preprocessing.name
    ('torch', 'none')
    """
    spec = registry.get(name)
    if isinstance(weights, str) and weights in FETCHED:
        weights = fetch(spec.name, weights, **options)
    if weights is not None and not (isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights)):
        raise ValueError(
            f"weights must be None or the path of a .weights.h5 file, got {weights!r} "
            f"(ImageNet weights: {', '.join(map(repr, FETCHED))})")
    metadata = _file_settings(spec, weights, options, include_top, classes)
    if metadata is not None:
        options = {**metadata["options"], **options}
        classes = metadata["classes"] if classes is None else classes
        input_shape = input_shape or tuple(metadata["input_shape"])
    classes = spec.classes if classes is None else classes
    shape = _check_arguments(spec, classes, input_shape or spec.input_shape, pooling, options)
    arguments = dict(include_top=include_top, pooling=pooling, classes=classes,
                     classifier_activation=classifier_activation, options=options)
    preprocessing = (Preprocessing.from_dict(metadata["preprocessing"]) if metadata is not None
                     else default_preprocessing(shape[2]) if include_preprocessing else None)
    with deep_graph_recursion():
        try:
            model = _graph(spec, shape, **arguments, preprocessing=preprocessing if include_preprocessing else None)
        except ValueError:
            known = [d for d in shape[:2] if d is not None]
            if known:
                smallest = smallest_input_size(spec.name, shape[2], **options)
                if min(known) < smallest:
                    raise ValueError(
                        f"input_shape {shape} is too small for {spec.name!r}: the smallest input it "
                        f"accepts with these options is {smallest}x{smallest}") from None
            raise
        if metadata is not None:
            _load_file(spec, model, weights, metadata, arguments, shape)
            model.weights_metadata = metadata
        elif weights is not None:
            _load_weights_strictly(model, weights)
    if preprocessing is not None:
        model.preprocessing = PRESETS["none"] if include_preprocessing else preprocessing
    return model


def _load_weights_strictly(model, path):
    """``load_weights`` whose mismatch error names the file and the model in one line."""
    try:
        model.load_weights(path)
    except ValueError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ValueError(f"weights file {os.fspath(path)!r} does not fit {model.name!r} "
                         f"with these options: {first_line}") from None
