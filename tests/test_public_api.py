"""The public API as keras.applications users expect it: normalisation inside the model, preprocess_input and
decode_predictions checked against keras.applications' own functions, kcnn.load of every kind of file, and
training, tuning and export that leave the caller's session as they found it."""

import os
import random

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.applications import imagenet_utils

import kcnn
from kcnn.weights import PRESETS, files
from tests.helpers import randomise

# keras.applications' names for kcnn's presets (imagenet_utils.preprocess_input's modes)
KERAS_MODES = {"caffe": "caffe", "torch": "torch", "inception": "tf"}
SIZE = (32, 32, 3)


def _pixels(count=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, *SIZE)).astype("float32")


def _weights_file(tmp_path, preset):
    """A randomised 10-class resnet18 in a kcnn weights file whose weights expect ``preset``."""
    model = kcnn.build("resnet18", classes=10, input_shape=SIZE)
    randomise(model, np.random.default_rng(1))
    path = tmp_path / f"resnet18-{preset}.weights.h5"
    files.save(model, path, {"architecture": "resnet18", "options": {}, "include_top": True, "classes": 10,
                             "input_shape": list(SIZE), "preprocessing": PRESETS[preset].to_dict(),
                             "class_names": [f"c{i}" for i in range(10)], "source": {"library": "kcnn"},
                             "skipped_tensors": []})
    return path


@pytest.mark.parametrize("preset", sorted(KERAS_MODES))
def test_preprocess_input_is_keras_applications_for_each_preset(preset, tmp_path):
    x = _pixels()
    expected = imagenet_utils.preprocess_input(x.copy(), mode=KERAS_MODES[preset])
    path = _weights_file(tmp_path, preset)
    for source in (kcnn.build("resnet18", weights=path), path):  # a model, its weights file
        # kcnn multiplies by 1/255 where keras.applications divides by 255: an ulp apart (7e-7 measured)
        np.testing.assert_allclose(kcnn.preprocess_input(x, source), expected, rtol=1e-6, atol=1e-5)


def test_preprocess_input_of_a_name_is_its_imagenet_file_s_and_a_model_without_one_is_refused():
    x = _pixels()
    # "resnet50": torchvision's file (the best published), trained on torch's mean and std (an ulp apart, as above)
    np.testing.assert_allclose(kcnn.preprocess_input(x, "resnet50"),
                               imagenet_utils.preprocess_input(x.copy(), mode="torch"), rtol=1e-6, atol=1e-5)
    inside = kcnn.build("lenet5", include_preprocessing=True)
    assert kcnn.preprocess_input(x, inside) is not x
    np.testing.assert_array_equal(kcnn.preprocess_input(x, inside), x)  # it normalises inside, as EfficientNet
    with pytest.raises(ValueError, match="carries no input normalisation.*include_preprocessing=True"):
        kcnn.preprocess_input(x, keras.models.clone_model(kcnn.build("lenet5")))


@pytest.mark.parametrize("preset", ["caffe", "torch"])
def test_a_model_with_preprocessing_inside_takes_raw_pixels_after_save_load_and_clone(preset, tmp_path):
    path, x = _weights_file(tmp_path, preset), _pixels()
    # the reference: the network without it, on keras.applications' normalisation of the same pixels
    logits = {"classifier_activation": None}
    expected = kcnn.build("resnet18", weights=path, **logits).predict(
        imagenet_utils.preprocess_input(x.copy(), mode=KERAS_MODES[preset]), verbose=0)
    model = kcnn.build("resnet18", weights=path, include_preprocessing=True, **logits)
    raw = model.predict(x, verbose=0)
    # keras.applications divides by 255 where kcnn multiplies by 1/255: inputs differ by an ulp (7e-7), which
    # the random network carries to 1.2e-6 of the logits' scale (measured); the bound leaves 8x
    assert np.abs(raw - expected).max() <= 1e-5 * np.abs(expected).max()
    model.save(tmp_path / "model.keras")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    for copy in (keras.saving.load_model(tmp_path / "model.keras"), kcnn.load(tmp_path / "model.keras"), clone):
        np.testing.assert_array_equal(copy.predict(x, verbose=0), raw)
        assert copy.get_layer("preprocessing").preset == preset
    np.testing.assert_array_equal(kcnn.load(path, include_preprocessing=True).predict(x, verbose=0),
                                  kcnn.build("resnet18", weights=path, include_preprocessing=True).predict(x, verbose=0))


def test_decode_predictions_orders_by_score_with_imagenet_s_names():
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet(np.ones(1000), size=3)
    probabilities[2, [5, 7]] = 0.9  # a tie: the lower index first
    decoded = kcnn.decode_predictions(probabilities, top=4)
    assert [len(row) for row in decoded] == [4, 4, 4]
    for row, scores in zip(decoded, probabilities):
        assert [score for _, _, score in row] == sorted(scores, reverse=True)[:4]
        assert all(scores[index] == score for index, _, score in row)
    assert [index for index, _, _ in decoded[2][:2]] == [5, 7]
    one_hot = kcnn.decode_predictions(np.eye(1000)[[0, 1, 999]], top=1)
    assert [row[0][1] for row in one_hot] == ["tench", "goldfish", "toilet tissue"]  # ImageNet's class order


def test_decode_predictions_uses_a_model_s_class_names_and_refuses_what_does_not_fit(tmp_path):
    model = kcnn.build("resnet18", weights=_weights_file(tmp_path, "torch"))
    decoded = kcnn.decode_predictions(np.eye(10)[[3]], top=2, class_names=model)
    assert decoded[0][0] == (3, "c3", 1.0)
    with pytest.raises(ValueError, match="need class_names"):
        kcnn.decode_predictions(np.eye(10)[[3]])
    with pytest.raises(ValueError, match="2 class names for scores of 10 classes"):
        kcnn.decode_predictions(np.eye(10)[[3]], class_names=["a", "b"])
    with pytest.raises(ValueError, match="top must be a positive integer"):
        kcnn.decode_predictions(np.eye(10)[[3]], top=0, class_names=model)


def test_load_refuses_what_it_cannot_load_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not a model")
    for path, message in ((tmp_path / "empty", "holds neither model.weights.h5 nor a SavedModel"),
                          (tmp_path / "notes.txt", "holds no kcnn metadata")):
        with pytest.raises(ValueError, match=message) as error:
            kcnn.load(path)
        assert "\n" not in str(error.value)


def _classification_folder(root):
    """Two colours of 4 train and 2 val images each, and one unreadable val file (skipped once per validation)."""
    for split, count in (("train", 4), ("val", 2)):
        for name, rgb in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
            for index in range(count):
                path = root / split / name / f"{index}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.clip(np.add(rgb, np.random.default_rng(index).integers(-20, 20, (32, 32, 3))), 0, 255)
                path.write_bytes(tf.io.encode_png(pixels.astype("uint8")).numpy())
    (root / "val" / "blue" / "garbage.png").write_bytes(b"not an image at all")
    return root


def _draws():
    """The next value of each of the caller's random generators, and the next automatic layer name."""
    return (random.random(), float(np.random.rand()), float(tf.random.uniform(())),
            float(keras.random.uniform(())), keras.layers.Dense(1).name)


def _seed_everything():
    keras.utils.set_random_seed(7)  # Python, NumPy, TensorFlow, Keras's global generator


def test_training_tuning_and_export_leave_the_caller_s_session_as_it_was(tmp_path):
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")  # the caller's choice, not what the runs use
    try:
        user = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="users_dense")])
        inputs = np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)
        before = (user.predict(inputs, verbose=0), [w.copy() for w in user.get_weights()])
        _seed_everything()
        _draws()
        expected = _draws()  # what the caller's generators give next when nothing runs in between
        _seed_everything()
        last_name = _draws()[-1]
        folder = _classification_folder(tmp_path / "colours")
        space = tmp_path / "lenet.yaml"
        space.write_text("model: lenet5\ninput_shape: [32, 32, 1]\nhyperparameters:\n"
                         "  lr: {min: 0.01, max: 0.1, sampling: log, default: 0.05}\nrecipe: {lr: $lr}\n")
        histories = []
        for attempt in range(2):  # each function twice, in one process
            runs = tmp_path / f"attempt{attempt}"
            histories.append(kcnn.pretrain("lenet5", folder, runs / "lenet", epochs=1, verbose=0,
                                           overrides={"batch_size": 4}))
            kcnn.finetune("resnet20", "segmentation", "shapes", runs / "fcn", steps=1, image_size=(32, 32),
                          head_options={"width": 8}, verbose=0)
            kcnn.export(runs / "lenet", tmp_path / "models" / "lenet")
            kcnn.tune(space, "digits", runs / "search", tuner="random", max_trials=1, max_epochs=1,
                      precision="fp32")
        after = _draws()
        assert after[:-1] == expected[:-1]
        prefix, number = last_name.rsplit("_", 1)
        assert after[-1] == f"{prefix}_{int(number) + 1}"  # the caller's layer-name counter, not reset
        assert keras.config.dtype_policy().name == "mixed_float16"
        np.testing.assert_array_equal(user.predict(inputs, verbose=0), before[0])
        for weight, saved in zip(user.get_weights(), before[1]):
            np.testing.assert_array_equal(weight, saved)
        # each run reports its own skips (the val split's unreadable file, once), not the process's total
        assert [rows[-1]["skipped_samples"] for rows in histories] == [1, 1]
        strip = [[{k: v for k, v in row.items() if k != "images_per_second"} for row in rows] for rows in histories]
        assert strip[0] == strip[1]  # the caller's seeds do not reach the runs either
        assert sorted(os.listdir(tmp_path / "models" / "lenet")) == ["1", "2"]
    finally:
        keras.config.set_dtype_policy(previous_policy)
