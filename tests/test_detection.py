"""RetinaNet: anchors, matching, the model on every backbone family, focal loss, NMS, COCO mAP, and learning."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import kcnn
from kcnn.tasks.anchors import AnchorConfig, decode_boxes, encode_boxes, encode_targets, generate, grid_size
from kcnn.tasks.coco_eval import coco_metrics
from kcnn.tasks.detection import anchors_for, build_retinanet, retinanet_config, retinanet_loss
from kcnn.tasks.nms import decode_detections

SMALL = {"fpn_width": 16, "head_width": 16, "head_depth": 1}


def test_anchor_count_and_positions():
    anchors = generate((100, 70)).numpy()
    cells = [math.ceil(100 / 2**level) * math.ceil(70 / 2**level) for level in range(3, 8)]
    assert cells == [13 * 9, 7 * 5, 4 * 3, 2 * 2, 1 * 1] and len(anchors) == 9 * sum(cells)
    # P3, cell (0, 0): centre (4, 4); scale 1, width / height 0.5 -> 32 * sqrt(2) high, 32 / sqrt(2) wide.
    np.testing.assert_allclose(anchors[0], [4 - 22.627417, 4 - 11.313708, 4 + 22.627417, 4 + 11.313708], atol=1e-4)
    # P3's last anchor: cell (12, 8), centre (100, 68); scale 2^(2/3), width / height 2.
    height, width = 32 * 2 ** (2 / 3) / math.sqrt(2), 32 * 2 ** (2 / 3) * math.sqrt(2)
    np.testing.assert_allclose(anchors[13 * 9 * 9 - 1], [100 - height / 2, 68 - width / 2, 100 + height / 2,
                                                         68 + width / 2], atol=1e-4)
    # P4's first anchor: centre (8, 8), base size 64.
    np.testing.assert_allclose(anchors[13 * 9 * 9], [8 - 45.254834, 8 - 22.627417, 8 + 45.254834, 8 + 22.627417],
                               atol=1e-4)


def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    anchors = generate((64, 64))
    corners = anchors.numpy()
    sizes = (corners[:, 2:] - corners[:, :2]) * np.exp(rng.uniform(-3, 3, (len(corners), 2)))  # within the clip
    centres = (corners[:, 2:] + corners[:, :2]) / 2 + rng.uniform(-20, 20, (len(corners), 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], -1).astype("float32")
    np.testing.assert_allclose(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes, rtol=1e-5, atol=1e-4)


def test_matching_positive_ignored_negative_and_padding():
    shift = 40 * 0.55 / 1.45  # IoU (40 - d) / (40 + d) = 0.45 for a 40x40 box shifted by d
    anchors = tf.constant([[10, 10, 50, 50], [10, 10 + shift, 50, 50 + shift], [60, 60, 90, 90]], tf.float32)
    boxes = tf.constant([[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]], tf.float32)
    classes, boxes_targets = encode_targets(boxes, tf.constant([3, -1]), 1, anchors, image_size=(100, 100))
    assert classes.numpy().tolist() == [3, -2, -1]
    np.testing.assert_allclose(boxes_targets[0], 0, atol=1e-6)
    classes, boxes_targets = encode_targets(boxes, tf.constant([3, 5]), 0, anchors, image_size=(100, 100))
    assert classes.numpy().tolist() == [-1, -1, -1] and not np.any(boxes_targets)


def test_tiny_box_still_gets_its_best_anchor():
    anchors = generate((64, 64))
    boxes = tf.constant([[0.0, 0.0, 0.05, 0.05], [0.5, 0.5, 0.5, 0.5]])  # 3x3 pixels, and zero area
    classes, boxes_targets = encode_targets(boxes, tf.constant([1, 0]), 2, anchors, image_size=(64, 64))
    corners = anchors.numpy()
    inside = np.prod(np.clip(np.minimum(corners[:, 2:], 3.2) - np.maximum(corners[:, :2], 0), 0, None), axis=1)
    overlaps = inside / (np.prod(corners[:, 2:] - corners[:, :2], axis=1) + 3.2**2 - inside)
    assert overlaps.max() < 0.4
    best = np.flatnonzero(overlaps > overlaps.max() - 1e-6)  # ties: the 3 aspect ratios of one scale
    assert np.flatnonzero(classes.numpy() >= 0).tolist() == best.tolist()
    assert set(classes.numpy()[best]) == {1} and np.all(np.isfinite(boxes_targets))


def test_encode_targets_in_tf_data():
    anchors = generate((64, 64))
    dataset = tf.data.Dataset.from_tensors((tf.constant([[0.1, 0.2, 0.6, 0.7], [0, 0, 0, 0]]), tf.constant([0, -1]),
                                            tf.constant(1)))
    dataset = dataset.map(lambda b, c, n: encode_targets(b, c, n, anchors, image_size=(64, 64)))
    assert [tuple(spec.shape) for spec in dataset.element_spec] == [(774,), (774, 4)]
    classes, _ = next(iter(dataset))
    assert np.sum(classes.numpy() >= 0) > 0


CASES = [("resnet18", (100, 76, 3)), ("vgg11", (64, 64, 3)), ("inception_v1", (127, 127, 3)),
         ("alexnet", (127, 127, 3)), ("lenet5", (32, 32, 1)), ("resnet20", (32, 32, 3))]


@pytest.mark.parametrize("name,shape", CASES)
def test_retinanet_on_every_family(name, shape):
    model = build_retinanet(kcnn.backbone(name, input_shape=shape), 3, image_size=shape[:2], **SMALL)
    count = len(generate(shape[:2]))
    assert model.output["classification"].shape[1:] == (count, 3) and tuple(anchors_for(model).shape) == (count, 4)
    for level in range(3, 8):
        layer = model.get_layer(f"fpn_output_p{level}" if level <= 5 else f"fpn_p{level}")
        assert tuple(layer.output.shape[1:3]) == grid_size(shape[:2], level), level
    assert len(model.get_layer("class_subnet_output")._inbound_nodes) == 5  # one head shared by P3..P7
    towers = [model.get_layer(f"{subnet}_subnet_conv1").kernel.numpy() for subnet in ("class", "box")]
    assert not np.allclose(*towers) and abs(towers[0].std() - 0.01) < 0.002  # N(0, 0.01^2), drawn per layer
    images = np.random.default_rng(0).uniform(0, 1, (2, *shape)).astype("float32")
    outputs = model(images)
    assert outputs["box_regression"].shape == (2, count, 4) and outputs["classification"].dtype == "float32"
    # Prior: every class starts at probability ~0.01.
    assert abs(float(tf.reduce_mean(tf.sigmoid(outputs["classification"]))) - 0.01) < 0.005
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    for key, value in clone(images).items():
        np.testing.assert_allclose(value, outputs[key], atol=1e-5)


def test_paper_size_heads_have_the_hand_counted_parameters():
    backbone = kcnn.backbone("resnet50", input_shape=(64, 64, 3))
    model = build_retinanet(backbone, 91, image_size=(64, 64))
    conv = lambda k, c_in, c_out: k * k * c_in * c_out + c_out  # noqa: E731
    fpn = (conv(1, 512, 256) + conv(1, 1024, 256) + conv(1, 2048, 256) + 3 * conv(3, 256, 256)
           + conv(3, 2048, 256) + conv(3, 256, 256))  # laterals, outputs, P6 on C5, P7
    heads = 8 * conv(3, 256, 256) + conv(3, 256, 9 * 91) + conv(3, 256, 9 * 4)
    # torchvision's retinanet_resnet50_fpn (34,014,999) = these with P6 on P5 + ResNet-50's convs (23,454,912).
    assert model.count_params() - backbone.count_params() == fpn + heads == 14_688_855
    assert fpn + heads - conv(3, 2048, 256) + conv(3, 256, 256) + 23_454_912 == 34_014_999


def test_saved_keras_file_keeps_weights_and_anchors(tmp_path):
    model = build_retinanet(kcnn.backbone("resnet20", input_shape=(32, 32, 3)), 2, image_size=(32, 32), **SMALL)
    model.save(tmp_path / "retinanet.keras")
    loaded = keras.saving.load_model(tmp_path / "retinanet.keras")
    images = np.random.default_rng(1).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(images)["classification"], model(images)["classification"], atol=1e-5)
    assert retinanet_config(loaded) == {"num_classes": 2, "image_size": (32, 32), "anchor_config": AnchorConfig()}
    np.testing.assert_array_equal(anchors_for(loaded), anchors_for(model))


def test_group_norm_heads_shared_serializable_and_default_layout_unchanged(tmp_path):
    backbone = kcnn.backbone("resnet20", input_shape=(32, 32, 3))
    plain = build_retinanet(backbone, 2, image_size=(32, 32), fpn_width=8, head_width=48, head_depth=2)
    assert not [layer for layer in plain.layers if "norm" in layer.name]  # the paper's heads: weight files as before
    keras.utils.set_random_seed(0)
    model = build_retinanet(kcnn.backbone("resnet20", input_shape=(32, 32, 3)), 2, image_size=(32, 32),
                            fpn_width=8, head_width=48, head_depth=2, head_norm="group")
    names = {w.path for w in model.weights if "subnet" in w.path}
    assert names == {f"{s}_subnet_{layer}" for s in ("class", "box")
                     for layer in ("conv1/kernel", "conv2/kernel", "norm1/gamma", "norm1/beta", "norm2/gamma",
                                   "norm2/beta", "output/kernel", "output/bias")}
    for subnet in ("class", "box"):
        norm = model.get_layer(f"{subnet}_subnet_norm1")
        assert isinstance(norm, keras.layers.GroupNormalization) and norm.groups == 16  # gcd(32, 48)
        assert len(norm._inbound_nodes) == 5  # shared by P3..P7, like the convs
        assert not model.get_layer(f"{subnet}_subnet_conv1").use_bias
        assert model.get_layer(f"{subnet}_subnet_output").use_bias
    images = np.random.default_rng(2).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    outputs = model(images)
    assert abs(float(tf.reduce_mean(tf.sigmoid(outputs["classification"]))) - 0.01) < 0.005  # the prior
    clone = keras.models.model_from_json(model.to_json())
    clone.set_weights(model.get_weights())
    model.save(tmp_path / "gn.keras")
    loaded = keras.saving.load_model(tmp_path / "gn.keras")
    for copy in (clone, loaded):
        for key, value in copy(images).items():
            np.testing.assert_array_equal(value, outputs[key])
    with pytest.raises(ValueError, match="unknown head_norm 'batch'; accepted: none, group"):
        build_retinanet(backbone, 2, image_size=(32, 32), head_norm="batch")


def test_detector_with_group_norm_heads_keeps_its_option_through_config_and_weights(tmp_path):
    from kcnn.tasks import ObjectDetector, build_task_model

    options = {"fpn_width": 16, "head_width": 32, "head_depth": 1, "head_norm": "group"}
    model = build_task_model("detection", "resnet20", 3, image_size=(32, 32), head_options=options)
    assert model.get_config()["head_options"] == options
    rebuilt = ObjectDetector.from_config(model.get_config())
    rebuilt.set_weights(model.get_weights())
    images = np.random.default_rng(3).uniform(0, 1, (1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(rebuilt(images)["classification"], model(images)["classification"])
    model.save_weights(tmp_path / "gn.weights.h5")
    rebuilt.load_weights(tmp_path / "gn.weights.h5")


@pytest.mark.parametrize("head_norm", ["none", "group"])
def test_mixed_bfloat16_forward(head_norm):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_retinanet(kcnn.backbone("resnet20", input_shape=(32, 32, 3)), 2, image_size=(32, 32), **SMALL,
                                head_norm=head_norm)
        outputs = model(np.ones((1, 32, 32, 3), "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("fpn_output_p3").compute_dtype == "bfloat16"
    assert {v.dtype for v in outputs.values()} == {tf.float32}
    assert all(np.all(np.isfinite(v)) for v in outputs.values())


def test_bad_arguments_say_what_is_accepted():
    backbone = kcnn.backbone("resnet20", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="differs from the backbone's input size"):
        build_retinanet(backbone, 2, image_size=(64, 64))
    with pytest.raises(ValueError, match="no feature level at or below P3"):
        build_retinanet(kcnn.backbone("resnet18", input_shape=(64, 64, 3), levels=["P4", "P5"]), 2,
                        image_size=(64, 64))
    with pytest.raises(ValueError, match="num_classes"):
        build_retinanet(backbone, 0, image_size=(32, 32))
    with pytest.raises(ValueError, match="negative_iou <= positive_iou"):
        encode_targets(tf.zeros((1, 4)), tf.zeros((1,), tf.int32), 0, generate((32, 32)), image_size=(32, 32),
                       positive_iou=0.3)


def test_focal_loss_matches_the_paper_formula():
    logits = np.array([[[1.5, -0.5], [-2.0, 0.3], [9.0, 9.0]]], "float32")
    deltas = np.array([[[0.5, -2.0, 0.1, 0.0], [7, 7, 7, 7], [7, 7, 7, 7]]], "float32")
    targets = np.array([[[0.0, 0.0, 0.0, 0.3], [0, 0, 0, 0], [0, 0, 0, 0]]], "float32")
    classes = np.array([[1, -1, -2]])  # positive of class 1, background, ignored
    p = 1 / (1 + np.exp(-logits[0, :2].astype("float64")))
    alpha, gamma = 0.25, 2.0
    focal = (-alpha * (1 - p[0, 1]) ** gamma * np.log(p[0, 1])  # FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)
             - (1 - alpha) * p[0, 0] ** gamma * np.log(1 - p[0, 0])
             - (1 - alpha) * (p[1] ** gamma * np.log(1 - p[1])).sum())
    huber = 0.5 * 0.5**2 + (2.0 - 0.5) + 0.5 * 0.1**2 + 0.5 * 0.3**2  # delta 1: quadratic below 1, linear above
    outputs = {"classification": tf.constant(logits), "box_regression": tf.constant(deltas)}
    loss = retinanet_loss(tf.constant(classes), tf.constant(targets), outputs, alpha=alpha, gamma=gamma)
    np.testing.assert_allclose(loss.numpy(), [focal + huber], rtol=1e-5)


def test_loss_is_finite_without_boxes_and_with_degenerate_boxes():
    anchors = generate((32, 32))
    degenerate = tf.constant([[0.2, 0.2, 0.2, 0.6], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0]])  # zero-area boxes
    for boxes, count in [(tf.zeros((3, 4)), 0), (degenerate, 2)]:
        classes, targets = encode_targets(boxes, tf.constant([0, 1, -1]), count, anchors, image_size=(32, 32))
        outputs = {"classification": tf.Variable(tf.zeros((1, len(anchors), 2))),
                   "box_regression": tf.Variable(tf.zeros((1, len(anchors), 4)))}
        with tf.GradientTape() as tape:
            loss = retinanet_loss(classes[None], targets[None], outputs)
        gradients = tape.gradient(loss, list(outputs.values()))
        assert np.isfinite(loss.numpy()).all() and all(np.isfinite(g.numpy()).all() for g in gradients)


def test_classwise_nms_and_normalised_clipped_boxes():
    anchors = tf.constant([[-8, -8, 24, 24], [-8, -6, 24, 26], [30, 30, 60, 60]], tf.float32)
    logits = tf.constant([[[4.0, -9.0], [3.0, -9.0], [-9.0, -9.0]],  # same class, IoU 0.88: one survives
                          [[4.0, -9.0], [-9.0, 3.0], [-9.0, -9.0]]])  # different classes: both survive
    outputs = {"classification": logits, "box_regression": tf.zeros((2, 3, 4))}
    signature = {key: tf.TensorSpec((None, 3, None), tf.float32) for key in outputs}
    decode = tf.function(lambda o: decode_detections(o, anchors, image_size=(32, 64), max_detections=4),
                         input_signature=[signature])
    detections = decode(outputs)
    assert detections["num_detections"].numpy().tolist() == [1, 2]
    assert detections["detection_classes"][1, :2].numpy().tolist() == [0.0, 1.0]
    np.testing.assert_allclose(detections["detection_boxes"][0, 0], [0, 0, 0.75, 0.375], atol=1e-6)
    assert detections["detection_boxes"].shape == (2, 4, 4)
    assert detections["detection_boxes"].dtype == tf.float32 and detections["num_detections"].dtype == tf.int32


def test_coco_metrics_perfect_shifted_and_missing():
    truth = [{"boxes": np.array([[10.0, 10.0, 50.0, 50.0], [60, 10, 90, 70]]), "classes": np.array([0, 1])},
             {"boxes": np.array([[5.0, 5.0, 95.0, 95.0]]), "classes": np.array([1])}]
    perfect = [(image["boxes"], np.full(len(image["classes"]), 0.9), image["classes"]) for image in truth]
    metrics = coco_metrics(truth, perfect, class_names=["a", "b", "c"])
    for key in ("mAP", "mAP50", "mAP75"):
        assert metrics[key] == pytest.approx(1.0)
    assert metrics["per_class_AP50"]["b"] == pytest.approx(1.0) and math.isnan(metrics["per_class_AP50"]["c"])
    shifted = [(np.array([[10.0, 20.0, 50.0, 60.0]]), np.array([0.9]), np.array([0]))]  # IoU 30 / 50 = 0.6
    one = coco_metrics([{key: value[:1] for key, value in truth[0].items()}], shifted)
    assert one["mAP50"] == pytest.approx(1.0) and one["mAP75"] == 0.0 and one["mAP"] == pytest.approx(0.3)
    empty = coco_metrics(truth, [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))] * 2)
    assert empty["mAP"] == 0.0 and empty["mAP50"] == 0.0


def _rectangles(count, size, rng):
    """Images with one or two solid rectangles, red = class 0, green = class 1, in the loader's padded layout."""
    images = np.zeros((count, size, size, 3), "float32")
    boxes, classes = np.zeros((count, 2, 4), "float32"), np.full((count, 2), -1, "int32")
    for i in range(count):
        for j in range(rng.integers(1, 3)):
            (height, width), label = rng.integers(16, 33, 2), rng.integers(0, 2)
            top, left = rng.integers(0, size - height), rng.integers(0, size - width)
            images[i, top:top + height, left:left + width, label] = 1.0
            boxes[i, j], classes[i, j] = np.array([top, left, top + height, left + width]) / size, label
    return images, boxes, classes


def test_retinanet_learns_rectangles():
    size, rng = 64, np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    images, boxes, classes = _rectangles(16, size, rng)
    model = build_retinanet(kcnn.backbone("resnet20", input_shape=(size, size, 3)), 2, image_size=(size, size),
                            fpn_width=32, head_width=32, head_depth=1)
    anchors = anchors_for(model)
    targets = [encode_targets(b, c, np.sum(c >= 0), anchors, image_size=(size, size)) for b, c in zip(boxes, classes)]
    class_targets, box_targets = (tf.stack(t) for t in zip(*targets))
    optimizer = keras.optimizers.Adam(1e-3)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            outputs = model(tf.gather(images, batch), training=True)
            loss = tf.reduce_mean(retinanet_loss(tf.gather(class_targets, batch), tf.gather(box_targets, batch),
                                                 outputs))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    losses = [float(step(rng.choice(16, 8, replace=False))) for _ in range(100)]
    assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:5]), losses[::10]
    found = decode_detections(model(images), anchors, image_size=(size, size))
    truth = [{"boxes": b[c >= 0] * size, "classes": c[c >= 0]} for b, c in zip(boxes, classes)]
    detections = [(found["detection_boxes"][i, :n].numpy() * size, found["detection_scores"][i, :n].numpy(),
                   found["detection_classes"][i, :n].numpy().astype(int))
                  for i, n in enumerate(found["num_detections"].numpy())]
    assert coco_metrics(truth, detections, class_names=["red", "green"])["mAP50"] > 0.5
