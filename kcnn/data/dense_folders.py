"""Segmentation, detection and instance segmentation datasets in local folders; the layout is read
from the contents.

Masks (segmentation): PATH/<split>/images/*.jpg|*.jpeg|*.png, and for each image
PATH/<split>/masks/<same stem>.png: one channel (grayscale, or palette indices as in VOC's
SegmentationClass PNGs), pixel = class id, 0 = background, 255 = ignore. Optional
PATH/classes.txt names the classes, one per line, background first; without it the masks of
both splits are read once per process and the classes are 0..(largest label other than 255),
named "background", "class_1", ...

COCO (detection): PATH/annotations/instances_<split>.json with images in PATH/<split>/ (or, as
COCO ships, instances_<split>2017.json and PATH/<split>2017/). Categories of both files are
numbered 0..K-1 in sorted id order; "iscrowd" boxes are ignore regions (left out of the loss, kept
in the evaluation's ground truth with their "area"); [x, y, w, h] pixel boxes become normalised
ymin, xmin, ymax, xmax with the width and height the JSON gives for the image.

COCO (instance segmentation): the same folders, and every annotation (crowds included) has its
"segmentation": polygons [[x, y, x, y, ...], ...] or an RLE {"counts": [ints] or a string,
"size": [height, width]}, read with pycocotools as COCO's own evaluation reads them
(kcnn.data.instances.annotation_rle). Masks are decoded when their image is read; the split's
annotations file is parsed a second time (once per process) for them.

<split> is train or val. Folders are listed (and COCO files parsed) once per process. A folder
in neither layout is refused with both described:

>>> folder_kind("/no/such/folder", "detection")
Traceback (most recent call last):
ValueError: folder /no/such/folder has no dense dataset layout; expected PATH/<split>/images/...
"""

import functools
import json
import os

import numpy as np
import tensorflow as tf

from kcnn.data.dense_sources import (IGNORE_LABEL, DenseSource, DetectionInfo, SegmentationInfo,
                                     decode_image, decode_or_skip, image_ground_truth, sized_like)
from kcnn.data.instances import annotation_rle, decode_masks
from kcnn.data.sources import SPLITS, _import_optional

FOLDER_LAYOUTS = {
    "segmentation": "PATH/<split>/images/*.jpg|*.png with PATH/<split>/masks/<stem>.png",
    "detection": "PATH/annotations/instances_<split>.json with images in PATH/<split>/ (COCO)",
    "instance_segmentation": "PATH/annotations/instances_<split>.json with images in PATH/<split>/ "
                             "(COCO, a segmentation on every annotation)",
}
_LAYOUT_TASKS = {"segmentation": ("segmentation",), "detection": ("detection", "instance_segmentation")}
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def folder_kind(root, task):
    """"segmentation" or "detection", the layout of folder `root` (COCO's "detection" layout serves
    instance_segmentation too); refuses one that does not serve `task`, or matches neither layout."""
    if _coco_files(root):
        kind = "detection"
    elif any(os.path.isdir(os.path.join(root, split, "images")) for split in SPLITS):
        kind = "segmentation"
    else:
        raise ValueError(f"folder {root} has no dense dataset layout; expected "
                         f"{FOLDER_LAYOUTS['segmentation']} (segmentation) or "
                         f"{FOLDER_LAYOUTS['detection']} (detection); <split> is train or val")
    if task not in _LAYOUT_TASKS[kind]:
        raise ValueError(f"folder {root} is a {kind} dataset ({FOLDER_LAYOUTS[kind]}); "
                         f"{task} needs {FOLDER_LAYOUTS[task]}")
    return kind


def folder_info(root, task):
    folder_kind(root, task)
    return (_mask_listing if task == "segmentation" else _coco_listing)(root)[0]


def open_folder(root, task, split):
    """The DenseSource of `split` of folder `root`."""
    folder_kind(root, task)
    if task == "segmentation":
        return _mask_source(root, split)
    return _coco_source(root, split, task)


# --- masks ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _mask_listing(root):
    """The SegmentationInfo and {split: (image paths, mask paths)} for the splits present."""
    files = {}
    for split in SPLITS:
        image_dir = os.path.join(root, split, "images")
        if not os.path.isdir(image_dir):
            continue
        images = sorted(entry.path for entry in os.scandir(image_dir)
                        if entry.name.lower().endswith(_IMAGE_SUFFIXES))
        masks = [os.path.join(root, split, "masks", os.path.splitext(os.path.basename(path))[0]
                              + ".png") for path in images]
        for image, mask in zip(images, masks):
            if not os.path.isfile(mask):
                raise ValueError(f"image {image} has no mask {mask}; expected "
                                 f"{FOLDER_LAYOUTS['segmentation']} for every image")
        files[split] = (images, masks)
    names_file = os.path.join(root, "classes.txt")
    if os.path.isfile(names_file):
        with open(names_file, encoding="utf-8") as lines:
            class_names = tuple(line.strip() for line in lines if line.strip())
        if len(class_names) < 2:
            raise ValueError(f"{names_file} names {len(class_names)} class; expected background "
                             "first and at least one more, one name per line")
    else:
        largest = max((_largest_label(mask) for _, masks in files.values() for mask in masks),
                      default=0)
        class_names = ("background",) + tuple(f"class_{i}" for i in range(1, largest + 1))
    counts = {split: len(files[split][0]) if split in files else 0 for split in SPLITS}
    return SegmentationInfo(root, len(class_names), class_names, counts), files


def _largest_label(path):
    """The largest label other than IGNORE_LABEL in mask `path` (0 if unreadable: counted later)."""
    try:
        labels = np.unique(read_mask(path))
    except (OSError, ValueError):
        return 0
    labels = labels[labels != IGNORE_LABEL]
    return int(labels.max(initial=0))


def read_mask(path):
    """The class ids uint8 [H, W] of a one-channel (grayscale or palette) PNG mask."""
    image_module = _import_optional("PIL.Image", "pillow", "reading segmentation masks")
    with image_module.open(path) as mask:
        if mask.mode not in ("L", "P", "1"):
            raise ValueError(f"mask {path} has mode {mask.mode}; expected one channel (L or P)")
        return np.asarray(mask, dtype=np.uint8)


def _mask_source(root, split):
    info, files = _mask_listing(root)
    if split not in files:
        raise ValueError(f"folder {root} has no {split}/images/; expected "
                         f"{FOLDER_LAYOUTS['segmentation']}")
    images, masks = files[split]
    records = tf.data.Dataset.from_tensor_slices({"name": images, "mask_path": masks})

    def example(record):
        image = decode_image(tf.io.read_file(record["name"]))
        mask = tf.numpy_function(lambda path: read_mask(path.decode()), [record["mask_path"]],
                                 tf.uint8, stateful=False)
        mask = tf.cast(tf.ensure_shape(mask, [None, None]), tf.int32)
        return {"name": record["name"], "image": image, "mask": sized_like(mask, image)}

    return DenseSource(records, lambda ds: decode_or_skip(ds, example), info, max(len(images), 1))


# --- COCO ----------------------------------------------------------------------------------


def _coco_files(root):
    """{split: (annotation file, image folder)} for the splits with a COCO annotation file."""
    found = {}
    for split in SPLITS:
        for name in (split, f"{split}2017"):
            annotations = os.path.join(root, "annotations", f"instances_{name}.json")
            if os.path.isfile(annotations):
                found[split] = (annotations, os.path.join(root, name))
                break
    return found


@functools.lru_cache(maxsize=4)
def _coco_listing(root):
    """The DetectionInfo and {split: CocoSplit}."""
    files = _coco_files(root)
    parsed = {}
    for split, (annotations, _) in files.items():
        with open(annotations, encoding="utf-8") as file:
            parsed[split] = json.load(file)
    categories = {}
    for content in parsed.values():
        categories.update((cat["id"], cat["name"]) for cat in content.get("categories", []))
    ids = sorted(categories)
    label_of = {category: label for label, category in enumerate(ids)}
    listing = {split: _coco_split(content, files[split], label_of)
               for split, content in parsed.items()}
    counts = {split: len(listing[split]["paths"]) if split in listing else 0 for split in SPLITS}
    info = DetectionInfo(root, len(ids), tuple(categories[i] for i in ids), counts)
    return info, listing


def _coco_split(content, files, label_of):
    """{"paths", "sizes" [(height, width)], and per image lists of pixel "boxes" (ymin, xmin, ymax, xmax),
    "classes", "ignore" (iscrowd) and "area"}, images in id order."""
    annotations_file, image_dir = files
    images = sorted(content.get("images", []), key=lambda image: image["id"])
    position, sizes = {}, []
    for image in images:
        height, width = image.get("height"), image.get("width")
        if not height or not width:
            raise ValueError(f"image {image.get('file_name')!r} in {annotations_file} has no "
                             "width and height; COCO images need both")
        position[image["id"]] = len(sizes)
        sizes.append((height, width))
    split = {"paths": [os.path.join(image_dir, image["file_name"]) for image in images], "sizes": sizes,
             **{key: [[] for _ in images] for key in ("boxes", "classes", "ignore", "area")}}
    for i, annotation in _image_annotations(content, position):
        x, y, w, h = annotation["bbox"]
        split["boxes"][i].append((y, x, y + h, x + w))
        # An unknown category becomes -1: dropped and counted as "bad box class" when read.
        split["classes"][i].append(label_of.get(annotation.get("category_id"), -1))
        split["ignore"][i].append(bool(annotation.get("iscrowd", 0)))
        split["area"][i].append(float(annotation.get("area", 0.0)))
    return split


def _image_annotations(content, position):
    """(image position, annotation) of the annotations of listed images, in the file's order."""
    for annotation in content.get("annotations", []):
        if annotation.get("image_id") in position:
            yield position[annotation["image_id"]], annotation


@functools.lru_cache(maxsize=4)
def _coco_rles(root, split):
    """Per image of `split` (listing order), the compressed RLE counts of its annotations, in the order
    of _coco_split's boxes; the annotations file is parsed again, the polygons kept no longer than this."""
    annotations_file = _coco_files(root)[split][0]
    with open(annotations_file, encoding="utf-8") as file:
        content = json.load(file)
    images = sorted(content.get("images", []), key=lambda image: image["id"])
    position = {image["id"]: i for i, image in enumerate(images)}
    rles = [[] for _ in images]
    for i, annotation in _image_annotations(content, position):
        where = f"annotation {annotation.get('id')} (image {images[i]['file_name']!r}) in {annotations_file}"
        if "segmentation" not in annotation:
            raise ValueError(f"{where} has no 'segmentation'; instance_segmentation needs polygons or an RLE "
                             "on every annotation, crowds included")
        rle = annotation_rle(annotation["segmentation"], images[i]["height"], images[i]["width"], where)
        rles[i].append(rle["counts"])
    return rles


def _ragged(rows, dtype, width=None):
    flat = np.array([value for row in rows for value in row], dtype)
    return tf.RaggedTensor.from_row_lengths(flat.reshape(-1, width) if width else flat, [len(row) for row in rows])


def _coco_source(root, split, task):
    info, listing = _coco_listing(root)
    if split not in listing:
        raise ValueError(f"folder {root} has no annotations/instances_{split}.json; expected "
                         f"{FOLDER_LAYOUTS[task]}")
    listed = listing[split]
    rles = _coco_rles(root, split) if task == "instance_segmentation" else None
    scale = [np.tile(np.asarray(size, np.float64), 2) for size in listed["sizes"]]
    normalised = [np.asarray(boxes, np.float64).reshape(-1, 4) / s for boxes, s in zip(listed["boxes"], scale)]
    columns = {
        "name": tf.constant(listed["paths"], tf.string), "index": tf.range(len(listed["paths"]), dtype=tf.int32),
        "boxes": _ragged(normalised, np.float32, 4), "classes": _ragged(listed["classes"], np.int32),
        "ignore": _ragged(listed["ignore"], bool),
    }
    if rles is not None:
        columns["counts"] = tf.RaggedTensor.from_row_lengths(
            tf.constant([counts for row in rles for counts in row], tf.string, shape=[sum(map(len, rles))]),
            [len(row) for row in rles])
        columns["size"] = tf.constant(np.asarray(listed["sizes"], np.int32).reshape(-1, 2))
    records = tf.data.Dataset.from_tensor_slices(columns)

    def example(record):
        record = {key: value.to_tensor() if isinstance(value, tf.RaggedTensor) else value
                  for key, value in record.items()}
        image = decode_image(tf.io.read_file(record["name"]))
        if rles is None:
            return {**record, "image": image}
        counts, size = record.pop("counts"), record.pop("size")
        masks = tf.numpy_function(decode_masks, [counts, size[0], size[1]], tf.uint8, stateful=False)
        return {**record, "image": image, "masks": sized_like(tf.ensure_shape(masks, [None, None, None]), image)}

    def ground_truth():
        return {i: image_ground_truth(*listed["sizes"][i], listed["boxes"][i], listed["classes"][i],
                                      listed["ignore"][i], listed["area"][i],
                                      None if rles is None else [{"size": list(listed["sizes"][i]), "counts": c}
                                                                 for c in rles[i]])
                for i in range(len(listed["paths"]))}

    return DenseSource(records, lambda ds: decode_or_skip(ds, example), info, max(len(listed["paths"]), 1),
                       ground_truth)
