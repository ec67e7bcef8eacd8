"""Photo objects: a small segmentation and detection benchmark on real photographs, built offline.

Each image is a random crop of one of the photographs bundled with scikit-image (``skimage.data``:
astronaut, coffee, chelsea, rocket, hubble_deep_field, immunohistochemistry, retina, and the grey
camera, coins, brick, grass, gravel, made RGB) and scikit-learn (``load_sample_images``: china,
flower), scaled to ``--size`` pixels square, flipped at random and jittered in brightness. On it lie
1 to 4 objects of 5 classes (disc, square, triangle, ring, star), 28 to 60 pixels across (at
``--size`` 128; they scale with the size), rotated, in random vivid colours, flat, with a gradient
or striped; objects may overlap slightly (a later one covers at most a quarter of an earlier one's
pixels). Edges are antialiased in the image, and a pixel belongs to an object in the mask where the
object covers at least half of it; every box is the extent of its object's visible mask pixels.

Everything follows from ``--seed``: image ``i`` of a split depends only on (seed, split, i), so a
larger ``--train`` count keeps the first images. train and val crop the same photographs (there
are only 14) at different random places.

Layouts written (those of :mod:`kcnn.data.dense_folders`; the two need separate folders, since a
folder with COCO annotations is read as a detection dataset):

* ``OUT/masks`` (segmentation): ``<split>/images/<stem>.png``, ``<split>/masks/<stem>.png`` (uint8,
  0 = background, 1..5 the classes) and ``classes.txt`` (background first);
* ``OUT/coco`` (detection): ``annotations/instances_<split>.json`` (COCO: images with width and
  height, annotations with pixel ``bbox`` [x, y, w, h], ``area`` (mask pixels), ``iscrowd`` 0 and
  ``category_id`` 1..5; categories) and the images in ``<split>/<stem>.png`` (hard links to the
  masks layout's images where both are written and the file system allows).

Usage (1,000 train + 200 val images at 128x128, both layouts, in a few seconds; needs scikit-image,
``pip install 'kcnn[bench]'``; ``make bench-small-data`` runs all three lines)::

    python benchmarks/photo_objects.py --out runs/photo_objects
    kcnn finetune --backbone resnet18 --task segmentation --dataset runs/photo_objects/masks \\
        --image-size 128 --out runs/photo-segmentation
    kcnn finetune --backbone resnet18 --task detection --dataset runs/photo_objects/coco \\
        --image-size 128 --out runs/photo-detection

Options: ``--train N --val N --size PIXELS --seed N --layout both|masks|coco``.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("disc", "square", "triangle", "ring", "star")  # mask ids 1..5, COCO category ids 1..5
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "camera", "coins", "brick", "grass", "gravel")
SPLITS = {"train": 0, "val": 1}  # each split's random stream, after the seed
NATIVE_SIZE = 128  # object sizes are given at this image size and scale with --size
OBJECT_SIZE = (28.0, 60.0)  # pixels across (diameter of the enclosing circle, at NATIVE_SIZE)
MAX_OBJECTS = 4
MAX_COVERED = 0.25  # an object may hide at most this fraction of an earlier object's pixels
PLACEMENT_TRIES = 30
SUPERSAMPLE = 4  # objects are drawn at 4x and averaged down: antialiased edges


def load_photos():
    """``{name: uint8 [H, W, 3]}``: the bundled photographs (grey ones made RGB); those missing are skipped."""
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("photo_objects needs scikit-image's bundled photographs: pip install 'kcnn[bench]'") from None
    from sklearn.datasets import load_sample_images

    photos = {}
    for name in SKIMAGE_PHOTOS:
        try:
            photo = np.asarray(getattr(skimage.data, name)())
        except Exception as error:  # not bundled in this scikit-image (or its optional download missing)
            print(f"skipping skimage.data.{name}: {type(error).__name__}: {error}", file=sys.stderr)
            continue
        photos[name] = photo
    sample = load_sample_images()
    for filename, photo in zip(sample.filenames, sample.images):
        photos[os.path.splitext(os.path.basename(filename))[0]] = np.asarray(photo)
    for name, photo in photos.items():
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=-1)
        photos[name] = np.ascontiguousarray(photo[..., :3]).astype(np.uint8)
    if not photos:
        raise RuntimeError("no photographs found in skimage.data or sklearn.datasets")
    return photos


def background(rng, photos, size):
    """A random crop (a quarter to all of the shorter side) of a random photo, resized, flipped, jittered."""
    names = sorted(photos)
    photo = photos[names[rng.integers(len(names))]]
    height, width = photo.shape[:2]
    side = int(min(height, width) * rng.uniform(0.25, 1.0))
    aspect = rng.uniform(0.8, 1.25)  # a slightly non-square crop, squeezed to the square output
    crop_h, crop_w = min(height, int(side * aspect)), min(width, int(side / aspect))
    top, left = rng.integers(height - crop_h + 1), rng.integers(width - crop_w + 1)
    image = Image.fromarray(photo[top:top + crop_h, left:left + crop_w]).resize((size, size), Image.BILINEAR)
    array = np.asarray(image, np.float32)
    if rng.random() < 0.5:
        array = array[:, ::-1]
    array = array * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    return np.clip(array, 0, 255)


def vivid_colour(rng):
    """An RGB float colour of random hue, saturation 0.55-1 and value 0.45-1."""
    hue, saturation, value = rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0)
    i, f = int(hue * 6) % 6, hue * 6 - int(hue * 6)
    p, q, t = value * (1 - saturation), value * (1 - f * saturation), value * (1 - (1 - f) * saturation)
    rgb = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)][i]
    return np.asarray(rgb, np.float32) * 255


def polygon(sides, radius, angle, centre, star=False):
    """The vertices of a regular polygon (or a star with ``sides`` points) around ``centre``."""
    count = sides * 2 if star else sides
    radii = np.where(np.arange(count) % 2 == 0, radius, radius * 0.45) if star else np.full(count, radius)
    angles = angle + 2 * math.pi * np.arange(count) / count
    return [(centre + r * math.cos(a), centre + r * math.sin(a)) for r, a in zip(radii, angles)]


def coverage(rng, label, diameter):
    """float32 [s, s] in [0, 1]: the fraction of each pixel the object covers, ``s = ceil(diameter) + 2``."""
    side = int(math.ceil(diameter)) + 2
    big, scale = side * SUPERSAMPLE, SUPERSAMPLE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    centre, radius = big / 2, diameter * scale / 2
    angle = rng.uniform(0, 2 * math.pi)
    name = CLASSES[label - 1]
    if name == "disc":
        draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=255)
    elif name == "square":
        draw.polygon(polygon(4, radius, angle, centre), fill=255)
    elif name == "triangle":
        draw.polygon(polygon(3, radius, angle, centre), fill=255)
    elif name == "ring":
        inner = radius * rng.uniform(0.45, 0.65)
        draw.ellipse([centre - radius, centre - radius, centre + radius, centre + radius], fill=255)
        draw.ellipse([centre - inner, centre - inner, centre + inner, centre + inner], fill=0)
    else:  # star
        draw.polygon(polygon(5, radius, angle, centre, star=True), fill=255)
    small = np.asarray(canvas, np.float32).reshape(side, scale, side, scale).mean(axis=(1, 3))
    return small / 255.0


def paint(rng, side):
    """float32 [side, side, 3]: the object's colours, flat, a linear gradient of two colours, or stripes."""
    first = vivid_colour(rng)
    style = rng.integers(3)
    if style == 0:
        return np.broadcast_to(first, (side, side, 3))
    second = vivid_colour(rng)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    along = (yy * math.sin(angle) + xx * math.cos(angle)) / side
    if style == 1:
        weight = np.clip(along - along.min(), 0, 1)[..., None]
    else:
        weight = (np.sin(along * 2 * math.pi * rng.uniform(2, 5)) > 0).astype(np.float32)[..., None]
    return first * (1 - weight) + second * weight


def make_image(seed, split, index, photos, size):
    """(uint8 image [size, size, 3], uint8 mask [size, size], [(label, (x, y, w, h), area)])."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    image = background(rng, photos, size)
    mask = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.int16)  # 0 none, k + 1 object k
    scale = size / NATIVE_SIZE
    labels = []
    for _ in range(rng.integers(1, MAX_OBJECTS + 1)):
        label = int(rng.integers(1, len(CLASSES) + 1))
        diameter = rng.uniform(*OBJECT_SIZE) * scale
        alpha = coverage(rng, label, diameter)
        side = alpha.shape[0]
        inside = alpha >= 0.5
        for _ in range(PLACEMENT_TRIES):
            top, left = rng.integers(0, size - side + 1, size=2)
            window = instances[top:top + side, left:left + side]
            hidden = np.bincount(window[inside], minlength=len(labels) + 1)[1:]
            before = np.bincount(instances.ravel(), minlength=len(labels) + 1)[1:]
            if np.all(hidden <= MAX_COVERED * np.maximum(before, 1)):
                break
        else:
            continue  # no room: one object fewer
        colours = paint(rng, side) * rng.uniform(0.9, 1.1, (side, side, 1))  # a little shading noise
        region = image[top:top + side, left:left + side]
        region[:] = region * (1 - alpha[..., None]) + colours * alpha[..., None]
        mask[top:top + side, left:left + side][inside] = label
        instances[top:top + side, left:left + side][inside] = len(labels) + 1
        labels.append(label)
    objects = []
    for k, label in enumerate(labels):
        ys, xs = np.nonzero(instances == k + 1)
        if len(ys) == 0:
            continue
        x, y = int(xs.min()), int(ys.min())
        objects.append((label, (x, y, int(xs.max()) + 1 - x, int(ys.max()) + 1 - y), int(len(ys))))
    noise = rng.integers(-4, 5, image.shape)  # sensor-like noise on everything
    return np.clip(image + noise, 0, 255).astype(np.uint8), mask, objects


def link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_split(out, split, count, seed, size, photos, layouts):
    """Writes ``count`` images of ``split`` in ``layouts``; returns the number of objects."""
    masks_root, coco_root = os.path.join(out, "masks"), os.path.join(out, "coco")
    if "masks" in layouts:
        for folder in ("images", "masks"):
            os.makedirs(os.path.join(masks_root, split, folder), exist_ok=True)
    if "coco" in layouts:
        os.makedirs(os.path.join(coco_root, split), exist_ok=True)
        os.makedirs(os.path.join(coco_root, "annotations"), exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, mask, objects = make_image(seed, split, index, photos, size)
        stem = f"{split}_{index:05d}"
        image_path = None
        if "masks" in layouts:
            image_path = os.path.join(masks_root, split, "images", f"{stem}.png")
            Image.fromarray(image).save(image_path, compress_level=1)
            Image.fromarray(mask, mode="L").save(os.path.join(masks_root, split, "masks", f"{stem}.png"))
        if "coco" in layouts:
            target = os.path.join(coco_root, split, f"{stem}.png")
            if image_path:
                if os.path.exists(target):
                    os.remove(target)
                link_or_copy(image_path, target)
            else:
                Image.fromarray(image).save(target, compress_level=1)
            images.append({"id": index + 1, "file_name": f"{stem}.png", "width": size, "height": size})
            for label, box, area in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": label,
                                    "bbox": list(box), "area": area, "iscrowd": 0})
    if "coco" in layouts:
        content = {"info": {"description": f"photo objects, {split}, seed {seed}, {size}x{size}"},
                   "images": images, "annotations": annotations,
                   "categories": [{"id": i + 1, "name": name, "supercategory": "shape"}
                                  for i, name in enumerate(CLASSES)]}
        with open(os.path.join(coco_root, "annotations", f"instances_{split}.json"), "w", encoding="utf-8") as file:
            json.dump(content, file)
    return len(annotations)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (masks/ and coco/ are written in it)")
    parser.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    parser.add_argument("--val", type=int, default=200, help="validation images (default 200)")
    parser.add_argument("--size", type=int, default=NATIVE_SIZE, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--layout", choices=("both", "masks", "coco"), default="both",
                        help="which layout(s) to write (default both)")
    args = parser.parse_args(argv)
    if args.size < 64:
        parser.error("--size must be at least 64 (objects are up to 60 pixels at 128)")
    if args.train < 1 or args.val < 1:
        parser.error("--train and --val must be at least 1")
    layouts = ("masks", "coco") if args.layout == "both" else (args.layout,)
    started = time.perf_counter()
    photos = load_photos()
    if "masks" in layouts:
        os.makedirs(os.path.join(args.out, "masks"), exist_ok=True)
        with open(os.path.join(args.out, "masks", "classes.txt"), "w", encoding="utf-8") as file:
            file.write("\n".join(("background",) + CLASSES) + "\n")
    for split, count in (("train", args.train), ("val", args.val)):
        objects = write_split(args.out, split, count, args.seed, args.size, photos, layouts)
        print(f"{split}: {count} images" + (f", {objects} objects" if "coco" in layouts else ""))
    written = ", ".join(os.path.join(args.out, layout) for layout in layouts)
    print(f"{len(photos)} photographs; wrote {written} in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
