"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection") on any zoo backbone: model and loss.

The feature pyramid (:mod:`kcnn.tasks.fpn`) runs over ``C3..C5``; ``P6`` is a 3x3/2 conv on ``C5``,
``P7`` (and above) ReLU + 3x3/2 conv on the level below.

The class and box subnets are shared by all levels (the same weights); their outputs are
flattened in the anchor order of :mod:`kcnn.tasks.anchors` and cast to float32. Their towers are
the paper's (conv + ReLU, ``head_norm="none"``, the default: the layout of existing weight files)
or, with ``head_norm="group"``, conv + GroupNorm + ReLU as torchvision's ``retinanet_resnet50_fpn_v2``
(Wu & He 2018): the plain 256-wide, 4-deep towers, with their N(0, 0.01^2) init, do not train from
scratch under Adam (kcnn's ``shapes`` recipe): loss spikes kill most of their ReLUs and the class
subnet stays at its prior; with GroupNorm they learn.

>>> import kcnn
>>> backbone = kcnn.backbone("resnet20", input_shape=(32, 32, 3))
>>> model = build_retinanet(backbone, 2, image_size=(32, 32), fpn_width=8, head_width=8, head_depth=1)
>>> {key: tuple(value.shape) for key, value in model.output.items()}
{'classification': (None, 207, 2), 'box_regression': (None, 207, 4)}
>>> tuple(anchors_for(model).shape), retinanet_config(model)["num_classes"]
((207, 4), 2)
"""

import math

import keras
import tensorflow as tf
from keras import ops

from kcnn.models import deep_graph_recursion
from kcnn.tasks.anchors import AnchorConfig, check_image_size, generate
from kcnn.tasks.fpn import feature_pyramid

HEAD_STDDEV = 0.01  # the paper's init of every subnet conv: N(0, 0.01^2), one initializer (seed) per layer
HEAD_NORMS = ("none", "group")  # the subnets' normalisation: the paper's plain towers, or GroupNorm (torchvision v2)
GROUP_NORM_GROUPS = 32  # Wu & He 2018; torchvision's retinanet_resnet50_fpn_v2 heads
GROUP_NORM_EPSILON = 1e-5  # PyTorch's GroupNorm default (Keras' is 1e-3)


@keras.saving.register_keras_serializable(package="kcnn")
class RetinaNetOutputs(keras.layers.Layer):
    """Flattens the per-level head maps into ``{"classification", "box_regression"}`` float32 tensors.

    Carries the model's detection settings (``num_classes``, ``image_size``,
    ``anchor_config``), so that a reloaded model still knows its anchors.
    """

    def __init__(self, num_classes, image_size, anchor_config, **kwargs):
        super().__init__(**{"dtype": "float32", **kwargs})
        self.num_classes, self.image_size = int(num_classes), check_image_size(image_size)
        self.anchor_config = (anchor_config if isinstance(anchor_config, AnchorConfig)
                              else AnchorConfig(**anchor_config))

    def call(self, classification, box_regression):
        def flatten(maps, width):
            return ops.concatenate([ops.reshape(ops.cast(m, "float32"), (-1, math.prod(m.shape[1:]) // width, width))
                                    for m in maps], axis=1)

        return {"classification": flatten(classification, self.num_classes),
                "box_regression": flatten(box_regression, 4)}

    def get_config(self):
        config = self.anchor_config
        return {**super().get_config(), "num_classes": self.num_classes, "image_size": self.image_size,
                "anchor_config": {"min_level": config.min_level, "max_level": config.max_level,
                                  "scales": config.scales, "aspect_ratios": config.aspect_ratios,
                                  "size": config.size}}


def _outputs_layer(model):
    for layer in model.layers:
        if isinstance(layer, RetinaNetOutputs):
            return layer
    raise ValueError(f"{model.name} is not a RetinaNet from build_retinanet (no RetinaNetOutputs layer)")


def retinanet_config(model):
    """``{"num_classes", "image_size", "anchor_config"}`` of a model from :func:`build_retinanet` (also reloaded)."""
    layer = _outputs_layer(model)
    return {"num_classes": layer.num_classes, "image_size": layer.image_size, "anchor_config": layer.anchor_config}


def anchors_for(model):
    """The anchors of a RetinaNet's outputs: float32 ``[total_anchors, 4]`` pixels (ymin, xmin, ymax, xmax)."""
    layer = _outputs_layer(model)
    return generate(layer.image_size, layer.anchor_config)


def _norm_groups(width):
    """GroupNorm's groups for a tower of ``width`` channels: 32 (Wu & He 2018) where it divides, else gcd(32, width)."""
    return math.gcd(GROUP_NORM_GROUPS, width)


def _subnet(name, width, depth, outputs, bias, norm="none"):
    """The shared tower: ``depth`` x (3x3 conv ``width`` [+ GroupNorm] + ReLU), then a 3x3 conv to ``outputs`` channels.

    ``norm="group"``: each tower conv has no bias and is followed by GroupNorm (``<name>_norm<i>``,
    shared by all levels like the convs; torchvision's ``retinanet_resnet50_fpn_v2``).
    """
    def conv(filters, **options):
        return keras.layers.Conv2D(filters, 3, padding="same",
                                   kernel_initializer=keras.initializers.RandomNormal(stddev=HEAD_STDDEV), **options)

    tower = []
    for i in range(depth):
        if norm == "group":
            tower += [conv(width, use_bias=False, name=f"{name}_conv{i + 1}"),
                      keras.layers.GroupNormalization(_norm_groups(width), epsilon=GROUP_NORM_EPSILON,
                                                      name=f"{name}_norm{i + 1}"),
                      keras.layers.ReLU(name=f"{name}_relu{i + 1}")]
        else:
            tower.append(conv(width, activation="relu", name=f"{name}_conv{i + 1}"))
    tower.append(conv(outputs, bias_initializer=keras.initializers.Constant(bias), name=f"{name}_output"))

    def apply(x):
        for layer in tower:
            x = layer(x)
        return x

    return apply


def build_retinanet(backbone, num_classes, *, image_size, min_level=3, max_level=7, fpn_width=256,
                    head_width=256, head_depth=4, head_norm="none", prior_probability=0.01, anchor_config=None,
                    name=None):
    """RetinaNet on ``backbone`` (``kcnn.backbone(name, input_shape=(H, W, C))``; its layers become the model's).

    Returns a functional model mapping float images ``[B, H, W, C]`` to
    ``{"classification": [B, N, num_classes] logits, "box_regression": [B, N, 4]}``
    (float32, anchors as in :func:`anchors_for`). ``anchor_config`` defaults to the
    paper's (:class:`AnchorConfig` on ``min_level..max_level``); one given must have those levels.
    The class subnet's last bias is ``-log((1 - pi) / pi)`` with ``pi = prior_probability``.
    ``head_norm``: "none" (the paper's towers: conv + ReLU) or "group" (conv + GroupNorm + ReLU, as
    torchvision's ``retinanet_resnet50_fpn_v2``): GroupNorm lets full-size heads train from scratch.
    """
    height, width = check_image_size(image_size)
    config = anchor_config or AnchorConfig(min_level=min_level, max_level=max_level)
    if (config.min_level, config.max_level) != (min_level, max_level):
        raise ValueError(f"anchor_config levels {config.min_level}..{config.max_level} differ from "
                         f"min_level..max_level {min_level}..{max_level}; pass the same levels")
    if config.min_level > 5:
        raise ValueError(f"min_level must be <= 5 (the pyramid's top backbone level is C5), got {config.min_level}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not 0 < prior_probability < 1:
        raise ValueError(f"prior_probability must be in (0, 1), got {prior_probability}")
    if min(fpn_width, head_width) < 1 or head_depth < 0:
        raise ValueError(f"fpn_width and head_width must be >= 1 and head_depth >= 0, "
                         f"got {fpn_width}, {head_width}, {head_depth}")
    if head_norm not in HEAD_NORMS:
        raise ValueError(f"unknown head_norm {head_norm!r}; accepted: {', '.join(HEAD_NORMS)}")
    if not isinstance(backbone.output, dict):
        raise ValueError(f"backbone must return a dict {{'P<n>': map}} (use kcnn.backbone), got {backbone.output!r}")
    fixed = tuple(backbone.input.shape[1:3])
    if fixed != (height, width):
        raise ValueError(f"image_size {(height, width)} differs from the backbone's input size {fixed}; "
                         f"accepted: a backbone built with kcnn.backbone(name, input_shape=(H, W, C))")
    with deep_graph_recursion():
        features = dict(backbone.output)
        pyramid = feature_pyramid(features, (height, width), config.min_level, config.max_level, fpn_width)
        anchors = config.per_location
        classify = _subnet("class_subnet", head_width, head_depth, anchors * num_classes,
                           -math.log((1 - prior_probability) / prior_probability), head_norm)
        regress = _subnet("box_subnet", head_width, head_depth, anchors * 4, 0.0, head_norm)
        outputs = RetinaNetOutputs(num_classes, (height, width), config, name="retinanet_outputs")(
            [classify(p) for p in pyramid], [regress(p) for p in pyramid])
        return keras.Model(backbone.input, outputs, name=name or f"{backbone.name.removesuffix('_backbone')}_retinanet")


def retinanet_loss(class_targets, box_targets, outputs, *, alpha=0.25, gamma=2.0, box_delta=1.0, box_weight=1.0):
    """Per-image RetinaNet loss, float32 ``[B]``.

    ``(sum of the focal loss over non-ignored anchors and classes + box_weight * sum
    of the Huber loss with ``box_delta`` (in encoded units; at 1.0 it is smooth L1 with
    beta 1) over the positives' 4 coordinates) / max(1, positives of the image)``.
    ``class_targets`` int ``[B, N]`` (class, -1 background, -2 ignored) and
    ``box_targets`` ``[B, N, 4]`` are what ``encode_targets`` gives, batched.

    >>> outputs = {"classification": tf.zeros((1, 2, 1)), "box_regression": tf.zeros((1, 2, 4))}
    >>> loss = retinanet_loss(tf.constant([[0, -1]]), tf.zeros((1, 2, 4)), outputs)
    >>> round(float(loss[0]), 4)  # 2 anchors at p = 0.5: (0.25 + 0.75) * 0.25 * log 2
    0.1733
    """
    if not 0 <= alpha <= 1 or gamma < 0 or box_delta <= 0 or box_weight < 0:
        raise ValueError(f"need 0 <= alpha <= 1, gamma >= 0, box_delta > 0, box_weight >= 0; "
                         f"got {alpha}, {gamma}, {box_delta}, {box_weight}")
    logits = tf.cast(outputs["classification"], tf.float32)
    deltas = tf.cast(outputs["box_regression"], tf.float32)
    class_targets = tf.cast(class_targets, tf.int32)
    labels = tf.one_hot(class_targets, tf.shape(logits)[-1], dtype=tf.float32)  # all 0 for -1 and -2
    probability = tf.sigmoid(logits)
    p_t = labels * probability + (1 - labels) * (1 - probability)
    alpha_t = labels * alpha + (1 - labels) * (1 - alpha)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)
    focal = tf.reduce_sum(alpha_t * tf.pow(1 - p_t, gamma) * cross_entropy, axis=-1)
    focal = tf.reduce_sum(tf.where(class_targets > -2, focal, 0.0), axis=-1)
    error = tf.abs(tf.cast(box_targets, tf.float32) - deltas)
    huber = tf.where(error < box_delta, 0.5 * error**2, box_delta * (error - 0.5 * box_delta))
    positive = class_targets >= 0
    box = tf.reduce_sum(tf.where(positive, tf.reduce_sum(huber, axis=-1), 0.0), axis=-1)
    num_positive = tf.maximum(1.0, tf.reduce_sum(tf.cast(positive, tf.float32), axis=-1))
    return (focal + box_weight * box) / num_positive
