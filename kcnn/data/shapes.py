"""Shapes: a generated segmentation, detection and instance segmentation dataset with exact masks
and boxes.

Each image holds 1 to 4 coloured circles, squares and triangles (squares and triangles rotated)
on a textured background (smooth colour noise blended with stripes or a gradient of random
colours). Shapes never overlap and lie fully inside the image, so every box is exactly the
extent of its shape's pixels, and each shape's instance mask is all of its shape (nothing is
drawn over it). Mask values are 0 for background and 1 + the class id of SHAPES_CLASSES;
instance maps (`generate_instances`) are 0 for background and i + 1 on the shape of the image's
i-th box; boxes are pixels (ymin, xmin, ymax, xmax) with ymax and xmax exclusive edges.
The same (split, size, count, seed) always gives the same arrays; train and val come from
different random streams.

>>> images, masks, boxes, classes = generate("val", size=64, count=3, seed=1)
>>> images.shape, images.dtype, masks.shape, masks.dtype
((3, 64, 64, 3), dtype('uint8'), (3, 64, 64), dtype('uint8'))
>>> ymin, xmin, ymax, xmax = boxes[0][0].astype(int)
>>> shape = masks[0, ymin:ymax, xmin:xmax] == classes[0][0] + 1
>>> bool(shape[0].any() and shape[-1].any() and shape[:, 0].any() and shape[:, -1].any())
True
>>> instances = generate_instances("val", size=64, count=3, seed=1)
>>> rows, cols = np.nonzero(instances[0] == 1)  # the first box's shape
>>> [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1] == [ymin, xmin, ymax, xmax]
True
"""

import functools

import numpy as np

SHAPES_CLASSES = ("circle", "square", "triangle")  # detection ids 0..2; mask ids 1..3
SPLIT_SIZES = {"train": 2000, "val": 250}
MAX_SHAPES = 4
_STREAMS = {"train": 0, "val": 1}  # the random stream of each split, after the seed
_NATIVE_SIZE = 128
_DIAMETER_RANGE = (16.0, 56.0)  # of a shape's enclosing circle, at the native size
_GAP = 2.0  # pixels at least between the enclosing circles of two shapes
_PLACEMENT_TRIES = 40
_CHUNK = 256  # images generated together (bounds the float32 working memory)
_NOISE_GRID = 6  # the smooth background noise is bilinear on a 6x6 grid
_PIXEL_NOISE = 6  # +- uniform integer noise on every pixel, shapes included


def generate(split, *, size=_NATIVE_SIZE, count=None, seed=0):
    """Images uint8 [N, size, size, 3], masks uint8 [N, size, size], and per image its boxes
    (float32 [k, 4] pixels ymin, xmin, ymax, xmax; max edges exclusive) and classes (int32 [k]).

    split: "train" or "val"; count: images (default SPLIT_SIZES[split]); shape sizes scale with
    size (16-56 pixels at 128). Cached per process: the arrays are read-only.
    """
    images, masks, boxes, classes, counts = generate_padded(split, size=size, count=count,
                                                            seed=seed)
    return (images, masks, [boxes[i, :n] for i, n in enumerate(counts)],
            [classes[i, :n] for i, n in enumerate(counts)])


def generate_padded(split, *, size=_NATIVE_SIZE, count=None, seed=0):
    """`generate` with boxes [N, MAX_SHAPES, 4] and classes [N, MAX_SHAPES] padded (zeros and
    -1) after the first counts[i] (int32 [N]) entries of image i."""
    return _checked(split, size, count, seed)[:5]


def generate_instances(split, *, size=_NATIVE_SIZE, count=None, seed=0):
    """The instance maps uint8 [N, size, size] of the images `generate` gives: 0 background, i + 1
    the pixels of the shape of image n's i-th box (i < counts[n] of `generate_padded`)."""
    return _checked(split, size, count, seed)[5]


def _checked(split, size, count, seed):
    """The cached arrays (images, masks, boxes, classes, counts, instance maps) of valid arguments."""
    if split not in _STREAMS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(_STREAMS)}")
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"bad size {size!r}; expected an int >= 32")
    count = SPLIT_SIZES[split] if count is None else count
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"bad count {count!r}; expected a positive int")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"bad seed {seed!r}; expected a non-negative int")
    return _generate(split, size, count, seed)


@functools.lru_cache(maxsize=8)
def _generate(split, size, count, seed):
    chunks = [_chunk(np.random.default_rng([seed, _STREAMS[split], index]), size,
                     min(_CHUNK, count - start))
              for index, start in enumerate(range(0, count, _CHUNK))]
    arrays = tuple(np.concatenate(parts) for parts in zip(*chunks))
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _chunk(rng, size, n):
    centres, radii, placed = _place(rng, size, n)
    kinds = rng.permutation(np.arange(n * MAX_SHAPES) % len(SHAPES_CLASSES)).reshape(n, -1)
    angles = rng.uniform(0, 2 * np.pi, (n, MAX_SHAPES))
    colours = rng.integers(0, 256, (n, MAX_SHAPES, 3), dtype=np.int16)
    images = _background(rng, size, n)
    masks = np.zeros((n, size, size), np.uint8)
    instances = np.zeros((n, size, size), np.uint8)
    rank = np.cumsum(placed, axis=1)  # a placed slot's 1-based position among its image's boxes
    boxes = np.zeros((n, MAX_SHAPES, 4), np.float32)
    window = int(np.ceil(radii.max(initial=1.0) * 2)) + 2
    offsets = np.arange(window)
    for slot in range(MAX_SHAPES):
        chosen = np.flatnonzero(placed[:, slot])
        centre, radius = centres[chosen, slot], radii[chosen, slot]
        # The window around each shape, kept inside the image.
        corner = np.clip(np.floor(centre - window / 2).astype(int), 0, size - window)
        y = corner[:, 0, None, None] + offsets[None, :, None] + 0.5 - centre[:, 0, None, None]
        x = corner[:, 1, None, None] + offsets[None, None, :] + 0.5 - centre[:, 1, None, None]
        inside = _inside(kinds[chosen, slot], y, x, radius[:, None, None],
                         angles[chosen, slot, None, None])
        # Paint only the covered pixels, by flat index (shapes never overlap).
        pixel = ((chosen[:, None, None] * size + corner[:, 0, None, None] + offsets[None, :, None])
                 * size + corner[:, 1, None, None] + offsets[None, None, :])[inside]
        owner = np.broadcast_to(np.arange(len(chosen))[:, None, None], inside.shape)[inside]
        masks.reshape(-1)[pixel] = kinds[chosen[owner], slot] + 1
        images.reshape(-1, 3)[pixel] = colours[chosen[owner], slot]
        instances.reshape(-1)[pixel] = rank[chosen[owner], slot]
        any_row, any_col = inside.any(axis=2), inside.any(axis=1)
        boxes[chosen, slot] = np.stack([
            corner[:, 0] + any_row.argmax(axis=1), corner[:, 1] + any_col.argmax(axis=1),
            corner[:, 0] + window - any_row[:, ::-1].argmax(axis=1),
            corner[:, 1] + window - any_col[:, ::-1].argmax(axis=1)], axis=1)
    noise = rng.integers(-_PIXEL_NOISE, _PIXEL_NOISE + 1, images.shape, dtype=np.int16)
    images = np.clip(images + noise, 0, 255).astype(np.uint8)
    # Placed shapes first, in slot order.
    order = np.argsort(~placed, axis=1, kind="stable")
    classes = np.where(placed, kinds, -1).astype(np.int32)
    return (images, masks, np.take_along_axis(boxes, order[..., None], axis=1),
            np.take_along_axis(classes, order, axis=1), placed.sum(axis=1).astype(np.int32), instances)


def _place(rng, size, n):
    """Centres [n, MAX_SHAPES, 2], radii of enclosing circles and which slots hold a shape:
    1 to MAX_SHAPES per image, rejection-sampled so circles keep _GAP apart and stay inside."""
    low, high = (diameter / 2 * size / _NATIVE_SIZE for diameter in _DIAMETER_RANGE)
    wanted = rng.integers(1, MAX_SHAPES + 1, n)
    centres = np.zeros((n, MAX_SHAPES, 2))
    radii = np.zeros((n, MAX_SHAPES))
    placed = np.zeros((n, MAX_SHAPES), bool)
    for slot in range(MAX_SHAPES):
        pending = wanted > slot
        for _ in range(_PLACEMENT_TRIES):
            todo = np.flatnonzero(pending)
            if not len(todo):
                break
            radius = rng.uniform(low, high, len(todo))
            margin = radius[:, None] + 1
            centre = margin + rng.random((len(todo), 2)) * (size - 2 * margin)
            distance = np.linalg.norm(centre[:, None] - centres[todo, :slot], axis=2)
            clear = distance >= radius[:, None] + radii[todo, :slot] + _GAP
            fits = np.all(clear | ~placed[todo, :slot], axis=1)
            done = todo[fits]
            centres[done, slot], radii[done, slot] = centre[fits], radius[fits]
            placed[done, slot], pending[done] = True, False
    return centres, radii, placed


def _inside(kinds, y, x, radius, angle):
    """Which pixel centres (offsets y, x from the shape's centre) a shape of each kind covers:
    a circle of `radius`, a square or an equilateral triangle inscribed in it, rotated."""
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = x * cos + y * sin, y * cos - x * sin
    circle = y**2 + x**2 <= radius**2
    half_side = radius / np.sqrt(2)
    square = (np.abs(u) <= half_side) & (np.abs(v) <= half_side)
    triangle = np.ones_like(circle)
    for corner in range(3):  # three half-planes at the inradius (radius / 2)
        normal = 2 * np.pi * corner / 3
        triangle &= u * np.cos(normal) + v * np.sin(normal) <= radius / 2
    kinds = kinds[:, None, None]
    return np.where(kinds == 0, circle, np.where(kinds == 1, square, triangle))


def _background(rng, size, n):
    """int16 images [n, size, size, 3] in [0, 255]: smooth colour noise blended with stripes
    (or, under one cycle, a gradient) between two random colours."""
    position = np.clip((np.arange(size) + 0.5) * _NOISE_GRID / size - 0.5, 0, _NOISE_GRID - 1)
    low = np.minimum(np.floor(position).astype(int), _NOISE_GRID - 2)
    weight = position - low
    upsample = np.zeros((size, _NOISE_GRID), np.float32)
    upsample[np.arange(size), low] = 1 - weight
    upsample[np.arange(size), low + 1] = weight

    blend = rng.uniform(0.3, 0.7, (n, 1, 1, 1)).astype(np.float32)
    first, second = rng.uniform(0, 255, (2, n, 1, 1, 3)).astype(np.float32)
    # blend * noise + (1 - blend) * (first + stripes * (second - first)), with the constant
    # terms folded into the noise grid (bilinear weights sum to 1).
    grid = rng.uniform(0, 255, (n, _NOISE_GRID, _NOISE_GRID, 3)).astype(np.float32)
    grid = blend * grid + (1 - blend) * first
    rows = np.einsum("hl,nlmc->nhcm", upsample, grid)
    image = (rows.reshape(-1, _NOISE_GRID) @ upsample.T).reshape(n, size, 3, size)

    coordinate = (np.arange(size, dtype=np.float32) + 0.5) / size
    angle, cycles, phase = (rng.uniform(low, high, (n, 1, 1)).astype(np.float32)
                            for low, high in ((0, np.pi), (0.3, 6.0), (0, 2 * np.pi)))
    along = coordinate[None, None, :] * np.cos(angle) + coordinate[None, :, None] * np.sin(angle)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * along + phase)
    contrast = ((1 - blend) * (second - first)).reshape(n, 1, 3, 1)
    image += stripes[:, :, None, :] * contrast
    return np.rint(image, out=image).transpose(0, 1, 3, 2).astype(np.int16, order="C")
