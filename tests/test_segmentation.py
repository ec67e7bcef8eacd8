"""Segmentation heads on every backbone family, the masked loss, the IoU metrics and dilated ResNets."""

import keras
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sklearn_confusion
from sklearn.metrics import jaccard_score

import kcnn
from kcnn.tasks import build_task_model, check_task, load_task_model
from kcnn.tasks.segmentation import (build_segmenter, confusion_matrix, labelled_pixels, segmentation_loss,
                                    segmentation_metrics)

# One backbone per family, at a size each accepts (LeNet: 1 channel; AlexNet: valid convs, odd size).
BACKBONES = {"lenet5": (64, 64), "alexnet": (127, 127), "vgg11": (64, 64), "inception_v1": (64, 64),
             "resnet18": (64, 64), "resnet20": (32, 32)}


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("head", ["fcn", "deeplabv3", "unet"])
def test_every_head_on_every_family_gives_logits_at_the_input_size(name, head):
    size = BACKBONES[name]
    model = build_task_model("segmentation", name, 5, image_size=size, head=head, head_options={"width": 16})
    channels = kcnn.model_info(name).input_shape[2]
    logits = model(np.random.default_rng(0).normal(size=(2, *size, channels)).astype("float32"))
    assert logits.shape == (2, *size, 5) and logits.dtype == "float32"
    assert np.isfinite(logits).all()


def test_heads_keep_float32_logits_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_task_model("segmentation", "resnet18", 3, image_size=(64, 64), head="deeplabv3",
                                 head_options={"width": 16})
        assert model.get_layer("conv1_conv").compute_dtype == "bfloat16"
        assert model(np.zeros((1, 64, 64, 3), "float32")).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_fcn_skip_scores_start_at_zero_and_learn():
    """Long et al. 2015, section 4.2: FCN-16s/8s skip score layers are zero-initialised (the net starts as
    the coarser one) and then learn."""
    import tensorflow as tf

    model = build_segmenter(kcnn.backbone("resnet18", input_shape=(64, 64, 3)), 4, fcn_skips=2, width=16)
    skips = [layer for layer in model.layers if layer.name.startswith("fcn_score_")]
    assert sorted(layer.name for layer in skips) == ["fcn_score_P3", "fcn_score_P4"]
    assert all(not np.any(layer.kernel.numpy()) for layer in skips)
    images = tf.constant(np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype("float32"))
    masks = np.random.default_rng(2).integers(0, 4, size=(2, 64, 64))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(segmentation_loss(masks, model(images, training=True)))
    gradients = tape.gradient(loss, [layer.kernel for layer in skips])
    assert all(float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients)


def test_deeplab_on_a_dilated_resnet_keeps_stride_16_and_scales_its_rates():
    backbone = kcnn.backbone("resnet50", input_shape=(64, 64, 3), output_stride=16)
    assert backbone.output["P4"].shape[1:3] == (4, 4) and "P5" not in backbone.output
    model = build_segmenter(backbone, 3, head="deeplabv3", width=16)
    rates = [model.get_layer(f"aspp_rate{r}_conv").dilation_rate for r in (6, 12, 18)]
    assert rates == [(6, 6), (12, 12), (18, 18)]
    plain = build_segmenter(kcnn.backbone("resnet18", input_shape=(64, 64, 3)), 3, head="deeplabv3", width=16)
    assert plain.get_layer("aspp_rate3_conv").dilation_rate == (3, 3)  # output stride 32: rates halved
    with pytest.raises(ValueError, match="accepted: 8, 16, 32"):
        kcnn.backbone("resnet50", output_stride=4)


def test_dilated_resnet_has_the_same_weights():
    assert kcnn.profile("resnet50", output_stride=8).params == kcnn.profile("resnet50").params


def _log_softmax(logits):
    exp = np.exp(logits - logits.max(-1, keepdims=True))
    return np.log(exp / exp.sum(-1, keepdims=True))


def test_loss_sums_over_labelled_pixels_and_counts_them():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 4, 5, 3)).astype("float32")
    masks = rng.integers(0, 3, size=(2, 4, 5))
    masks[0, :2] = 255
    masks[1] = 255  # nothing labelled: contributes 0, not NaN
    valid = masks[0] != 255
    expected = -_log_softmax(logits)[0][valid, masks[0][valid]].sum()
    np.testing.assert_allclose(segmentation_loss(masks, logits).numpy(), [expected, 0.0], rtol=1e-5)
    np.testing.assert_array_equal(labelled_pixels(masks).numpy(), [valid.sum(), 0])


def test_a_batch_loss_is_the_mean_over_its_labelled_pixels_as_the_references():
    """A crop that is mostly ignore label weighs by its labelled pixels (torchvision's and DeepLab's
    cross-entropy with ignore_index: the mean over every labelled pixel of the batch), not as a whole image."""
    model = build_task_model("segmentation", "resnet20", 3, image_size=(32, 32), head="fcn",
                             head_options={"width": 8})
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    masks = rng.integers(0, 3, size=(2, 32, 32))
    masks[1, :, 2:] = 255  # the second crop is mostly padding: 64 labelled pixels against 1024
    picked = -np.take_along_axis(_log_softmax(logits), np.where(masks == 255, 0, masks)[..., None], -1)[..., 0]
    labelled = masks != 255
    pixel_mean = picked[labelled].mean()
    image_mean = np.mean([picked[i][labelled[i]].mean() for i in range(2)])
    loss = float(model.compute_loss(y=masks, y_pred=logits))
    assert loss == pytest.approx(pixel_mean, rel=1e-5)
    assert abs(pixel_mean - image_mean) > 1e-2  # the per-image mean (kcnn before) is another number


def test_iou_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(3)
    masks = rng.integers(0, 4, size=(3, 16, 16))
    masks[0, 0] = 255
    logits = rng.normal(size=(3, 16, 16, 4)).astype("float32")
    confusion = confusion_matrix(masks, logits, 4).numpy()
    truth, predicted = masks.ravel(), logits.argmax(-1).ravel()
    keep = truth != 255
    np.testing.assert_array_equal(confusion, sklearn_confusion(truth[keep], predicted[keep], labels=range(4)))
    metrics = segmentation_metrics(confusion, ["a", "b", "c", "d"])
    per_class = jaccard_score(truth[keep], predicted[keep], labels=range(4), average=None)
    np.testing.assert_allclose(list(metrics["per_class_iou"].values()), per_class)
    assert metrics["mean_iou"] == pytest.approx(per_class.mean())
    assert metrics["pixel_accuracy"] == pytest.approx((truth[keep] == predicted[keep]).mean())


def test_unknown_task_head_or_option_combinations_are_refused():
    with pytest.raises(ValueError, match="unknown task 'depth'; accepted: segmentation"):
        check_task("depth", None)
    with pytest.raises(ValueError, match="unknown segmentation head 'pspnet'; accepted: fcn, deeplabv3, unet"):
        check_task("segmentation", "pspnet")
    with pytest.raises(ValueError, match="output_stride is an option of resnet backbones, not of vgg11"):
        build_task_model("segmentation", "vgg11", 3, image_size=(64, 64), backbone_options={"output_stride": 16})


def test_task_weights_round_trip_and_are_refused_by_build(tmp_path):
    from kcnn.weights import PRESETS, files

    model = build_task_model("segmentation", "resnet20", 3, image_size=(32, 32), head="unet",
                             head_options={"width": 16})
    path = files.save(model, tmp_path / "seg.weights.h5", {
        "task": "segmentation", "head": "unet", "head_options": {"width": 16}, "architecture": "resnet20",
        "options": {}, "include_top": False, "classes": 3, "input_shape": [32, 32, 3],
        "preprocessing": PRESETS["torch"].to_dict(), "class_names": ["bg", "a", "b"], "source": {},
        "skipped_tensors": []})
    images = np.random.default_rng(4).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(load_task_model(path)(images), model(images))
    with pytest.raises(ValueError, match="holds a fine-tuned segmentation model"):
        kcnn.build("resnet20", weights=path)
