"""``finetune``: any zoo model as the backbone of a segmenter or detector, trained on a dense dataset.

The loop is :mod:`kcnn.train.engine`'s, with a fine-tuning policy:

- the backbone starts from ``weights`` (a kcnn classification weights file, a
  ``kcnn pretrain`` run directory, or "imagenet": ``kcnn.weights.fetch``) or from scratch;
- ``freeze_backbone_epochs``: only the head trains for that many epochs, then all;
- ``freeze_bn`` (default: when starting from weights): the backbone's BatchNorm layers
  keep their statistics and scales (inference mode), as detection and segmentation
  fine-tuning does with small batches;
- ``backbone_lr_factor`` (default 0.1 from weights, 1 from scratch): the backbone's
  learning rate relative to the head's (two parameter groups; one loss scale under float16).

``model.weights.h5`` of the run: ``kcnn.tasks.load_task_model`` rebuilds it.
"""

import os

from kcnn import registry
from kcnn.tasks import DEFAULT_HEAD, check_task
from kcnn.train import engine, recipes
from kcnn.weights import Preprocessing, default_preprocessing, fetch, read_metadata

IMAGE_SIZE = (512, 512)  # real datasets (DeepLab crops 513, RetinaNet 512-800)
SHAPES_IMAGE_SIZE = (96, 96)  # the generated `shapes`: 2 CPU cores in minutes
# From scratch (no weights), on a user's few thousand images or fewer: kcnn's small-data recipe and heads,
# which learn in minutes on a CPU (benchmarks/README.md); the papers' recipes and full-size heads are made
# for ImageNet-initialised backbones and long schedules. GroupNorm in the detection towers (torchvision's
# RetinaNet v2): without it the towers' ReLUs die from scratch (kcnn.tasks.detection).
# U-Net: made for training from scratch on few images (Ronneberger et al. 2015), its skips keep small objects.
# Faster and Mask R-CNN: a 64-wide pyramid and mask head, 256-wide box head, 128 RoIs per image (Detectron's
# lighter setting) and 300 training proposals (small images hold few objects): a fraction of the second stage's work.
_SMALL_RCNN = {"fpn_width": 64, "representation_size": 256, "sampled_rois": 128, "train_proposals": 300}
FROM_SCRATCH = {"recipe": "small_data",
                "head": {"segmentation": "unet", "detection": "retinanet", "instance_segmentation": "mask_rcnn"},
                "head_options": {"fcn": {"width": 64}, "deeplabv3": {"width": 64}, "unet": {"width": 64},
                                 "retinanet": {"fpn_width": 64, "head_width": 64, "head_depth": 2,
                                               "head_norm": "group"},
                                 "faster_rcnn": _SMALL_RCNN, "mask_rcnn": {**_SMALL_RCNN, "mask_width": 64}}}


def backbone_weights_path(weights, backbone=None, **options):
    """A kcnn classification weights file, or the ``model.weights.h5`` of a ``kcnn pretrain`` run;
    "imagenet", "torchvision", "timm" or "keras": the published file of ``backbone`` for the
    variant ``options`` ask for, downloaded and converted once (``kcnn.weights.fetch``)."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights in fetch.KEYWORDS:
        return fetch.fetch(backbone, weights, **options)
    if not os.path.exists(weights):
        raise ValueError(f"--weights {os.fspath(weights)!r} does not exist (a kcnn weights file, a `kcnn pretrain` "
                         f"run, or one of {', '.join(fetch.KEYWORDS)})")
    path = os.fspath(weights)
    path = os.path.join(path, "model.weights.h5") if os.path.isdir(path) else path
    try:
        metadata = read_metadata(path) if os.path.isfile(path) else None
    except ValueError:  # not HDF5 at all
        metadata = None
    if metadata is None or metadata.get("task", "classification") != "classification":
        raise ValueError(f"--weights {os.fspath(weights)!r} is not a kcnn classification weights file or "
                         "`kcnn pretrain` run (ImageNet weights: --weights imagenet, or `kcnn weights import`)")
    return path


def _defaults_note(task, head, weights, defaults, default_heads, given_heads):
    """One line: the recipe, head and head options chosen for the caller, and why (``None``: none was).

    >>> print(_defaults_note("segmentation", "unet", None, {"recipe": "small_data", "head": "unet"}, {"width": 64}, {}))
    from scratch (no weights): recipe small_data, head unet, head options width=64 (kcnn's small-data defaults; with --weights imagenet: recipe deeplabv3, head fcn, the paper's head sizes)
    """
    chosen = [f"{key} {value}" for key, value in defaults.items() if value]
    heads = {key: value for key, value in default_heads.items() if key not in given_heads}
    if heads:
        chosen.append(f"head options {', '.join(f'{key}={value}' for key, value in heads.items())}")
    if not chosen:
        return None
    if weights:
        return (f"backbone from weights: {', '.join(chosen)} (the paper's; from scratch: recipe "
                f"{FROM_SCRATCH['recipe']}, head {FROM_SCRATCH['head'][task]}, kcnn's small-data head sizes)")
    paper_head = DEFAULT_HEAD[task] if defaults.get("head") else head
    return (f"from scratch (no weights): {', '.join(chosen)} (kcnn's small-data defaults; with --weights imagenet: "
            f"recipe {recipes.FINETUNE_RECIPE[paper_head]}, head {paper_head}, the paper's head sizes)")


def finetune(backbone, task, dataset, out, *, head=None, recipe=None, overrides=None, epochs=None, steps=None,
             resume=False, force_resume=False, verbose=1, weights=None, image_size=None, freeze_bn=None,
             backbone_lr_factor=None, head_options=None, **settings):
    """Fine-tunes zoo model ``backbone`` with a ``task`` head on ``dataset`` into run directory ``out``.

    ``settings``: ``RunSettings`` fields (freeze_backbone_epochs, backbone_options, precision, strategy,
    checkpoint_every, seed, data_dir, manual_dir, download, xla). Returns the history rows.

    >>> import os, tempfile, kcnn
    >>> run = os.path.join(tempfile.mkdtemp(), "fcn")
    >>> rows = kcnn.finetune("resnet20", "segmentation", "shapes", run, steps=2, image_size=(32, 32),
    ...                      head_options={"width": 8}, verbose=0)
    >>> rows[-1]["step"], "val_mean_iou" in rows[-1], type(kcnn.load(run)).__name__
    (2, True, 'ImageSegmenter')
    """
    spec = registry.get(backbone)
    check_task(task, head)
    if epochs is not None and steps is not None:
        raise ValueError("give --epochs or --steps, not both")
    weights = backbone_weights_path(weights, spec.name, **(settings.get("backbone_options") or {}))
    chosen_head = check_task(task, head or (None if weights else FROM_SCRATCH["head"][task]))
    chosen = recipes.get(recipe or (recipes.FINETUNE_RECIPE[chosen_head] if weights else FROM_SCRATCH["recipe"]),
                         **(overrides or {}))
    size = tuple(int(side) for side in (image_size or (SHAPES_IMAGE_SIZE if os.fspath(dataset) == "shapes"
                                                       else IMAGE_SIZE)))
    defaults = {"recipe": recipe is None and chosen.name, "head": head is None and chosen_head}
    head = chosen_head
    default_heads = {} if weights else FROM_SCRATCH["head_options"][head]
    note = _defaults_note(task, head, weights, defaults, default_heads, head_options or {})
    head_options = {**default_heads, **(head_options or {})}
    backbone_lr_factor = (0.1 if weights else 1.0) if backbone_lr_factor is None else backbone_lr_factor
    if settings.get("freeze_backbone_epochs", 0) < 0 or backbone_lr_factor < 0:
        raise ValueError("freeze_backbone_epochs and backbone_lr_factor must not be negative")
    channels = spec.input_shape[2]
    preprocessing = (Preprocessing.from_dict(read_metadata(weights)["preprocessing"]) if weights
                     else default_preprocessing(channels))
    run = engine.RunSettings(task=task, backbone=spec.name, dataset=os.fspath(dataset), out=os.fspath(out),
                             recipe=chosen, input_shape=(*size, channels), head=head, weights=weights,
                             head_options=head_options, freeze_bn=weights is not None if freeze_bn is None else
                             freeze_bn, backbone_lr_factor=float(backbone_lr_factor), epochs=epochs, steps=steps,
                             **settings)
    return engine.train(run, preprocessing=preprocessing, resume=resume, force_resume=force_resume,
                        verbose=verbose, notes=(note,))
