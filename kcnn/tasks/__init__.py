"""Task models on zoo backbones: classification, segmentation, detection and instance segmentation (models,
losses, metrics, decoding).

The task models (:mod:`kcnn.tasks.models`) are Keras models: ``ImageClassifier``,
``ImageSegmenter``, ``ObjectDetector`` (RetinaNet, Faster R-CNN) and ``InstanceSegmenter`` (Mask R-CNN).
``build_task_model`` picks one by task name;
``load_task_model`` rebuilds a fine-tuned model from its kcnn weights file (the metadata
says which backbone, head, classes and input size).

>>> model = build_task_model("segmentation", "resnet20", 3, image_size=(32, 32), head="fcn",
...                          head_options={"width": 16})
>>> model.output_shape, type(model).__name__
((None, 32, 32, 3), 'ImageSegmenter')
"""

import os

from kcnn.tasks.models import TASK_MODELS, ImageClassifier, ImageSegmenter, InstanceSegmenter, ObjectDetector
from kcnn.tasks.segmentation import HEADS as SEGMENTATION_HEADS
from kcnn.weights import Preprocessing, read_metadata

TASKS = {"segmentation": SEGMENTATION_HEADS, "detection": ObjectDetector.heads,
         "instance_segmentation": InstanceSegmenter.heads}  # the heads of the fine-tuning tasks
DEFAULT_HEAD = {task: heads[0] for task, heads in TASKS.items()} | {"segmentation": "fcn"}

__all__ = ["DEFAULT_HEAD", "TASKS", "TASK_MODELS", "ImageClassifier", "ImageSegmenter", "InstanceSegmenter",
           "ObjectDetector",
           "build_task_model", "check_task", "load_task_model"]


def check_task(task, head):
    """The head to use for ``task`` (its default for ``None``); unknown combinations raise."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    head = DEFAULT_HEAD[task] if head is None else head
    if head not in TASKS[task]:
        raise ValueError(f"unknown {task} head {head!r}; accepted: {', '.join(TASKS[task])}")
    return head


def build_task_model(task, backbone, num_classes, *, image_size, head=None, backbone_options=None,
                     head_options=None, backbone_weights=None):
    """``backbone`` (a zoo name) with a ``task`` head for ``num_classes`` at ``image_size`` (H, W).

    ``backbone_weights``: a kcnn classification weights file (``kcnn weights import`` or a
    ``kcnn pretrain`` run's ``model.weights.h5``) loaded into the backbone by layer name.
    """
    head = check_task(task, head)
    return TASK_MODELS[task](backbone, num_classes, image_size=tuple(image_size), head=head,
                             backbone_options=backbone_options, head_options=head_options,
                             backbone_weights=backbone_weights)


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
