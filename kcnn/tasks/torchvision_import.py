"""torchvision's Faster R-CNN and Mask R-CNN (``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``, any ResNet
backbone and class count) as kcnn task models: every tensor mapped, converted and checked.

Module names are torchvision's current ones (``backbone.fpn.inner_blocks.0.0``, ``rpn.head.conv.0.0``,
``roi_heads.mask_head.0.0``) or those of its released checkpoints (``inner_blocks.0``, ``rpn.head.conv``,
``mask_head.mask_fcn1``), which torchvision upgrades on load. Besides the axis orders of
:mod:`kcnn.weights.state_dict`, box regressions change coordinate order (torchvision's dx, dy, dw, dh to
kcnn's dy, dx, dh, dw) and the mask head's transposed conv goes from ``(in, out, kh, kw)`` to ``(kh, kw, out, in)``.
The imported model pools with ``aligned=False`` (torchvision's ``MultiScaleRoIAlign``) and keeps torchvision's
COCO labels: kcnn class ``i`` is torchvision's label ``i + 1`` (``COCO_LABELS``; 90 ids, "N/A" where COCO
left a gap).

>>> holds_detector({"rpn.head.cls_logits.weight": None, "roi_heads.box_predictor.cls_score.weight": None})
True
"""

import os

import numpy as np

from kcnn.tasks.models import InstanceSegmenter, ObjectDetector
from kcnn.tasks.rcnn import BOX_POOL, PAPER
from kcnn.weights import files
from kcnn.weights.catalog import file_digests
from kcnn.weights.preprocessing import preset
from kcnn.weights.state_dict import IGNORED, dense_kernel, read_state_dict
from kcnn.weights.torch_layout import module_names

BACKBONE = "backbone.body."
IMAGE_SIZE = (800, 800)  # torchvision's detectors resize the shorter side to 800
COCO_LABELS = (  # torchvision's detection categories 1..90 (its meta["categories"] without "__background__")
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "N/A", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "N/A", "backpack", "umbrella", "N/A", "N/A", "handbag", "tie",
    "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "N/A", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake",
    "chair", "couch", "potted plant", "bed", "N/A", "dining table", "N/A", "N/A", "toilet", "N/A", "tv", "laptop",
    "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "N/A",
    "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")
TORCH_TO_KCNN_BOX = [1, 0, 3, 2]  # (dx, dy, dw, dh) -> (dy, dx, dh, dw); its own inverse
HEAD_MODULES = {  # kcnn layer -> torchvision module, current name first, then the released checkpoints'
    **{f"fpn_lateral_p{level}": (f"backbone.fpn.inner_blocks.{level - 2}.0", f"backbone.fpn.inner_blocks.{level - 2}")
       for level in (2, 3, 4, 5)},
    **{f"fpn_output_p{level}": (f"backbone.fpn.layer_blocks.{level - 2}.0", f"backbone.fpn.layer_blocks.{level - 2}")
       for level in (2, 3, 4, 5)},
    "rpn_conv": ("rpn.head.conv.0.0", "rpn.head.conv"),
    "rpn_objectness": ("rpn.head.cls_logits",), "rpn_box": ("rpn.head.bbox_pred",),
    "box_fc6": ("roi_heads.box_head.fc6",), "box_fc7": ("roi_heads.box_head.fc7",),
    "box_class": ("roi_heads.box_predictor.cls_score",), "box_regression": ("roi_heads.box_predictor.bbox_pred",),
    **{f"mask_conv{i}": (f"roi_heads.mask_head.{i - 1}.0", f"roi_heads.mask_head.mask_fcn{i}") for i in (1, 2, 3, 4)},
    "mask_upsample": ("roi_heads.mask_predictor.conv5_mask",),
    "mask_logits": ("roi_heads.mask_predictor.mask_fcn_logits",),
}


def holds_detector(tensors):
    """Whether a torchvision state dict (``{name: array}``) is a Faster/Mask R-CNN's."""
    return "rpn.head.cls_logits.weight" in tensors and "roi_heads.box_predictor.cls_score.weight" in tensors


def _reorder_boxes(array, axis):
    """Reorders groups of 4 box coordinates along ``axis`` between torchvision's order and kcnn's."""
    array = np.moveaxis(array, axis, 0)
    shape = array.shape
    array = array.reshape(-1, 4, *shape[1:])[:, TORCH_TO_KCNN_BOX].reshape(shape)
    return np.moveaxis(array, 0, axis)


def _convert(name, layer_kind, tensor, channels):
    """A torchvision tensor (``.weight`` when ``tensor.ndim > 1``) as the kcnn layer's variable."""
    if tensor.ndim == 1:
        return _reorder_boxes(tensor, 0) if name in ("rpn_box", "box_regression") else tensor
    if layer_kind == "Conv2DTranspose":
        return tensor.transpose(2, 3, 1, 0)
    if tensor.ndim == 4:
        kernel = tensor.transpose(2, 3, 1, 0)
        return _reorder_boxes(kernel, 3) if name == "rpn_box" else kernel
    kernel = dense_kernel(tensor, (BOX_POOL, BOX_POOL, channels) if name == "box_fc6" else None)
    return _reorder_boxes(kernel, 1) if name == "box_regression" else kernel


def _module(tensors, candidates, name):
    for module in candidates:
        if f"{module}.weight" in tensors:
            return module
    raise ValueError(f"missing tensor {candidates[0]}.weight (for kcnn layer {name!r})")


def _pairs(model):
    """(kcnn layer, torchvision module candidates) of every weighted layer of a kcnn R-CNN on a ResNet."""
    backbone = set(model.backbone_layers)
    weighted = [layer for layer in model.layers if layer.weights]
    names = module_names("resnet", "torchvision", [layer.name for layer in weighted if layer.name in backbone])
    heads = model.roi_heads
    second_stage = [heads.box_fc6, heads.box_fc7, heads.box_class, heads.box_regression, *heads.mask_layers]
    return ([(layer, (BACKBONE + names[layer.name],)) for layer in weighted if layer.name in backbone]
            + [(layer, HEAD_MODULES[layer.name]) for layer in weighted if layer.name not in backbone]
            + [(layer, HEAD_MODULES[layer.name]) for layer in second_stage])


def detector_from_state_dict(tensors, backbone, *, image_size):
    """The kcnn Faster R-CNN or Mask R-CNN holding torchvision state dict ``tensors``.

    ``backbone``: the kcnn ResNet the file's ``backbone.body`` is (``resnet50`` for torchvision's own);
    ``image_size``: the kcnn model's fixed input size (H, W). Nothing is set unless every tensor fits.
    """
    if not holds_detector(tensors):
        raise ValueError("the file holds no torchvision Faster R-CNN or Mask R-CNN (no rpn.head and "
                         "roi_heads.box_predictor tensors)")
    masks = "roi_heads.mask_predictor.mask_fcn_logits.weight" in tensors
    classes = tensors["roi_heads.box_predictor.cls_score.weight"].shape[0] - 1
    options = {**PAPER, "fpn_width": tensors["rpn.head.cls_logits.weight"].shape[1],
               "representation_size": tensors["roi_heads.box_head.fc7.weight"].shape[0], "aligned": False}
    if masks:
        options["mask_width"] = tensors["roi_heads.mask_predictor.conv5_mask.weight"].shape[1]
    cls, head = (InstanceSegmenter, "mask_rcnn") if masks else (ObjectDetector, "faster_rcnn")
    model = cls(backbone, classes, image_size=image_size, head=head, backbone_options={"version": "v1.5"},
                head_options=options)
    arrays, used = [], set()
    for layer, candidates in _pairs(model):
        module = _module(tensors, candidates, layer.name)
        keys = ([f"{module}.{key}" for key in ("weight", "bias", "running_mean", "running_var")]
                if type(layer).__name__ == "BatchNormalization" else
                [f"{module}.{key}" for key in ("weight", "bias")[:len(layer.weights)]])
        values = []
        for variable, key in zip(layer.weights, keys):
            if key not in tensors:
                raise ValueError(f"missing tensor {key!r} (for kcnn layer {layer.name!r})")
            value = _convert(layer.name, type(layer).__name__, tensors[key], options["fpn_width"])
            if value.shape != tuple(variable.shape):
                raise ValueError(f"tensor {key!r} has shape {tuple(tensors[key].shape)}, which does not fit kcnn "
                                 f"layer {layer.name!r} ({tuple(variable.shape)} in Keras layout)")
            values.append(value)
            used.add(key)
        arrays.append((layer, values))
    unused = sorted(key for key in tensors if key not in used and not key.endswith(IGNORED))
    if unused:
        raise ValueError(f"unexpected tensor(s) with no kcnn layer to take them: {', '.join(unused[:5])}")
    for layer, values in arrays:
        layer.set_weights(values)
    return model


def import_detector(backbone, source, out, *, image_size=None, class_names=None):
    """Converts torchvision Faster/Mask R-CNN file ``source`` into the kcnn weights file ``out`` (a fine-tuned task
    model's: ``kcnn.load``, ``kcnn export`` and ``kcnn finetune --weights``-free use). Returns its metadata."""
    files.check_destination(out)
    if not os.path.isfile(source):
        raise ValueError(f"source file {os.fspath(source)!r} does not exist")
    model = detector_from_state_dict(read_state_dict(source), backbone, image_size=image_size or IMAGE_SIZE)
    if class_names is None:
        class_names = list(COCO_LABELS) if model.num_classes == len(COCO_LABELS) else [
            f"class {i + 1}" for i in range(model.num_classes)]
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names given for a {model.num_classes}-class detector")
    arguments = model.get_config()
    metadata = {
        "task": model.task, "head": arguments["head"], "head_options": arguments["head_options"],
        "architecture": arguments["backbone"], "options": arguments["backbone_options"], "include_top": False,
        "classes": model.num_classes, "input_shape": [*arguments["image_size"], 3],
        "preprocessing": preset("torch").to_dict(), "class_names": list(class_names), "eval_transform": "resize",
        "source": {"library": "torchvision", "file": os.path.basename(source),
                   "sha256": file_digests(source)["sha256"], "url": None, "top1": None, "top5": None,
                   "hash_check": None},
        "skipped_tensors": [],
    }
    files.save(model, out, metadata)
    return metadata
