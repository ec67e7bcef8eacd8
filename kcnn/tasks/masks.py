"""Mask R-CNN's box-relative masks pasted into the image, as torchvision's ``paste_masks_in_image``.

A ``M x M`` mask is padded with one zero pixel on each side and its box widened by ``(M + 2) / M``
about its centre, so the mask's border falls half a pixel outside the box; the widened box's corners
are truncated to whole pixels, the padded mask is resized bilinearly (half-pixel centres, PyTorch's
``align_corners=False``) to the box's ``(y1 - y0 + 1) x (x1 - x0 + 1)`` pixels and written at
``(y0, x0)``, clipped to the image. Both resizes are separable: a pasted mask is ``Wy @ mask @ Wx^T``.

>>> mask = tf.ones((1, 1, 4, 4))
>>> pasted = paste_masks(mask, tf.constant([[[2.0, 2.0, 6.0, 6.0]]]), (8, 8))
>>> # widened box 1..7 (7 px), padded mask 0 1 1 1 1 0 resized 6 -> 7 px: 0 .79 1 1 1 .79 0
>>> (pasted[0, 0].numpy() >= 0.5).astype(int).sum(axis=0).tolist()  # rows and columns 2..6
[0, 0, 5, 5, 5, 5, 5, 0]
"""

import tensorflow as tf


def _resize_weights(start, end, size, source):
    """``[..., size, source]``: row ``i`` of the image as a bilinear mix of the padded mask's rows (0 outside)."""
    length = end - start + 1.0
    local = tf.range(size, dtype=tf.float32) - start[..., None]  # image row relative to the box's first row
    inside = (local >= 0) & (local < length[..., None])
    position = tf.maximum((local + 0.5) * source / length[..., None] - 0.5, 0.0)
    low = tf.floor(position)
    fraction = position - low
    low = tf.cast(tf.minimum(low, source - 1), tf.int32)
    high = tf.minimum(low + 1, source - 1)
    weights = (tf.one_hot(low, source) * (1.0 - fraction)[..., None] + tf.one_hot(high, source) * fraction[..., None])
    return tf.where(inside[..., None], weights, 0.0)


def _truncated(value):
    """Rounded towards zero, as PyTorch's float to int64 conversion."""
    return tf.sign(value) * tf.floor(tf.abs(value))


def paste_masks(masks, boxes, image_size):
    """Masks ``[B, D, M, M]`` (probabilities) of yxyx pixel ``boxes`` ``[B, D, 4]`` as image-sized maps
    ``[B, D, H, W]`` float32 (0 outside each box); threshold at 0.5 for binary masks. ``image_size``: (H, W)."""
    height, width = image_size  # ints, or int32 scalars (an exported graph's per-image sizes)
    masks = tf.cast(masks, tf.float32)
    size = masks.shape[-1]
    padded = tf.pad(masks, [[0, 0], [0, 0], [1, 1], [1, 1]])
    boxes = tf.cast(boxes, tf.float32)
    scale = (size + 2.0) / size
    centre_y, centre_x = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    half_h, half_w = (boxes[..., 2] - boxes[..., 0]) / 2 * scale, (boxes[..., 3] - boxes[..., 1]) / 2 * scale
    y0, y1, x0, x1 = (_truncated(v) for v in (centre_y - half_h, centre_y + half_h, centre_x - half_w,
                                                centre_x + half_w))
    rows = _resize_weights(y0, tf.maximum(y1, y0), height, size + 2)
    columns = _resize_weights(x0, tf.maximum(x1, x0), width, size + 2)
    return tf.einsum("bdhm,bdmn,bdwn->bdhw", rows, padded, columns)
