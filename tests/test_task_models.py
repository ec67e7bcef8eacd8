"""The task models the Keras way: compile, fit on a user's tf.data, evaluate, decoded predict, .keras round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kcnn.data import shapes
from kcnn.tasks import ImageClassifier, ImageSegmenter, InstanceSegmenter, ObjectDetector
from kcnn.weights import PRESETS
from test_zoo_harness import check_custom_layers_round_trip

SIZE = (64, 64)
HEADS = [(ImageSegmenter, "fcn", {"width": 16}), (ImageSegmenter, "deeplabv3", {"width": 16}),
         (ImageSegmenter, "unet", {"width": 16}),
         (ObjectDetector, "retinanet", {"fpn_width": 16, "head_width": 16, "head_depth": 1}),
         (ObjectDetector, "faster_rcnn", {"fpn_width": 16, "representation_size": 32, "sampled_rois": 64}),
         (InstanceSegmenter, "mask_rcnn", {"fpn_width": 16, "representation_size": 32, "sampled_rois": 64,
                                           "mask_width": 16})]


def _shapes_arrays(task, count=16):
    images, masks, boxes, classes = shapes.generate("train", size=SIZE[0], count=count, seed=3)
    normalised = np.asarray(PRESETS["torch"](images.astype("float32")))
    if task == "segmentation":
        return normalised, masks.astype("int32")
    padded = np.full((count, 8, 4), 0.0, "float32")
    labels = np.full((count, 8), -1, "int32")
    for i, (b, c) in enumerate(zip(boxes, classes)):
        padded[i, :len(b)], labels[i, :len(c)] = b / SIZE[0], c  # loaders give boxes normalised to [0, 1]
    targets = {"boxes": padded, "classes": labels, "num_boxes": np.array([len(c) for c in classes], "int32")}
    if task == "instance_segmentation":  # object i's mask: the pixels of instance i + 1
        instances = shapes.generate_instances("train", size=SIZE[0], count=count, seed=3)
        targets["masks"] = (instances[:, None] == np.arange(1, 9)[None, :, None, None]).astype("uint8")
    return normalised, targets


def test_a_classifier_fits_a_users_tf_data_and_predicts_probabilities():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = tf.image.resize(digits.images[..., None] / 16.0 * 2 - 1, (32, 32)).numpy()
    train = tf.data.Dataset.from_tensor_slices((images[:1400], digits.target[:1400])).shuffle(1400, seed=0).batch(64)
    keras.utils.set_random_seed(0)
    model = ImageClassifier("lenet5", 10)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    history = model.fit(train, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    result = model.evaluate(images[1400:], digits.target[1400:], verbose=0, return_dict=True)
    assert set(result) == {"loss", "top1", "top5"} and result["top1"] > 90.0  # percent, as the CLI reports
    probabilities = model.predict(images[1400:], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    hits = 100 * np.mean(probabilities.argmax(axis=1) == digits.target[1400:])
    assert hits == pytest.approx(result["top1"], abs=1e-3)


def test_googlenet_aux_losses_count_in_fit():
    model = ImageClassifier("inception_v1", 3, input_shape=(96, 96, 3), backbone_options={"aux_logits": True})
    images, labels = np.zeros((2, 96, 96, 3), "float32"), np.array([0, 1])
    outputs = model(images)
    plain = keras.losses.sparse_categorical_crossentropy(labels, outputs["predictions"], from_logits=True)
    aux = sum(keras.losses.sparse_categorical_crossentropy(labels, outputs[k], from_logits=True)
              for k in ("aux1", "aux2"))
    np.testing.assert_allclose(model.per_example_loss(labels, outputs), plain + 0.3 * aux, rtol=1e-6)
    assert model.predict(images, verbose=0).shape == (2, 3)


@pytest.mark.parametrize("cls, head, options", HEADS, ids=[head for _, head, _ in HEADS])
def test_dense_task_models_fit_predict_and_round_trip_through_keras_files(cls, head, options, tmp_path):
    keras.utils.set_random_seed(0)
    model = cls("resnet18", 4, image_size=SIZE, head=head, head_options=options)
    x, y = _shapes_arrays(model.task)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.evaluate(x, y, verbose=0, return_dict=True)["loss"] > 0

    predicted = model.predict(x[:4], verbose=0)
    if model.task == "segmentation":
        assert predicted.shape == (4, *SIZE) and predicted.dtype == np.int32
        np.testing.assert_array_equal(predicted, np.argmax(model(x[:4], training=False), axis=-1))
    else:
        masks = {"masks"} if model.task == "instance_segmentation" else set()
        assert set(predicted) == {"boxes", "scores", "classes", "num_detections"} | masks
        kept = predicted["boxes"][predicted["scores"] > 0]
        assert (kept >= 0).all() and (kept <= SIZE[0]).all()  # input pixels, clipped to the image
        raw = model.detect(model(x[:4], training=False))  # normalised boxes of the same detections
        # predict's compiled graph and this eager call round the /64 then x64 differently: float32, 1e-5 px
        np.testing.assert_allclose(predicted["boxes"], raw["detection_boxes"] * SIZE[0], rtol=0, atol=1e-4)

    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded) is cls and loaded.get_config() == model.get_config()
    again = loaded.predict(x[:4], verbose=0)
    for got, want in zip(keras.tree.flatten(again), keras.tree.flatten(predicted)):
        np.testing.assert_array_equal(got, want)
    check_custom_layers_round_trip(model)


def test_a_detector_matches_ground_truth_to_anchors_itself():
    """Raw ground truth in, the RetinaNet loss of the targets encoded on the model's own anchors out."""
    from kcnn.tasks.anchors import encode_targets
    from kcnn.tasks.detection import anchors_for, retinanet_loss

    model = ObjectDetector("resnet20", 2, image_size=(32, 32), head_options={"fpn_width": 8, "head_width": 8,
                                                                              "head_depth": 1})
    images, truth = _shapes_arrays("detection", count=2)
    images = tf.image.resize(images, (32, 32)).numpy()
    outputs = model(images, training=False)
    targets = [encode_targets(truth["boxes"][i], truth["classes"][i], truth["num_boxes"][i], anchors_for(model),
                              image_size=(32, 32)) for i in range(2)]
    expected = retinanet_loss(tf.stack([t[0] for t in targets]), tf.stack([t[1] for t in targets]), outputs)
    np.testing.assert_allclose(model.per_example_loss(truth, outputs), expected, rtol=1e-6)
    assert int(np.sum(np.stack([t[0] for t in targets]) >= 0)) > 0  # some anchors matched a box
