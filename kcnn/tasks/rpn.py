"""The region proposal network's anchors, targets, proposals and loss (Ren et al. 2015; FPN: Lin et al. 2017a).

As torchvision's ``AnchorGenerator`` / ``RegionProposalNetwork`` define them: one anchor size per
pyramid level (32 px at P2 to 512 px at P6), three aspect ratios, anchors centred on each cell's
top-left corner (``i * stride``) with sizes rounded to whole pixels; ordered level by level, then
row-major over the level's ``ceil(H / 2^l) x ceil(W / 2^l)`` cells, then aspect ratio. Boxes are
yxyx pixels; the RPN's box coder has weights (1, 1, 1, 1). A level's stride is torchvision's
``H // rows`` by ``W // cols``: ``2^level`` where the image size is a multiple of it.

>>> anchors = rpn_anchors((64, 64))
>>> anchors.shape  # 3 ratios x (16x16 + 8x8 + 4x4 + 2x2 + 1x1) cells
TensorShape([1023, 4])
>>> anchors[:3].numpy().tolist()  # P2, cell (0, 0): height / width 0.5, 1, 2
[[-11.0, -23.0, 11.0, 23.0], [-16.0, -16.0, 16.0, 16.0], [-23.0, -11.0, 23.0, 11.0]]
>>> labels, matched = match(iou(anchors[:3], tf.constant([[-16.0, -16.0, 16.0, 16.0]])), tf.constant([True]),
...                         high=0.7, low=0.3)
>>> labels.numpy().tolist()  # IoU 0.53, 1, 0.53: the exact one is positive, the others between 0.3 and 0.7
[-1, 1, -1]
"""

import numpy as np
import tensorflow as tf

from kcnn.tasks.anchors import check_image_size, decode_boxes, encode_boxes, grid_size, iou

LEVELS = (2, 3, 4, 5, 6)
SIZES = (32, 64, 128, 256, 512)  # one per level (torchvision's fasterrcnn_resnet50_fpn)
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width
RPN_BOX_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
SMOOTH_L1_BETA = 1.0 / 9  # the RPN's and the box head's box loss (torchvision, Detectron)
SAMPLED_ANCHORS, POSITIVE_ANCHOR_FRACTION = 256, 0.5
POSITIVE_IOU, NEGATIVE_IOU = 0.7, 0.3
MIN_PROPOSAL_SIZE = 1e-3  # pixels: torchvision drops narrower proposals before the NMS


def rpn_anchors(image_size, *, levels=LEVELS, sizes=SIZES, aspect_ratios=ASPECT_RATIOS):
    """All RPN anchors of an image, float32 ``[N, 4]`` yxyx pixels, in the module's order."""
    if len(levels) != len(sizes):
        raise ValueError(f"need one anchor size per level, got {len(sizes)} sizes for {len(levels)} levels")
    ratios = np.asarray(aspect_ratios, np.float32)
    per_level = []
    for level, size in zip(levels, sizes):
        height_ratio = np.sqrt(ratios)
        heights, widths = height_ratio * size, size / height_ratio
        base = np.round(np.stack([-heights, -widths, heights, widths], -1) / 2)  # [A, 4], as torchvision's
        rows, cols = grid_size(image_size, level)
        height, width = check_image_size(image_size)
        # torchvision's strides: the image size over the grid size, rounded down (2^level where it divides)
        y, x = np.meshgrid(np.arange(rows) * (height // rows), np.arange(cols) * (width // cols), indexing="ij")
        shifts = np.stack([y, x, y, x], -1).reshape(-1, 1, 4).astype(np.float32)
        per_level.append((shifts + base[None]).reshape(-1, 4))
    return tf.constant(np.concatenate(per_level), tf.float32)


def anchors_per_level(image_size, levels=LEVELS, per_location=len(ASPECT_RATIOS)):
    """How many anchors each level has (the RPN outputs' split)."""
    return [per_location * np.prod(grid_size(image_size, level)) for level in levels]


def match(overlaps, valid, *, high, low, allow_low_quality=True):
    """torchvision's ``Matcher`` on ``overlaps`` ``[N, G]`` (IoU of N boxes with G ground-truth boxes, of which
    ``valid`` ``[G]`` are real): ``(labels int32 [N]: 1 positive (IoU >= high), 0 negative (< low), -1 between,
    matched int32 [N]: the ground truth of highest IoU)``. ``allow_low_quality``: every ground-truth box also
    makes positive the boxes of its highest IoU (ties included), each keeping its own best match."""
    overlaps = tf.where(valid[None, :], overlaps, -1.0)
    best = tf.reduce_max(overlaps, axis=1)
    matched = tf.cast(tf.argmax(overlaps, axis=1), tf.int32)
    labels = tf.where(best >= high, 1, tf.where(best < low, 0, -1))
    if allow_low_quality:
        best_per_truth = tf.reduce_max(overlaps, axis=0)
        claimed = tf.reduce_any((overlaps >= best_per_truth[None, :]) & (best_per_truth > 0)[None, :], axis=1)
        labels = tf.where(claimed, 1, labels)
    return tf.where(tf.shape(overlaps)[1] > 0, labels, tf.zeros_like(labels)), matched


def sample(labels, *, count, positive_fraction, seed):
    """torchvision's ``BalancedPositiveNegativeSampler`` for one image: ``(indices int32 [count], valid [count])``.

    Takes ``min(count * positive_fraction, positives)`` positives (label 1) and fills up to ``count`` with
    negatives (label 0), both at random (``seed``: a stateless seed ``[2]``); ``valid`` is False on the
    slots left when there are too few.
    """
    positive, negative = labels == 1, labels == 0
    positives = tf.minimum(int(count * positive_fraction), tf.reduce_sum(tf.cast(positive, tf.int32)))
    negatives = tf.minimum(count - positives, tf.reduce_sum(tf.cast(negative, tf.int32)))
    key = tf.random.stateless_uniform(tf.shape(labels), seed)

    def ranks(members):
        order = tf.argsort(tf.where(members, key, 2.0), stable=True)  # members first, in random order
        return tf.math.invert_permutation(order)

    chosen = (positive & (ranks(positive) < positives)) | (negative & (ranks(negative) < negatives))
    size = tf.shape(labels)[0]
    slots = tf.math.top_k(tf.where(chosen, 1.0 + key, key - 1.0), k=tf.minimum(count, size)).indices
    slots = tf.pad(slots, [[0, count - tf.shape(slots)[0]]])
    return slots, tf.gather(chosen, slots) & (tf.range(count) < size)


def rpn_targets(anchors, boxes, valid, *, seed):
    """One image's RPN targets: ``(objectness float32 [N] (1, 0), weight float32 [N] (1 on the 256 sampled
    anchors), matched boxes [N, 4])`` for ``boxes`` ``[G, 4]`` yxyx pixels of which ``valid`` are real."""
    labels, matched = match(iou(anchors, boxes), valid, high=POSITIVE_IOU, low=NEGATIVE_IOU)
    slots, sampled = sample(labels, count=SAMPLED_ANCHORS, positive_fraction=POSITIVE_ANCHOR_FRACTION, seed=seed)
    weight = tf.scatter_nd(slots[:, None], tf.cast(sampled, tf.float32), tf.shape(labels))
    return tf.cast(labels == 1, tf.float32), weight, tf.gather(boxes, tf.minimum(matched, tf.shape(boxes)[0] - 1))


def smooth_l1(difference, beta=SMOOTH_L1_BETA):
    """PyTorch's ``smooth_l1_loss`` elementwise: ``0.5 x^2 / beta`` below ``beta``, ``|x| - 0.5 beta`` above."""
    error = tf.abs(difference)
    return tf.where(error < beta, 0.5 * error**2 / beta, error - 0.5 * beta)


def rpn_loss(objectness, deltas, anchors, objectness_targets, weights, matched_boxes):
    """The RPN loss per image, float32 ``[B]``: the mean binary cross-entropy of the sampled anchors plus the
    smooth-L1 (beta 1/9) box loss of the sampled positives, summed and divided by the sampled count
    (batched ``[B, N]`` inputs, as :func:`rpn_targets` gives them per image)."""
    sampled = tf.maximum(tf.reduce_sum(weights, axis=-1), 1.0)
    entropy = tf.nn.sigmoid_cross_entropy_with_logits(objectness_targets, tf.cast(objectness, tf.float32))
    targets = encode_boxes(matched_boxes, anchors, RPN_BOX_WEIGHTS)
    box = tf.reduce_sum(smooth_l1(tf.cast(deltas, tf.float32) - targets), axis=-1)
    positive = weights * objectness_targets
    return (tf.reduce_sum(entropy * weights, axis=-1) + tf.reduce_sum(box * positive, axis=-1)) / sampled


def proposals(objectness, deltas, anchors, *, image_size, level_counts, pre_nms_top_n, post_nms_top_n,
              iou_threshold=0.7):
    """torchvision's ``filter_proposals`` for a batch: ``(boxes [B, post_nms_top_n, 4], valid [B, post_nms_top_n])``.

    Per image and level the ``pre_nms_top_n`` anchors of highest objectness are decoded, clipped to the
    image, stripped of boxes under ``MIN_PROPOSAL_SIZE``, and suppressed (NMS at ``iou_threshold``) within
    their level; the ``post_nms_top_n`` best remain, best first, zero-padded. No gradient flows.
    """
    height, width = check_image_size(image_size)
    objectness, deltas = tf.stop_gradient(tf.cast(objectness, tf.float32)), tf.stop_gradient(tf.cast(deltas, tf.float32))
    chosen, start = [], 0
    for level, count in enumerate(level_counts):
        top = tf.math.top_k(objectness[:, start:start + count], k=min(pre_nms_top_n, count)).indices + start
        chosen.append((top, tf.fill(tf.shape(top), level)))
        start += count
    indices = tf.concat([top for top, _ in chosen], axis=1)
    levels = tf.cast(tf.concat([level for _, level in chosen], axis=1), tf.float32)
    scores = tf.sigmoid(tf.gather(objectness, indices, batch_dims=1))
    boxes = decode_boxes(tf.gather(deltas, indices, batch_dims=1), tf.gather(anchors, indices), RPN_BOX_WEIGHTS)
    boxes = tf.clip_by_value(boxes, 0.0, [height, width, height, width])
    big = ((boxes[..., 2] - boxes[..., 0]) >= MIN_PROPOSAL_SIZE) & ((boxes[..., 3] - boxes[..., 1]) >= MIN_PROPOSAL_SIZE)
    scores = tf.where(big, scores, -1.0)
    # within-level NMS as one NMS: each level's boxes shifted apart so that no two levels overlap
    shifted = boxes + (levels * (max(height, width) + 1.0))[..., None]

    def one_image(image):
        kept, count = tf.image.non_max_suppression_padded(
            image[0], image[1], post_nms_top_n, iou_threshold=iou_threshold, score_threshold=0.0,
            pad_to_max_output_size=True)
        return kept, count

    kept, count = tf.map_fn(one_image, (shifted, scores),
                            fn_output_signature=(tf.TensorSpec([post_nms_top_n], tf.int32), tf.int32))
    valid = tf.range(post_nms_top_n)[None, :] < count[:, None]
    return tf.where(valid[..., None], tf.gather(boxes, kept, batch_dims=1), 0.0), valid
