"""Parity of Faster/Mask R-CNN's parts with torchvision's own: RoIAlign (one level and the pyramid), the RPN's
anchors, box coding, and the paste of masks into the image.

Needs torch and torchvision (``make test-parity`` installs them); deselected from ``make test``.
"""

import numpy as np
import pytest
import tensorflow as tf

from kcnn.tasks.anchors import decode_boxes, encode_boxes, iou
from kcnn.tasks.masks import paste_masks
from kcnn.tasks.roi_align import roi_align
from kcnn.tasks.rpn import rpn_anchors

pytestmark = pytest.mark.parity


def _torchvision():
    import sys

    sys.modules.setdefault("triton", None)  # see test_parity_torchvision._import_torchvision
    import torch
    import torchvision

    return torch, torchvision


def _boxes(rng, count, height, width, batch):
    """Random yxyx boxes over and around an image, tiny to larger than it, some partly outside."""
    y0, x0 = rng.uniform(-0.2, 1.0, count) * height, rng.uniform(-0.2, 1.0, count) * width
    sizes = np.exp(rng.uniform(np.log(0.5), np.log(1.3 * max(height, width)), (count, 2)))
    boxes = np.stack([y0, x0, y0 + sizes[:, 0], x0 + sizes[:, 1]], -1).astype("float32")
    return boxes.reshape(batch, count // batch, 4)


def _xyxy(boxes):
    return boxes[..., [1, 0, 3, 2]]


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("level,sampling_ratio,output_size", [(2, 2, (7, 7)), (3, 2, (14, 14)), (4, 1, (7, 5)),
                                                               (5, 3, (7, 7))])
def test_roi_align_matches_torchvision(level, sampling_ratio, output_size, aligned):
    torch, torchvision = _torchvision()
    rng = np.random.default_rng(level)
    height, width, batch = 200, 152, 2
    features = rng.normal(size=(batch, -(-height // 2**level), -(-width // 2**level), 5)).astype("float32")
    boxes = _boxes(rng, 40, height, width, batch)
    ours = roi_align({level: features}, boxes, output_size=output_size, sampling_ratio=sampling_ratio,
                     aligned=aligned).numpy()
    rois = torch.cat([torch.arange(batch).repeat_interleave(20)[:, None].float(),
                      torch.from_numpy(_xyxy(boxes).reshape(-1, 4))], 1)
    theirs = torchvision.ops.roi_align(torch.from_numpy(features).permute(0, 3, 1, 2), rois, output_size,
                                       spatial_scale=2.0**-level, sampling_ratio=sampling_ratio, aligned=aligned)
    expected = theirs.permute(0, 2, 3, 1).numpy().reshape(ours.shape)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_multiscale_roi_align_matches_torchvision():
    torch, torchvision = _torchvision()
    rng = np.random.default_rng(7)
    height, width, batch = 224, 288, 2
    maps = {level: rng.normal(size=(batch, height // 2**level, width // 2**level, 6)).astype("float32")
            for level in (2, 3, 4, 5)}
    boxes = _boxes(rng, 60, height, width, batch)
    ours = roi_align(maps, boxes, output_size=(7, 7), sampling_ratio=2, aligned=False).numpy()
    pool = torchvision.ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], 7, 2)  # torchvision's is aligned=False
    theirs = pool({f"p{level}": torch.from_numpy(m).permute(0, 3, 1, 2) for level, m in maps.items()},
                  [torch.from_numpy(_xyxy(b)) for b in boxes], [(height, width)] * batch)
    expected = theirs.permute(0, 2, 3, 1).numpy().reshape(ours.shape)
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_rpn_anchors_match_torchvision_anchor_generator():
    torch, torchvision = _torchvision()
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    height, width = 96, 160
    generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    maps = [torch.zeros(1, 1, -(-height // 2**level), -(-width // 2**level)) for level in range(2, 7)]
    theirs = generator(ImageList(torch.zeros(1, 3, height, width), [(height, width)]), maps)[0].numpy()
    np.testing.assert_array_equal(rpn_anchors((height, width)).numpy(), _xyxy(theirs))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coder_matches_torchvision(weights):
    torch, _ = _torchvision()
    from torchvision.models.detection._utils import BoxCoder

    rng = np.random.default_rng(3)
    anchors = _boxes(rng, 50, 100, 100, 1)[0]
    # boxes within a factor 60 of their anchors' sides: kcnn clips the encoded log-size at log(1000 / 16)
    boxes = anchors + rng.uniform(-0.3, 0.3, (50, 4)).astype("float32") * np.tile(anchors[:, 2:] - anchors[:, :2], 2)
    coder = BoxCoder((weights[1], weights[0], weights[3], weights[2]))  # torchvision's are (x, y, w, h)
    theirs = coder.encode_single(torch.from_numpy(_xyxy(boxes)), torch.from_numpy(_xyxy(anchors))).numpy()
    ours = encode_boxes(boxes, anchors, weights).numpy()
    np.testing.assert_allclose(ours, theirs[:, [1, 0, 3, 2]], rtol=1e-5, atol=1e-5)
    deltas = rng.normal(scale=0.5, size=(50, 4)).astype("float32")
    decoded = coder.decode_single(torch.from_numpy(deltas[:, [1, 0, 3, 2]]), torch.from_numpy(_xyxy(anchors)))
    np.testing.assert_allclose(decode_boxes(deltas, anchors, weights).numpy(), _xyxy(decoded.numpy()),
                               rtol=1e-5, atol=1e-4)


def test_paste_masks_matches_torchvision():
    torch, _ = _torchvision()
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    rng = np.random.default_rng(5)
    height, width = 90, 120
    boxes = np.clip(_boxes(rng, 30, height, width, 1)[0], 0, [height, width, height, width])  # as detections are
    masks = rng.uniform(size=(30, 28, 28)).astype("float32")
    ours = paste_masks(masks[None], boxes[None], (height, width))[0].numpy()
    theirs = paste_masks_in_image(torch.from_numpy(masks[:, None]), torch.from_numpy(_xyxy(boxes)),
                                  (height, width), padding=1)[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


HEIGHT, WIDTH = 320, 416  # multiples of 32: torchvision's transform neither resizes (min/max size) nor pads them
RELEASED_NAMES = [  # torchvision's released checkpoints name these modules as older torchvision did
    (r"backbone\.fpn\.(inner|layer)_blocks\.(\d)\.0\.", r"backbone.fpn.\1_blocks.\2."),
    (r"rpn\.head\.conv\.0\.0\.", "rpn.head.conv."),
    (r"roi_heads\.mask_head\.(\d)\.0\.", lambda m: f"roi_heads.mask_head.mask_fcn{int(m[1]) + 1}."),
]


def _random_torchvision_detector(masks, classes):
    """torchvision's (Mask|Faster) R-CNN ResNet-50 FPN with random weights spread wide enough that scores rarely tie
    (default inits leave every objectness and class score near its prior), BatchNorm statistics too, and the
    pyramid's outputs scaled to about unit spread, so that boxes stay boxes (not the whole image)."""
    torch, torchvision = _torchvision()
    torch.manual_seed(0)
    builder = (torchvision.models.detection.maskrcnn_resnet50_fpn if masks else
               torchvision.models.detection.fasterrcnn_resnet50_fpn)
    model = builder(weights=None, weights_backbone=None, num_classes=classes + 1, min_size=HEIGHT, max_size=WIDTH)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "bn1.bias", "bn2.bias", "bn3.bias", "downsample.1.bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif name.startswith(("rpn.head.cls_logits", "roi_heads.box_predictor.cls_score")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.3)
            elif name.startswith(("rpn.head.bbox_pred", "roi_heads.box_predictor.bbox_pred")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
            elif name.startswith("backbone.fpn.layer_blocks"):
                tensor.mul_(1 / 200)  # the random backbone's maps have a spread of about 200: the heads get ~1
    return model.eval()


def _match(theirs, ours):
    """For each torchvision detection, kcnn's detection of the same class with the highest IoU (or None)."""
    pairs = []
    for box, label in zip(theirs["boxes"], theirs["labels"]):
        same = np.flatnonzero(ours["classes"] == label - 1)
        if not len(same):
            pairs.append(None)
            continue
        overlaps = iou(tf.constant(_xyxy(box[None])), tf.constant(ours["boxes"][same])).numpy()[0]
        pairs.append(same[int(np.argmax(overlaps))])
    return pairs


@pytest.mark.parametrize("masks", [False, True], ids=["fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"])
def test_imported_torchvision_detector_gives_torchvisions_detections(masks, tmp_path):
    import re

    from click.testing import CliRunner

    import kcnn
    from kcnn.cli import main
    from kcnn.tasks.torchvision_import import import_detector
    from kcnn.weights import PRESETS

    torch, _ = _torchvision()
    reference = _random_torchvision_detector(masks, classes=4)
    image = np.random.default_rng(2).uniform(0, 1, (HEIGHT, WIDTH, 3)).astype("float32")
    with torch.no_grad():
        theirs = {k: v.numpy() for k, v in reference([torch.from_numpy(image).permute(2, 0, 1)])[0].items()}
    assert len(theirs["boxes"]) >= 20  # enough detections to compare

    current = {k: v for k, v in reference.state_dict().items()}
    torch.save(current, tmp_path / "current.pth")
    released = {}
    for key, value in current.items():
        for pattern, replacement in RELEASED_NAMES:
            key = re.sub(pattern, replacement, key)
        released[key] = value
    assert released.keys() != current.keys()
    torch.save(released, tmp_path / "released.pth")
    import_detector("resnet50", tmp_path / "current.pth", tmp_path / "current.weights.h5", image_size=(HEIGHT, WIDTH))
    result = CliRunner().invoke(main, ["weights", "import", "--from", "torchvision", "--model", "resnet50", "--source",
                                       str(tmp_path / "released.pth"), "--out", str(tmp_path / "released.weights.h5"),
                                       "--image-size", f"{HEIGHT},{WIDTH}"])
    head = "mask_rcnn" if masks else "faster_rcnn"
    assert result.exit_code == 0 and f"{head} on resnet50, 4 classes, input {HEIGHT}x{WIDTH}" in result.output
    model, other = kcnn.load(tmp_path / "current.weights.h5"), kcnn.load(tmp_path / "released.weights.h5")
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)  # both layouts give the same model

    normalised = np.asarray(PRESETS["torch"](image[None] * 255.0))
    found = model.predict(normalised, verbose=0)
    count = int(found["num_detections"][0])
    ours = {key: value[0, :count] for key, value in found.items() if key != "num_detections"}
    assert count == len(theirs["boxes"])
    for i, j in enumerate(_match(theirs, ours)):
        assert j is not None, i
        np.testing.assert_allclose(ours["boxes"][j], _xyxy(theirs["boxes"][i]), atol=1e-3)
        np.testing.assert_allclose(ours["scores"][j], theirs["scores"][i], atol=1e-4)
        if masks:
            mine, reference_mask = ours["masks"][j] > 0, theirs["masks"][i, 0] >= 0.5
            overlap = (mine & reference_mask).sum() / max((mine | reference_mask).sum(), 1)
            assert overlap > 0.99, (i, overlap)
