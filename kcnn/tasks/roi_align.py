"""RoIAlign (He et al. 2017, "Mask R-CNN") over one map or a feature pyramid, as ``torchvision.ops.roi_align``.

Each box is cut into ``output_size`` bins; a bin's value is the mean of ``sampling_ratio`` x
``sampling_ratio`` bilinear samples at the centres of its sub-bins. ``aligned=True`` shifts the box
by half a pixel (a box ``[0, 0, 2, 2]`` covers pixels 0 and 1 whole), ``aligned=False`` is the
original Mask R-CNN's (and widens boxes to at least one pixel). A sample more than one pixel
outside the map is 0; one within a pixel of it takes the border's value. The samples are taken by
``tf.image.crop_and_resize`` (one fused kernel, forward and backward; benchmarks/README.md times it against
torchvision's C++ kernel), then averaged; in float32 whatever the maps' dtype.

With a pyramid (torchvision's ``MultiScaleRoIAlign``; Lin et al. 2017a, eq. 1) a box of area
``w * h`` pools from level ``floor(k0 + log2(sqrt(w h) / canonical_size))`` clamped to the levels
given, ``k0 = 4`` at ``canonical_size = 224``.

>>> feature = tf.reshape(tf.range(16, dtype=tf.float32), (1, 4, 4, 1))
>>> pooled = roi_align({2: feature}, tf.constant([[[0.0, 0.0, 8.0, 8.0]]]), output_size=(1, 1))
>>> pooled.shape, float(pooled[0, 0, 0, 0, 0])  # the top-left 2x2 pixels at stride 4: (0 + 1 + 4 + 5) / 4
(TensorShape([1, 1, 1, 1, 1]), 2.5)
>>> assign_levels(tf.constant([[0.0, 0.0, 224.0, 224.0], [0.0, 0.0, 20.0, 20.0]]), (2, 5)).numpy().tolist()
[4, 2]
"""

import math

import tensorflow as tf

CANONICAL_SIZE, CANONICAL_LEVEL = 224, 4  # an ImageNet-sized box pools from P4 (Lin et al. 2017a)
LEVEL_EPSILON = 1e-6  # torchvision's LevelMapper: a box exactly at a level's size goes to that level


def assign_levels(boxes, levels, *, canonical_size=CANONICAL_SIZE, canonical_level=CANONICAL_LEVEL):
    """The pyramid level (int32) each ``[..., 4]`` yxyx pixel box pools from, within ``levels`` (min, max)."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    level = tf.floor(canonical_level + tf.math.log(tf.sqrt(tf.maximum(area, 0.0)) / canonical_size) / math.log(2.0)
                     + LEVEL_EPSILON)
    return tf.cast(tf.clip_by_value(level, levels[0], levels[1]), tf.int32)  # log(0) = -inf clamps to the lowest


def _sample_positions(start, length, bins, sampling_ratio):
    """``[N, bins * sampling_ratio]`` sample coordinates (map pixels) of boxes from ``start`` over ``length``, in
    torchvision's order of operations (so that they agree to the last bit)."""
    steps = tf.range(bins * sampling_ratio, dtype=tf.float32)
    bin_index, sample_index = tf.floor(steps / sampling_ratio), steps % sampling_ratio
    bin_size = (length / bins)[:, None]
    return start[:, None] + bin_index * bin_size + (sample_index + 0.5) * bin_size / sampling_ratio


def _pool(maps, boxes, images, output_size, sampling_ratio, aligned):
    """RoIAlign of ``boxes`` ``[N, 4]`` (yxyx, map pixels) on ``maps`` ``[B, H, W, C]`` (box ``i`` on image
    ``images[i]``) -> ``[N, ph, pw, C]``.

    Samples are clamped to the map (the within-a-pixel rule) and those more than a pixel outside are zeroed
    here; each two consecutive samples of a row and of a column make one crop_and_resize box of 2 x 2, so that
    every sample is a box corner, where the kernel puts it exactly: the map is zero-padded at the bottom/right
    to ``2^k + 1`` rows and columns and coordinates are normalised by ``2^k``, without rounding (the padding is
    never sampled).
    """
    if not isinstance(sampling_ratio, int) or sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be a positive int, got {sampling_ratio!r}")
    pooled_height, pooled_width = (int(v) for v in output_size)
    offset = 0.5 if aligned else 0.0
    ymin, xmin, ymax, xmax = (boxes[:, i] - offset for i in range(4))
    height, width = ymax - ymin, xmax - xmin
    if not aligned:
        height, width = tf.maximum(height, 1.0), tf.maximum(width, 1.0)
    map_height, map_width = maps.shape[1], maps.shape[2]
    span_y, span_x = (2 ** max(math.ceil(math.log2(max(size - 1, 1))), 0) for size in (map_height, map_width))
    padded = tf.pad(tf.cast(maps, tf.float32), [[0, 0], [0, span_y + 1 - map_height], [0, span_x + 1 - map_width],
                                                [0, 0]])

    def pairs(start, length, count, size, span):  # per pair of samples: first, second (normalised); validity
        positions = _sample_positions(start, length, count, sampling_ratio)
        if count * sampling_ratio % 2:  # an odd count: the last sample again, dropped after sampling
            positions = tf.concat([positions, positions[:, -1:]], axis=1)
        inside = tf.cast((positions >= -1.0) & (positions <= size), tf.float32)
        positions = tf.clip_by_value(positions, 0.0, size - 1.0) / span
        positions = tf.reshape(positions, (-1, (count * sampling_ratio + 1) // 2, 2))
        return positions[..., 0], positions[..., 1], inside

    top, bottom, rows_inside = pairs(ymin, height, pooled_height, map_height, span_y)
    left, right, columns_inside = pairs(xmin, width, pooled_width, map_width, span_x)
    rows, columns = top.shape[1], left.shape[1]
    grid = tf.stack([tf.shape(top)[0], rows, columns])
    corners = [tf.broadcast_to(top[:, :, None], grid), tf.broadcast_to(left[:, None, :], grid),
               tf.broadcast_to(bottom[:, :, None], grid), tf.broadcast_to(right[:, None, :], grid)]
    samples = tf.image.crop_and_resize(padded, tf.reshape(tf.stack(corners, -1), (-1, 4)),
                                       tf.repeat(images, rows * columns), (2, 2))
    channels = maps.shape[-1]
    inside = (tf.reshape(rows_inside, (-1, rows, 1, 2, 1)) * tf.reshape(columns_inside, (-1, 1, columns, 1, 2)))
    samples = tf.reshape(samples, (-1, rows, columns, 2, 2, channels)) * inside[..., None]
    if sampling_ratio % 2 == 0:  # each bin is whole pairs: average them where they lie
        half = sampling_ratio // 2
        samples = tf.reshape(samples, (-1, pooled_height, half, pooled_width, half, 2, 2, channels))
        return tf.reduce_mean(samples, axis=(2, 4, 5, 6))
    samples = tf.reshape(tf.transpose(samples, (0, 1, 3, 2, 4, 5)), (-1, 2 * rows, 2 * columns, channels))
    samples = samples[:, :pooled_height * sampling_ratio, :pooled_width * sampling_ratio]
    samples = tf.reshape(samples, (-1, pooled_height, sampling_ratio, pooled_width, sampling_ratio, channels))
    return tf.reduce_mean(samples, axis=(2, 4))


def roi_align(features, boxes, *, output_size, sampling_ratio=2, aligned=True, **level_options):
    """Pooled features ``[B, R, ph, pw, C]`` float32 of yxyx pixel ``boxes`` ``[B, R, 4]`` (each on its image).

    ``features``: ``{level: map [B, H_l, W_l, C]}`` at stride ``2^level`` (one entry: plain RoIAlign at
    scale ``2^-level``; several: each box pools from the level :func:`assign_levels` gives it, with
    ``level_options`` passed on). ``sampling_ratio`` must be a positive int (torchvision's adaptive 0 needs
    a per-box sample count, so shapes would not be static). No gradient flows to the boxes.
    """
    levels = sorted(features)
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    batch, rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
    flat = tf.reshape(boxes, (-1, 4))
    images = tf.repeat(tf.range(batch), rois)
    which = (tf.reshape(assign_levels(flat, (levels[0], levels[-1]), **level_options), (-1,)) if len(levels) > 1
             else tf.fill(tf.shape(images), levels[0]))
    positions, pooled = [], []
    for level in levels:
        chosen = tf.cast(tf.where(which == level)[:, 0], tf.int32)
        positions.append(chosen)
        pooled.append(_pool(features[level], tf.gather(flat, chosen) * 2.0**-level, tf.gather(images, chosen),
                            output_size, sampling_ratio, aligned))
    pooled = tf.dynamic_stitch(positions, pooled)
    return tf.reshape(pooled, tf.concat([[batch, rois], tf.shape(pooled)[1:]], 0))


def crop_masks(masks, indices, boxes, *, output_size, sampling_ratio=2, aligned=True):
    """RoIAlign of one mask per box: ``[B, R, ph, pw]`` float32 from ``masks`` ``[B, M, H, W]``, box ``r`` of
    image ``b`` cut from mask ``indices[b, r]`` (yxyx pixel ``boxes`` ``[B, R, 4]``): Mask R-CNN's targets."""
    shape = tf.shape(masks)
    rois = tf.shape(indices)[1]
    images = tf.reshape(tf.range(shape[0])[:, None] * shape[1] + tf.cast(indices, tf.int32), (-1,))
    maps = tf.reshape(masks, (-1, masks.shape[2], masks.shape[3], 1))
    pooled = _pool(maps, tf.reshape(tf.stop_gradient(tf.cast(boxes, tf.float32)), (-1, 4)), images, output_size,
                   sampling_ratio, aligned)
    return tf.reshape(pooled, tf.concat([[shape[0], rois], tf.shape(pooled)[1:3]], 0))
