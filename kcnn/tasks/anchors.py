"""RetinaNet anchors, box encoding and IoU matching (Lin et al. 2017, "Focal Loss for Dense Object Detection").

Boxes are ``(ymin, xmin, ymax, xmax)``. Anchors are in pixels, ordered level by
level (``min_level`` first), then row-major over the level's grid of
``ceil(H / 2^l) x ceil(W / 2^l)`` cells, then anchor type (scale-major: all aspect
ratios of the first scale, then the second scale, ...). An anchor of level ``l``,
scale ``s`` and aspect ratio ``r = width / height`` is centred on its cell
(``(i + 0.5) * 2^l``) with area ``(size * 2^l * s)^2``.

>>> config = AnchorConfig()
>>> anchors = generate((64, 64), config)
>>> anchors.shape, config.per_location
(TensorShape([774, 4]), 9)
>>> [round(float(v), 3) for v in anchors[0]]  # P3, cell (0, 0), scale 1, width / height 0.5
[-18.627, -7.314, 26.627, 15.314]
>>> box = tf.constant([[10.0, 12.0, 40.0, 30.0]])
>>> [round(float(v), 3) for v in decode_boxes(encode_boxes(box, anchors[:1]), anchors[:1])[0]]
[10.0, 12.0, 40.0, 30.0]
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

# Box encoding weights (ty, tx, th, tw): the 0.1 / 0.2 "variances" of SSD, keras-cv and
# torchvision's Faster R-CNN, so encoded targets have about unit spread.
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
# Encoded log-sizes are clipped to +-log(1000 / 16) (Detectron's BBOX_XFORM_CLIP): no inf, no overflow.
LOG_SIZE_CLIP = math.log(1000.0 / 16)


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    """The paper's anchors: levels P3..P7, 3 scales x 3 aspect ratios, base size ``4 * stride``."""

    min_level: int = 3
    max_level: int = 7
    scales: tuple = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    aspect_ratios: tuple = (0.5, 1.0, 2.0)
    size: float = 4.0

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        object.__setattr__(self, "aspect_ratios", tuple(float(r) for r in self.aspect_ratios))
        if not 0 <= self.min_level <= self.max_level:
            raise ValueError(f"anchor levels must satisfy 0 <= min_level <= max_level, "
                             f"got {self.min_level}..{self.max_level}")
        if not self.scales or not self.aspect_ratios or min(self.scales + self.aspect_ratios) <= 0:
            raise ValueError(f"anchor scales and aspect_ratios must be non-empty and positive, "
                             f"got {self.scales} and {self.aspect_ratios}")
        if self.size <= 0:
            raise ValueError(f"anchor size must be positive (a multiple of the stride), got {self.size}")

    @property
    def levels(self):
        return range(self.min_level, self.max_level + 1)

    @property
    def per_location(self):
        """Anchors per grid cell (A)."""
        return len(self.scales) * len(self.aspect_ratios)


def check_image_size(image_size):
    """``image_size`` as a ``(height, width)`` tuple of positive ints, or a one-line ValueError."""
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be two positive integers, got {image_size!r}")
    return height, width


def grid_size(image_size, level):
    """The anchor grid (and pyramid map) size of ``level``: ``(ceil(H / 2^l), ceil(W / 2^l))``."""
    height, width = check_image_size(image_size)
    return -(-height // 2**level), -(-width // 2**level)


def generate(image_size, config=AnchorConfig()):
    """All anchors of an image, float32 ``[total_anchors, 4]`` in pixels, in the order of the module doc."""
    shapes = [(scale, ratio) for scale in config.scales for ratio in config.aspect_ratios]
    per_level = []
    for level in config.levels:
        stride = 2.0**level
        rows, cols = grid_size(image_size, level)
        centre_y, centre_x = np.meshgrid((np.arange(rows) + 0.5) * stride, (np.arange(cols) + 0.5) * stride,
                                         indexing="ij")
        sizes = np.array([[config.size * stride * s / math.sqrt(r), config.size * stride * s * math.sqrt(r)]
                          for s, r in shapes])  # (height, width) per anchor type
        centres = np.stack([centre_y, centre_x], -1).reshape(-1, 1, 2)
        per_level.append(np.concatenate([centres - sizes / 2, centres + sizes / 2], -1).reshape(-1, 4))
    return tf.constant(np.concatenate(per_level), tf.float32)


def _centre_size(boxes):
    height, width = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return boxes[..., 0] + height / 2, boxes[..., 1] + width / 2, height, width


def encode_boxes(boxes, anchors, weights=BOX_WEIGHTS):
    """``(ty, tx, th, tw) * weights`` of ``boxes`` relative to ``anchors`` (same pixel units, broadcast).

    ``weights``: RetinaNet's and Fast R-CNN's (10, 10, 5, 5) by default; the RPN's are (1, 1, 1, 1).
    """
    y, x, h, w = _centre_size(tf.convert_to_tensor(boxes, tf.float32))
    ya, xa, ha, wa = _centre_size(tf.convert_to_tensor(anchors, tf.float32))
    tiny = 1e-6
    log_h = tf.clip_by_value(tf.math.log(tf.maximum(h, tiny) / ha), -LOG_SIZE_CLIP, LOG_SIZE_CLIP)
    log_w = tf.clip_by_value(tf.math.log(tf.maximum(w, tiny) / wa), -LOG_SIZE_CLIP, LOG_SIZE_CLIP)
    return tf.stack([(y - ya) / ha, (x - xa) / wa, log_h, log_w], -1) * weights


def decode_boxes(deltas, anchors, weights=BOX_WEIGHTS):
    """The inverse of :func:`encode_boxes`: boxes (pixels, yxyx) from encoded ``deltas`` and ``anchors``."""
    deltas = tf.convert_to_tensor(deltas, tf.float32) / weights
    ya, xa, ha, wa = _centre_size(tf.convert_to_tensor(anchors, tf.float32))
    y, x = ya + deltas[..., 0] * ha, xa + deltas[..., 1] * wa
    h = ha * tf.exp(tf.minimum(deltas[..., 2], LOG_SIZE_CLIP))
    w = wa * tf.exp(tf.minimum(deltas[..., 3], LOG_SIZE_CLIP))
    return tf.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], -1)


def iou(boxes_a, boxes_b):
    """Pairwise IoU ``[N, M]`` of yxyx boxes ``[N, 4]`` and ``[M, 4]`` (0 where the union is empty)."""
    a, b = boxes_a[:, None, :], boxes_b[None, :, :]
    overlap_h = tf.maximum(0.0, tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]))
    overlap_w = tf.maximum(0.0, tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]))
    intersection = overlap_h * overlap_w

    def area(box):
        return tf.maximum(0.0, box[..., 2] - box[..., 0]) * tf.maximum(0.0, box[..., 3] - box[..., 1])

    return tf.math.divide_no_nan(intersection, area(a) + area(b) - intersection)


def encode_targets(boxes, classes, num_boxes, anchors, *, image_size, positive_iou=0.5, negative_iou=0.4):
    """Training targets of one image: ``(class_targets int32 [A], box_targets float32 [A, 4])``.

    ``boxes`` float32 ``[max_boxes, 4]`` normalised yxyx, ``classes`` int32
    ``[max_boxes]`` padded with -1, ``num_boxes`` the count of real boxes (pure TF,
    static shapes: usable in ``tf.data.Dataset.map``). An anchor whose best IoU with
    a box is ``>= positive_iou`` is positive (target: that box's class), below
    ``negative_iou`` negative (-1), in between ignored (-2). Low-quality matches
    (Detectron's rule): every box also claims the anchor(s) of its highest IoU, so
    small boxes are never left unmatched (an anchor so claimed by several boxes
    takes the one it overlaps most); a box that overlaps no anchor at all (zero
    area) claims none. Box targets are :func:`encode_boxes` of the matched box
    for positives, 0 elsewhere.
    """
    if not 0 < negative_iou <= positive_iou <= 1:
        raise ValueError(f"need 0 < negative_iou <= positive_iou <= 1, got {negative_iou} and {positive_iou}")
    height, width = check_image_size(image_size)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    boxes = tf.convert_to_tensor(boxes, tf.float32) * [height, width, height, width]
    classes = tf.cast(classes, tf.int32)
    valid = (tf.range(tf.shape(classes)[0]) < tf.cast(num_boxes, tf.int32)) & (classes >= 0)
    overlaps = tf.where(valid[None, :], iou(anchors, boxes), -1.0)  # [A, G]
    best_iou = tf.reduce_max(overlaps, axis=1)
    box_best_iou = tf.reduce_max(overlaps, axis=0)  # [G]
    claimed = (overlaps >= box_best_iou[None, :]) & (box_best_iou > 0)[None, :]
    is_claimed = tf.reduce_any(claimed, axis=1)
    match = tf.where(is_claimed, tf.argmax(tf.where(claimed, overlaps, -1.0), axis=1),
                     tf.argmax(overlaps, axis=1))
    positive = is_claimed | (best_iou >= positive_iou)
    background = tf.where(best_iou < negative_iou, -1, -2)
    class_targets = tf.where(positive, tf.gather(classes, match), background)
    box_targets = tf.where(positive[:, None], encode_boxes(tf.gather(boxes, match), anchors), 0.0)
    return class_targets, box_targets
