"""Instance masks as COCO run-length encodings (RLE), with pycocotools.

Masks are uint8 [k, H, W] (1 on instance i's pixels); an RLE is pycocotools' compressed
{"size": [H, W], "counts": bytes}, what COCOeval's "segm" scores. A COCO annotation's
"segmentation" (polygons, or an RLE with integer or string counts) becomes that RLE as
pycocotools' COCO.annToRLE makes it:

>>> rles = encode_masks(np.array([[[0, 1, 1], [0, 1, 1]]], np.uint8))
>>> rles[0]["size"], decode_masks([rle["counts"] for rle in rles], 2, 3).tolist()
([2, 3], [[[0, 1, 1], [0, 1, 1]]])
>>> square = annotation_rle([[1, 1, 3, 1, 3, 3, 1, 3]], 4, 5, "annotation 1")  # x, y, ...
>>> decode_masks([square["counts"]], 4, 5)[0].tolist()
[[0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
>>> annotation_rle({"counts": [3, 2], "size": [2, 2]}, 4, 5, "annotation 2 in a.json")
Traceback (most recent call last):
ValueError: annotation 2 in a.json has an RLE of size [2, 2]; its image is [4, 5] (height, width)
"""

import numpy as np
from pycocotools import mask as mask_utils


def encode_masks(masks):
    """The compressed RLEs of masks [k, H, W] (any dtype: nonzero is inside), in order."""
    masks = np.asarray(masks)
    if not len(masks):
        return []
    return mask_utils.encode(np.asfortranarray(np.transpose(masks != 0, (1, 2, 0)).astype(np.uint8)))


def decode_masks(counts, height, width):
    """uint8 [k, height, width] of k compressed RLE `counts` (bytes or str) of that size."""
    rles = [{"size": [int(height), int(width)], "counts": c} for c in counts]
    if not rles:
        return np.zeros((0, int(height), int(width)), np.uint8)
    return np.ascontiguousarray(np.transpose(mask_utils.decode(rles), (2, 0, 1)))


def annotation_rle(segmentation, height, width, where):
    """The compressed RLE of a COCO annotation's `segmentation` in an image of height x width:
    polygons [[x, y, x, y, ...], ...] (those of under 3 points left out; none left: an empty
    mask), or {"counts": [ints] or a string, "size": [height, width]}. `where` names the
    annotation in the one-line errors."""
    if isinstance(segmentation, list):
        try:
            polygons = [np.asarray(polygon, np.float64).reshape(-1) for polygon in segmentation]
        except (TypeError, ValueError):
            raise ValueError(f"{where} has polygons that are not lists of numbers; expected "
                             "[[x, y, x, y, ...], ...]") from None
        # As detectron2 does, polygons of under 3 points (COCO has a few) are left out.
        polygons = [polygon for polygon in polygons if polygon.size >= 6 and polygon.size % 2 == 0]
        if not polygons:
            return encode_masks(np.zeros((1, height, width), np.uint8))[0]
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if not (isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), (list, str, bytes))
            and "size" in segmentation):
        raise ValueError(f"{where} has a segmentation of neither kind; expected polygons [[x, y, ...], ...] "
                         'or an RLE {"counts": ..., "size": [height, width]}')
    if list(segmentation["size"]) != [height, width]:
        raise ValueError(f"{where} has an RLE of size {list(segmentation['size'])}; its image is "
                         f"[{height}, {width}] (height, width)")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": [height, width], "counts": counts.encode() if isinstance(counts, str) else counts}
