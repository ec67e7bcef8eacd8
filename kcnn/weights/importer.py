"""``import_weights``: an official checkpoint (torchvision, timm, keras.applications) -> a kcnn weights file.

The importer picks the variant the source trained (torchvision's and timm's
ResNets are v1.5, torchvision's GoogLeNet and AlexNet its own variants,
keras.applications' ResNets v1), checks the file against the published hash when
it is an official one, names the architecture a state dict really holds when it
is not the one asked for, converts every tensor (nothing is loaded unless every
tensor fits) and writes a ``.weights.h5`` with the metadata ``kcnn.build`` reads.
"""

import os
import re

import h5py

from kcnn import registry
from kcnn.models import build
from kcnn.models.resnet import IMAGENET_STAGES
from kcnn.weights import catalog, files
from kcnn.weights.keras_applications import transfer_keras_applications
from kcnn.weights.preprocessing import preset
from kcnn.weights.state_dict import load_state_dict, read_state_dict
from kcnn.weights.torch_layout import module_names

SOURCES = ("torchvision", "timm", "keras")
INPUT_SHAPE = (224, 224, 3)  # every supported source trained at 224x224 RGB
TORCH_VARIANTS = {  # the kcnn options of the networks torchvision and timm ship
    "resnet": {"version": "v1.5"}, "googlenet": {"variant": "torchvision"},
    "alexnet": {"variant": "torchvision"}, "vgg": {},
}
# torchvision's GoogLeNet file carries auxiliary classifiers it did not train (its docs say so)
UNTRAINED_PREFIXES = {"googlenet": ("aux1.", "aux2.")}
KERAS_APPLICATIONS = {"vgg16": "VGG16", "vgg19": "VGG19", "resnet50": "ResNet50",
                      "resnet101": "ResNet101", "resnet152": "ResNet152"}


def identify_state_dict(tensors):
    """The kcnn model a torchvision/timm state dict holds (``None`` when it is none of the zoo's).

    >>> import numpy as np
    >>> identify_state_dict({f"features.{i}.weight": np.zeros((8, 8, 3, 3)) for i in range(0, 26, 2)})
    'vgg16'
    """
    keys = set(tensors)
    if any(key.startswith("inception3a.") for key in keys):
        return "inception_v1"
    if "layer1.0.conv1.weight" in keys:
        blocks = tuple(len({key.split(".")[1] for key in keys if key.startswith(f"layer{stage}.")})
                       for stage in (1, 2, 3, 4))
        kind = "bottleneck" if "layer1.0.conv3.weight" in keys else "basic"
        for depth, stages in IMAGENET_STAGES.items():
            if stages == (kind, blocks):
                return f"resnet{depth}"
        return None
    convs = [key for key in keys if re.fullmatch(r"features\.\d+\.weight", key) and tensors[key].ndim == 4]
    if not convs:
        return None
    if len(convs) == 5 and tensors["features.0.weight"].shape[-1] == 11:
        return "alexnet"
    batch_norm = any(key.startswith("features.") and key.endswith("running_mean") for key in keys)
    depth = len(convs) + 3
    return f"vgg{depth}{'_bn' if batch_norm else ''}" if depth in (11, 13, 16, 19) else None


def _check_identity(spec, found, source):
    if found is None:
        raise ValueError(f"{os.path.basename(source)!r} holds no architecture of the zoo kcnn can read")
    if found != spec.name:
        raise ValueError(f"{os.path.basename(source)!r} holds {found} weights, not {spec.name}; "
                         f"import it with --model {found}")


def _from_state_dict(library, spec, source):
    head = module_names(spec.family, library, ["predictions"], spec.options)["predictions"] + ".weight"
    tensors = read_state_dict(source)
    _check_identity(spec, identify_state_dict(tensors), source)
    options = dict(TORCH_VARIANTS[spec.family])
    include_top = head in tensors
    classes = tensors[head].shape[0] if include_top else spec.classes
    model = build(spec.name, classes=classes, input_shape=INPUT_SHAPE, include_top=include_top,
                  classifier_activation=None, **options)
    modules = module_names(spec.family, library, [layer.name for layer in model.layers], spec.options)
    skipped = load_state_dict(model, tensors, modules,
                              optional_prefixes=UNTRAINED_PREFIXES.get(spec.family, ()))
    return model, options, skipped


def _keras_include_top(source):
    with h5py.File(source, "r") as stream:
        names = [name.decode() if isinstance(name, bytes) else name for name in stream.attrs.get("layer_names", [])]
    if not names:
        raise ValueError(f"{os.path.basename(source)!r} is not a keras.applications weights file "
                         "(an HDF5 file with a 'layer_names' attribute)")
    return "predictions" in names or "fc1000" in names


def _from_keras(spec, source):
    import keras

    if spec.name not in KERAS_APPLICATIONS:
        raise ValueError(f"keras.applications has no {spec.name}; its models kcnn imports: "
                         f"{', '.join(KERAS_APPLICATIONS)}")
    include_top = _keras_include_top(source)
    application = getattr(keras.applications, KERAS_APPLICATIONS[spec.name])(
        weights=None, include_top=include_top, input_shape=INPUT_SHAPE, classifier_activation=None)
    try:
        application.load_weights(source)
    except ValueError as error:
        raise ValueError(f"{os.path.basename(source)!r} does not fit keras.applications."
                         f"{KERAS_APPLICATIONS[spec.name]}: {str(error).strip().splitlines()[0]}") from None
    options = {"version": "v1"} if spec.family == "resnet" else {}
    model = build(spec.name, input_shape=INPUT_SHAPE, include_top=include_top, classifier_activation=None,
                  **options)
    return transfer_keras_applications(application, model), options, []


def _hash_check(official):
    """What the published hash of ``official`` vouches for, as the metadata records it."""
    if official is None:
        return None  # not an official file: nothing published to check against
    if official.hash_kind == "none":
        return f"none: {official.library} publishes no hash (sha256 recorded)"
    return f"{official.hash_kind}:{official.hash}"


def import_weights(source_library, model, source, out, *, preprocessing=None, class_names=None, official=None):
    """Converts ``source`` (a file of ``source_library``) into the kcnn weights file ``out``.

    ``preprocessing`` (a preset name) overrides the default: the catalogue's for an
    official file (``inception`` for torchvision's GoogLeNet, which runs its ImageNet
    weights with ``transform_input=True``), else ``caffe`` for keras.applications
    and ``torch`` for torchvision and timm; ``class_names`` (a list) those of a non-ImageNet classifier.
    ``official``: the catalogue entry the caller already checked ``source`` against
    (``kcnn.weights.fetch``); by default the file is identified by its name or hash.
    Returns the metadata written into ``out``.
    """
    if source_library not in SOURCES:
        raise ValueError(f"unknown source {source_library!r}; accepted: {', '.join(SOURCES)}")
    spec = registry.get(model)
    files.check_destination(out)
    if not os.path.isfile(source):
        raise ValueError(f"source file {os.fspath(source)!r} does not exist")
    digests = catalog.file_digests(source)
    official = official or catalog.identify(source_library, source, digests)
    if official is not None and official.model != spec.name:
        raise ValueError(f"{os.path.basename(source)!r} is {source_library}'s {official.model}, "
                         f"not {spec.name}; import it with --model {official.model}")
    if source_library == "keras":
        converted, options, skipped = _from_keras(spec, source)
    else:
        converted, options, skipped = _from_state_dict(source_library, spec, source)
    include_top = any(layer.name == "predictions" for layer in converted.layers)
    classes = converted.get_layer("predictions").units if include_top else None
    default_preprocessing = official.preprocessing if official else "caffe" if source_library == "keras" else "torch"
    if class_names is None and classes == 1000:
        class_names = catalog.imagenet_class_names()
    if class_names is not None and classes is not None and len(class_names) != classes:
        raise ValueError(f"{len(class_names)} class names given for a {classes}-class classifier")
    metadata = {
        "architecture": spec.name, "options": options, "include_top": include_top, "classes": classes,
        "input_shape": list(INPUT_SHAPE),
        "preprocessing": preset(preprocessing or default_preprocessing).to_dict(),
        "class_names": class_names, "eval_transform": "center_crop",  # as the sources evaluate ImageNet
        "source": {"library": source_library, "file": os.path.basename(source), "sha256": digests["sha256"],
                   "url": official.url if official else None,
                   "top1": official.top1 if official else None, "top5": official.top5 if official else None,
                   "hash_check": _hash_check(official)},
        "skipped_tensors": skipped,
    }
    files.save(converted, out, metadata)
    return metadata
