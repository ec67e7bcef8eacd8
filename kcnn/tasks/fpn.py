"""The feature pyramid (Lin et al. 2017a) on any zoo backbone, shared by RetinaNet and Faster/Mask R-CNN.

It takes the backbone's levels ``C<min_level>..C<min(5, max_level)>``: 1x1 lateral convs, top-down 2x
nearest upsampling + add, 3x3 output convs. Every zoo backbone fits:

* a level the backbone lacks above its deepest one (CIFAR ResNets and LeNet stop at ``P2``; so do
  networks cut short) is made by a 3x3/2 conv + ReLU (``fpn_extra_c<l>``, ``width`` filters) on the
  level below; a backbone without ``C<min_level>`` starts from its deepest level under it;
* every map is exactly the anchor grid ``ceil(H / 2^l) x ceil(W / 2^l)``: a backbone map of another
  size (valid padding: AlexNet, LeNet) is resized bilinearly (``fpn_resize_c<l>``), an upsampled map
  one cell too large is cropped at the bottom/right (the same cells as torchvision's nearest resize to
  the lateral's size).

>>> import kcnn
>>> backbone = kcnn.backbone("resnet20", input_shape=(32, 32, 3))
>>> pyramid = feature_pyramid(dict(backbone.output), (32, 32), 2, 5, 8)
>>> [tuple(p.shape[1:]) for p in pyramid]
[(8, 8, 8), (4, 4, 8), (2, 2, 8), (1, 1, 8)]
"""

import keras

from kcnn.tasks.anchors import grid_size


def _to_grid(x, level, image_size, name):
    """``x`` resized (bilinear) to the anchor grid of ``level`` where its size differs."""
    target = grid_size(image_size, level)
    if tuple(x.shape[1:3]) == target:
        return x
    return keras.layers.Resizing(*target, interpolation="bilinear", name=name)(x)


def _down(x, width, name, activation=None):
    """A 3x3/2 conv with one pixel of zeros on every side (torchvision's P6/P7): ceil(n / 2) outputs."""
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(width, 3, strides=2, activation=activation, name=name)(x)


def _pyramid_inputs(features, image_size, min_level, top_level, width):
    """``{l: C_l}`` for ``l`` in ``min_level..top_level``: backbone maps on the grid, or extra 3x3/2 convs."""
    present = sorted(int(key[1:]) for key in features)
    start = max((level for level in present if level <= min_level), default=None)
    if start is None:
        raise ValueError(f"backbone has no feature level at or below P{min_level} (it has "
                         f"{', '.join(f'P{level}' for level in present)}); accepted: any level <= min_level")
    levels = {start: _to_grid(features[f"P{start}"], start, image_size, f"fpn_resize_c{start}")}
    for level in range(start + 1, top_level + 1):
        if level in present:
            levels[level] = _to_grid(features[f"P{level}"], level, image_size, f"fpn_resize_c{level}")
        else:
            levels[level] = _down(levels[level - 1], width, f"fpn_extra_c{level}", activation="relu")
    return {level: levels[level] for level in range(min_level, top_level + 1)}


def feature_pyramid(features, image_size, min_level, max_level, width):
    """``[P_min_level, ..., P_max_level]`` (``width`` channels), each exactly on its anchor grid; levels above 5
    are 3x3/2 convs: ``P6`` on ``C5``, higher ones on ReLU of the level below (RetinaNet's)."""
    top_level = min(5, max_level)
    inputs = _pyramid_inputs(features, image_size, min_level, top_level, width)
    merged = {top_level: keras.layers.Conv2D(width, 1, name=f"fpn_lateral_p{top_level}")(inputs[top_level])}
    for level in range(top_level - 1, min_level - 1, -1):
        upsampled = keras.layers.UpSampling2D(2, name=f"fpn_upsample_p{level}")(merged[level + 1])
        rows, cols = grid_size(image_size, level)
        extra_rows, extra_cols = upsampled.shape[1] - rows, upsampled.shape[2] - cols
        if extra_rows or extra_cols:
            crop = keras.layers.Cropping2D(((0, extra_rows), (0, extra_cols)), name=f"fpn_crop_p{level}")
            upsampled = crop(upsampled)
        lateral = keras.layers.Conv2D(width, 1, name=f"fpn_lateral_p{level}")(inputs[level])
        merged[level] = keras.layers.Add(name=f"fpn_merge_p{level}")([lateral, upsampled])
    pyramid = [keras.layers.Conv2D(width, 3, padding="same", name=f"fpn_output_p{level}")(merged[level])
               for level in range(min_level, top_level + 1)]
    source = inputs[top_level]  # P6 comes from C5, as in the paper
    for level in range(top_level + 1, max_level + 1):
        if level > 6:
            source = keras.layers.ReLU(name=f"fpn_relu_p{level - 1}")(source)
        source = _down(source, width, f"fpn_p{level}")
        pyramid.append(source)
    return pyramid
