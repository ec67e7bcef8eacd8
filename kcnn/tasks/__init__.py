"""Task heads on zoo backbones: segmentation and detection (models, losses, metrics, decoding).

``build_task_model`` puts a head on any zoo backbone; ``load_task_model`` rebuilds a
fine-tuned model from its kcnn weights file (the metadata says which backbone,
head, classes and input size).

>>> model = build_task_model("segmentation", "resnet20", 3, image_size=(32, 32), head="fcn",
...                          head_options={"width": 16})
>>> model.output_shape
(None, 32, 32, 3)
"""

import os

from kcnn import registry
from kcnn.backbone import backbone as build_backbone
from kcnn.tasks.detection import build_retinanet
from kcnn.tasks.segmentation import HEADS as SEGMENTATION_HEADS
from kcnn.tasks.segmentation import build_segmenter
from kcnn.weights import Preprocessing, read_metadata

TASKS = {"segmentation": SEGMENTATION_HEADS, "detection": ("retinanet",)}
DEFAULT_HEAD = {"segmentation": "fcn", "detection": "retinanet"}
BACKBONE_OPTIONS_BY_FAMILY = {"output_stride": ("resnet",)}  # what a task may ask of some backbones only


def check_task(task, head):
    """The head to use for ``task`` (its default for ``None``); unknown combinations raise."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    head = DEFAULT_HEAD[task] if head is None else head
    if head not in TASKS[task]:
        raise ValueError(f"unknown {task} head {head!r}; accepted: {', '.join(TASKS[task])}")
    return head


def _check_backbone_options(name, options):
    family = registry.get(name).family
    for key in options:
        families = BACKBONE_OPTIONS_BY_FAMILY.get(key)
        if families is not None and family not in families:
            raise ValueError(f"{key} is an option of {', '.join(families)} backbones, not of {name} ({family})")


def build_task_model(task, backbone, num_classes, *, image_size, head=None, backbone_options=None,
                     head_options=None, backbone_weights=None):
    """``backbone`` (a zoo name) with a ``task`` head for ``num_classes`` at ``image_size`` (H, W).

    ``backbone_weights``: a kcnn classification weights file (``kcnn weights import`` or a
    ``kcnn pretrain`` run's ``model.weights.h5``) loaded into the backbone by layer name.
    """
    head = check_task(task, head)
    spec = registry.get(backbone)
    options = dict(backbone_options or {})
    _check_backbone_options(spec.name, options)
    if backbone_weights is not None:
        options["weights"] = os.fspath(backbone_weights)
    features = build_backbone(spec.name, input_shape=(*image_size, spec.input_shape[2]), **options)
    head_options = dict(head_options or {})
    if task == "segmentation":
        model = build_segmenter(features, num_classes, head=head, **head_options)
    else:
        model = build_retinanet(features, num_classes, image_size=tuple(image_size), **head_options)
    model.backbone_layers = [layer.name for layer in features.layers]
    return model


def load_task_model(path):
    """A fine-tuned model from its kcnn weights file, with ``task_metadata`` and ``preprocessing`` set."""
    metadata = read_metadata(path)
    if metadata is None or metadata.get("task") not in TASKS:
        raise ValueError(f"{os.fspath(path)!r} holds no kcnn {' or '.join(TASKS)} model "
                         "(a `kcnn finetune` run's model.weights.h5)")
    model = build_task_model(metadata["task"], metadata["architecture"], metadata["classes"],
                             image_size=tuple(metadata["input_shape"][:2]), head=metadata["head"],
                             backbone_options=metadata["options"], head_options=metadata["head_options"])
    model.load_weights(path)
    model.task_metadata = metadata
    model.preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
    return model
