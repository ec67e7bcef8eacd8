"""Faster R-CNN and Mask R-CNN: their parts against independent transcriptions of the reference definitions
(torchvision's RoIAlign CPU kernel, FPN level mapping, anchor generator, sampler and mask paste), and the
models on every zoo family. ``tests/test_parity_rcnn.py`` compares the same parts with torchvision itself."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn
from kcnn.tasks import InstanceSegmenter, ObjectDetector
from kcnn.tasks.anchors import grid_size, iou
from kcnn.tasks.masks import paste_masks
from kcnn.tasks.rcnn import build_rcnn
from kcnn.tasks.roi_align import assign_levels, crop_masks, roi_align
from kcnn.tasks.rpn import match, rpn_anchors, sample

SMALL = {"fpn_width": 8, "representation_size": 16, "sampled_rois": 32, "train_proposals": 50,
         "test_proposals": 50}


def _reference_roi_align(feature, box, output_size, scale, sampling_ratio, aligned):
    """torchvision's ``roi_align_forward_kernel_impl`` (CPU) for one box, transcribed loop by loop: [ph, pw, C]."""
    height, width = feature.shape[:2]

    def bilinear(y, x):
        if y < -1.0 or y > height or x < -1.0 or x > width:
            return np.zeros(feature.shape[2])
        y, x = max(y, 0.0), max(x, 0.0)
        y_low, x_low = int(y), int(x)
        if y_low >= height - 1:
            y_high = y_low = height - 1
            y = float(y_low)
        else:
            y_high = y_low + 1
        if x_low >= width - 1:
            x_high = x_low = width - 1
            x = float(x_low)
        else:
            x_high = x_low + 1
        ly, lx = y - y_low, x - x_low
        hy, hx = 1 - ly, 1 - lx
        return (hy * hx * feature[y_low, x_low] + hy * lx * feature[y_low, x_high]
                + ly * hx * feature[y_high, x_low] + ly * lx * feature[y_high, x_high])

    offset = 0.5 if aligned else 0.0
    y0, x0, y1, x1 = (v * scale - offset for v in box)
    roi_h, roi_w = y1 - y0, x1 - x0
    if not aligned:
        roi_h, roi_w = max(roi_h, 1.0), max(roi_w, 1.0)
    bin_h, bin_w = roi_h / output_size[0], roi_w / output_size[1]
    out = np.zeros((*output_size, feature.shape[2]))
    for ph in range(output_size[0]):
        for pw in range(output_size[1]):
            for iy in range(sampling_ratio):
                for ix in range(sampling_ratio):
                    out[ph, pw] += bilinear(y0 + ph * bin_h + (iy + 0.5) * bin_h / sampling_ratio,
                                            x0 + pw * bin_w + (ix + 0.5) * bin_w / sampling_ratio)
    return out / sampling_ratio**2


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3])
def test_roi_align_matches_the_reference_kernel_loop(sampling_ratio, aligned):
    rng = np.random.default_rng(sampling_ratio)
    feature = rng.normal(size=(2, 9, 13, 3)).astype("float32")
    # inside, across the border, more than a pixel outside, tiny, and wider than the map (at stride 4)
    boxes = np.array([[[4, 4, 30, 40], [-6, -3, 12, 20], [-20, -20, -6, -6]],
                      [[10, 10, 10.5, 10.5], [-8, 30, 44, 60], [33, 49, 36, 52]]], "float32")
    ours = roi_align({2: feature}, boxes, output_size=(3, 4), sampling_ratio=sampling_ratio, aligned=aligned).numpy()
    for b in range(2):
        for r in range(3):
            expected = _reference_roi_align(feature[b].astype("float64"), boxes[b, r], (3, 4), 0.25,
                                            sampling_ratio, aligned)
            np.testing.assert_allclose(ours[b, r], expected, atol=1e-5)  # float32 against float64
    assert np.all(ours[0, 2] == 0)  # a box more than a pixel outside pools zeros


def test_pyramid_level_of_a_box_follows_the_fpn_formula():
    sides = [10.0, 111.9, 112.0, 223.9, 224.0, 448.0, 2000.0, 0.0]
    boxes = tf.constant([[0.0, 0.0, side, side] for side in sides])
    expected = [min(5, max(2, math.floor(4 + math.log2(side / 224) + 1e-6))) if side else 2 for side in sides]
    assert assign_levels(boxes, (2, 5)).numpy().tolist() == expected == [2, 2, 3, 3, 4, 5, 5, 2]


def test_a_box_pools_from_its_level_of_the_pyramid():
    maps = {level: np.full((1, 512 // 2**level, 512 // 2**level, 1), float(level), "float32") for level in (2, 3, 4, 5)}
    boxes = tf.constant([[[0, 0, 20, 20], [0, 0, 120, 120], [0, 0, 60, 60], [10, 10, 500, 500]]], tf.float32)
    pooled = roi_align(maps, boxes, output_size=(2, 2), sampling_ratio=1).numpy()
    np.testing.assert_array_equal(pooled[0, :3, 0, 0, 0], [2, 3, 2])  # 20 px -> P2, 120 -> P3, 60 -> P2
    assert pooled[0, 3, 0, 0, 0] == 5  # a large box from the top level


def test_mask_targets_are_each_boxes_own_object():
    masks = np.zeros((1, 2, 16, 16), "uint8")
    masks[0, 0, :8, :8], masks[0, 1, 8:, 8:] = 1, 1
    boxes = tf.constant([[[0, 0, 8, 8], [8, 8, 16, 16], [0, 0, 8, 8]]], tf.float32)
    crops = crop_masks(masks, tf.constant([[0, 1, 1]]), boxes, output_size=(4, 4)).numpy()
    np.testing.assert_array_equal(crops[0, 0], 1)  # object 0 fills its box
    np.testing.assert_array_equal(crops[0, 1], 1)
    np.testing.assert_array_equal(crops[0, 2], 0)  # object 1 does not reach into object 0's box


def test_rpn_anchors_are_torchvisions_layout():
    image = (64, 96)
    anchors = rpn_anchors(image).numpy()
    counts = [3 * math.prod(grid_size(image, level)) for level in range(2, 7)]
    assert len(anchors) == sum(counts)
    start = 0
    for level, size, count in zip(range(2, 7), (32, 64, 128, 256, 512), counts):
        block = anchors[start:start + count].reshape(*grid_size(image, level), 3, 4)
        heights, widths = block[..., 2] - block[..., 0], block[..., 3] - block[..., 1]
        np.testing.assert_allclose(np.sqrt(heights * widths)[0, 0], size, rtol=0.02)  # rounded to whole pixels
        np.testing.assert_allclose((heights / widths)[0, 0], [0.5, 1.0, 2.0], rtol=0.05)
        centre_y = (block[..., 0] + block[..., 2]) / 2
        np.testing.assert_array_equal(centre_y[:, 0, 1], np.arange(block.shape[0]) * (image[0] // block.shape[0]))
        start += count


def test_anchor_sizes_option_sets_the_rpn_anchors_per_level():
    backbone = kcnn.backbone("resnet20", input_shape=(64, 64, 3))
    _, heads = build_rcnn(backbone, 2, image_size=(64, 64), anchor_sizes=[8, 16, 32, 64, 128], **SMALL)
    anchors = heads.anchors.numpy()
    square = anchors[1]  # P2, cell (0, 0), aspect ratio 1
    assert square.tolist() == [-4.0, -4.0, 4.0, 4.0] and len(anchors) == len(rpn_anchors((64, 64)))


def test_matcher_thresholds_low_quality_matches_and_padding():
    truth = tf.constant([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [0.0, 0.0, 10.0, 10.0]])
    valid = tf.constant([True, True, False])  # the third is padding: it matches nothing
    boxes = tf.constant([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 6.0], [0.0, 0.0, 10.0, 2.0],
                         [50.0, 50.0, 61.0, 70.0], [80.0, 80.0, 90.0, 90.0]])
    labels, matched = match(iou(boxes, truth), valid, high=0.7, low=0.3)
    # IoU 0.9 positive; 0.6 between; 0.2 negative; 0.33 is box 1's best: positive by the low-quality rule
    assert labels.numpy().tolist() == [1, -1, 0, 1, 0] and matched.numpy()[:4].tolist() == [0, 0, 0, 1]
    plain, _ = match(iou(boxes, truth), valid, high=0.7, low=0.3, allow_low_quality=False)
    assert plain.numpy().tolist() == [1, -1, 0, -1, 0]


@pytest.mark.parametrize("positives, negatives, want", [(300, 1000, (128, 384)), (10, 1000, (10, 502)),
                                                        (10, 20, (10, 20))])
def test_sampler_takes_a_quarter_positives_and_fills_with_negatives(positives, negatives, want):
    labels = tf.constant([1] * positives + [0] * negatives + [-1] * 40)
    slots, valid = sample(labels, count=512, positive_fraction=0.25, seed=tf.constant([1, 2]))
    chosen = tf.boolean_mask(slots, valid).numpy()
    assert len(set(chosen.tolist())) == len(chosen)  # no RoI twice
    taken = labels.numpy()[chosen]
    assert ((taken == 1).sum(), (taken == 0).sum()) == want and (taken >= 0).all()
    again, _ = sample(labels, count=512, positive_fraction=0.25, seed=tf.constant([1, 2]))
    other, _ = sample(labels, count=512, positive_fraction=0.25, seed=tf.constant([3, 4]))
    assert (again.numpy() == slots.numpy()).all() and (other.numpy() != slots.numpy()).any()


def _reference_paste(mask, box, height, width):
    """torchvision's ``expand_masks`` + ``paste_mask_in_image`` for one mask, with numpy's bilinear resize
    written out (PyTorch's ``align_corners=False``)."""
    size = mask.shape[0]
    padded = np.pad(mask, 1)
    scale = (size + 2.0) / size
    cx, cy = (box[1] + box[3]) / 2, (box[0] + box[2]) / 2
    half_w, half_h = (box[3] - box[1]) / 2 * scale, (box[2] - box[0]) / 2 * scale
    x0, y0, x1, y1 = (int(v) for v in (cx - half_w, cy - half_h, cx + half_w, cy + half_h))
    w, h = max(x1 - x0 + 1, 1), max(y1 - y0 + 1, 1)

    def weights(out, source):
        matrix = np.zeros((out, source))
        for i in range(out):
            position = max((i + 0.5) * source / out - 0.5, 0.0)
            low = int(position)
            high = min(low + 1, source - 1)
            fraction = position - low
            matrix[i, low] += 1 - fraction
            matrix[i, high] += fraction
        return matrix

    resized = weights(h, size + 2) @ padded @ weights(w, size + 2).T
    image = np.zeros((height, width))
    ys, ye, xs, xe = max(y0, 0), min(y1 + 1, height), max(x0, 0), min(x1 + 1, width)
    image[ys:ye, xs:xe] = resized[ys - y0:ye - y0, xs - x0:xe - x0]
    return image


def test_pasted_masks_match_the_reference_paste():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(6, 28, 28)).astype("float32")
    boxes = np.array([[3.2, 5.7, 30.1, 41.9], [0, 0, 50, 70], [10, 60, 12, 62], [20.5, 1.5, 49.9, 69.9],
                      [0, 0, 1, 1], [7, 8, 40, 9]], "float32")
    ours = paste_masks(masks[None], boxes[None], (50, 70))[0].numpy()
    for mask, box, got in zip(masks, boxes, ours):
        np.testing.assert_allclose(got, _reference_paste(mask.astype("float64"), box, 50, 70), atol=1e-5)


CASES = [("resnet18", (100, 76, 3)), ("vgg11", (64, 64, 3)), ("inception_v1", (127, 127, 3)),
         ("alexnet", (127, 127, 3)), ("lenet5", (32, 32, 1)), ("resnet20", (32, 32, 3))]


@pytest.mark.parametrize("name,shape", CASES)
def test_faster_and_mask_rcnn_on_every_family(name, shape):
    keras.utils.set_random_seed(0)
    masks = name in ("resnet18", "inception_v1", "lenet5")
    cls = InstanceSegmenter if masks else ObjectDetector
    options = {**SMALL, "mask_width": 8} if masks else SMALL
    model = cls(name, 3, image_size=shape[:2], head="mask_rcnn" if masks else "faster_rcnn", head_options=options)
    for level in (2, 3, 4, 5):
        assert tuple(model.output[f"P{level}"].shape[1:3]) == grid_size(shape[:2], level)
    assert tuple(model.get_layer("fpn_p6").output.shape[1:3]) == grid_size(shape[:2], 6)
    assert len(model.get_layer("rpn_conv")._inbound_nodes) == 5  # one RPN head shared by P2..P6
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, *shape)).astype("float32")
    targets = {"boxes": np.array([[[0.1, 0.1, 0.6, 0.5], [0, 0, 0, 0]], [[0.2, 0.3, 0.9, 0.8], [0.5, 0.1, 0.9, 0.4]]],
                                 "float32"),
               "classes": np.array([[2, -1], [0, 1]]), "num_boxes": np.array([1, 2])}
    if masks:
        targets["masks"] = np.zeros((2, 2, *shape[:2]), "uint8")
        for b, i in ((0, 0), (1, 0), (1, 1)):
            y0, x0, y1, x1 = (targets["boxes"][b, i] * np.tile(shape[:2], 2)).astype(int)
            targets["masks"][b, i, y0:y1, x0:x1] = 1
    loss = model.per_example_loss(targets, model(images, training=True))
    assert loss.shape == (2,) and np.isfinite(loss.numpy()).all() and (loss.numpy() > 0).all()
    predicted = model.predict(images, verbose=0)
    assert predicted["boxes"].shape == (2, 100, 4) and predicted["num_detections"].dtype == np.int32
    kept = predicted["boxes"][: int(predicted["num_detections"][0])]
    assert (kept >= 0).all() and (kept <= max(shape[:2])).all()
    if masks:
        assert predicted["masks"].shape == (2, 100, *shape[:2]) and predicted["masks"].dtype == np.uint8


def test_rcnn_parts_compute_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = kcnn.backbone("resnet20", input_shape=(64, 64, 3))
        network, heads = build_rcnn(backbone, 2, image_size=(64, 64), masks=True, **SMALL, mask_width=8)
        outputs = network(tf.zeros((1, 64, 64, 3)))
        assert outputs["P2"].dtype == "bfloat16" and outputs["rpn_objectness"].dtype == "float32"
        logits, deltas = heads.box_head(outputs, tf.constant([[[0.0, 0.0, 30.0, 30.0]]]))
        assert logits.dtype == deltas.dtype == "float32"
        targets = {"boxes": tf.constant([[[0.1, 0.1, 0.5, 0.5]]]), "classes": tf.constant([[1]]),
                   "num_boxes": tf.constant([1]), "masks": tf.ones((1, 1, 64, 64), tf.uint8)}
        loss = heads.loss(targets, outputs)
        assert loss.dtype == "float32" and np.isfinite(loss.numpy()).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_rcnn_arguments_say_what_is_accepted():
    backbone = kcnn.backbone("resnet20", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="sampled_rois must be positive ints, got 0"):
        build_rcnn(backbone, 2, image_size=(32, 32), sampled_rois=0)
    with pytest.raises(ValueError, match="aligned must be true or false"):
        build_rcnn(backbone, 2, image_size=(32, 32), aligned="yes")
    with pytest.raises(ValueError, match=r"anchor_sizes must be 5 positive sizes \(P2..P6\), got \[8, 16\]"):
        build_rcnn(backbone, 2, image_size=(32, 32), anchor_sizes=[8, 16])
    with pytest.raises(ValueError, match="unknown detection head 'mask_rcnn'; accepted: retinanet, faster_rcnn"):
        ObjectDetector("resnet20", 2, image_size=(32, 32), head="mask_rcnn")
    with pytest.raises(ValueError, match="sampling_ratio must be a positive int"):
        roi_align({2: tf.zeros((1, 8, 8, 1))}, tf.zeros((1, 1, 4)), output_size=(2, 2), sampling_ratio=0)
