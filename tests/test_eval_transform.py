"""One evaluation transform per recipe: training's validation, ``kcnn evaluate`` (run directory or weights file)
and the exported SavedModel see the same images of one run and count the same correct ones."""

import json

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from kcnn.cli import main
from kcnn.export import export
from kcnn.tasks import ImageClassifier
from kcnn.train import pretrain, recipes
from kcnn.train.task_data import ClassificationData
from kcnn.weights import Preprocessing, eval_transform_of, read_metadata

MODEL, RECIPE, INPUT_SHAPE = "lenet5", "resnet_imagenet", (32, 32, 1)  # grayscale: channels convert first too
CLASSES = ("bright", "dark", "striped")
SHAPES = {"portrait": (96, 48), "landscape": (48, 96), "square": (64, 64)}


def _image(label, shape, rng):
    """Noise, and the class's evidence in the outer fifth at both ends of the long side: a center crop of an
    image of 2:1 leaves it out, a squash keeps it."""
    pixels = rng.normal(128, 40, (*shape, 3))
    height, width = shape
    ends = [np.s_[:height // 5], np.s_[-(height // 5):]] if height > width else [
        np.s_[:, :width // 5], np.s_[:, -(width // 5):]]
    for end in ends:
        pixels[end] = _evidence(CLASSES[label], pixels[end].shape)
    return tf.io.encode_jpeg(np.clip(pixels, 0, 255).astype(np.uint8), quality=95).numpy()


def _evidence(name, shape):
    if name == "striped":
        return np.indices(shape)[1] % 4 * 80.0
    return np.full(shape, 230.0 if name == "bright" else 25.0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """train: 8 images per class; val: 2 per class and shape (18, in the order the pipeline reads them)."""
    root, rng = tmp_path_factory.mktemp("aspect"), np.random.default_rng(0)
    val_files = []
    for label, name in enumerate(CLASSES):
        for split, count in (("train", 8), ("val", 2)):
            (root / split / name).mkdir(parents=True)
            for index in range(count * (len(SHAPES) if split == "val" else 1)):
                kind = list(SHAPES)[index % len(SHAPES)]
                path = root / split / name / f"{index:02d}_{kind}.jpg"
                path.write_bytes(_image(label, SHAPES[kind], rng))
                if split == "val":
                    val_files.append((path, label))
    return root, val_files


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    rows = pretrain(MODEL, folder[0], out, recipe=RECIPE, overrides={"batch_size": 8, "lr": 0.01}, epochs=3,
                    input_shape=INPUT_SHAPE, precision="fp32", verbose=0)
    return out, rows


def _validation_data(weights, dataset):
    metadata = read_metadata(weights)
    return ClassificationData(dataset, input_shape=metadata["input_shape"], augment=recipes.get(RECIPE).augment,
                              preprocessing=Preprocessing.from_dict(metadata["preprocessing"]))


def test_validation_evaluate_and_serving_agree_on_every_file(folder, run, tmp_path):
    root, val_files = folder
    out, rows = run
    weights = out / "model.weights.h5"
    assert read_metadata(weights)["eval_transform"] == "center_crop"
    labels = np.array([label for _, label in val_files])
    correct = {"history": round(rows[-1]["val_top1"] * len(labels) / 100)}
    for name, source in (("run directory", out), ("weights file", weights)):
        result = CliRunner().invoke(main, ["evaluate", str(source), "--dataset", str(root), "--json"])
        assert result.exit_code == 0, result.output
        evaluated = json.loads(result.output.splitlines()[-1])
        assert evaluated["count"] == len(labels)
        correct[name] = round(evaluated["top1"] * len(labels) / 100)

    loaded = tf.saved_model.load(export(out, tmp_path / "models"))
    served = loaded.signatures["serving_default"](image_bytes=tf.constant([p.read_bytes() for p, _ in val_files]))
    served = served["probabilities"].numpy()
    correct["serving"] = int(np.sum(served.argmax(axis=1) == labels))
    assert len(set(correct.values())) == 1, correct

    metadata = read_metadata(weights)
    model = ImageClassifier(metadata["architecture"], metadata["classes"], input_shape=metadata["input_shape"],
                            backbone_weights=weights)
    images, pipeline_labels = next(iter(_validation_data(weights, root).pipeline(
        "val", training=False, seed=0, batch_size=len(labels))))
    np.testing.assert_array_equal(pipeline_labels, labels)  # the same files in the same order
    np.testing.assert_allclose(served, model.decode(model(images, training=False)), atol=1e-5, rtol=0)


def test_the_transform_is_a_center_crop_not_a_squash(folder, run):
    root, val_files = folder
    out, _ = run
    raw = _validation_data(out / "model.weights.h5", root).raw("val", training=False, seed=0, batch_size=len(val_files))
    images, _ = next(iter(raw))
    index = next(i for i, (path, _) in enumerate(val_files) if "landscape" in path.name)
    pixels = tf.image.rgb_to_grayscale(tf.cast(tf.io.decode_jpeg(val_files[index][0].read_bytes()), tf.float32))
    squashed = tf.image.resize(pixels, INPUT_SHAPE[:2])
    assert np.abs(images[index] - squashed).mean() > 20  # the squash keeps the end bands, the crop leaves them out


def test_the_weights_name_their_transform_and_older_files_fall_back():
    run = {"source": {"library": "kcnn"}}
    assert eval_transform_of({**run, "eval_transform": "center_crop"}) == "center_crop"
    assert eval_transform_of(run) == "resize"  # older kcnn runs were validated on resized images
    assert eval_transform_of({"source": {"library": "torchvision"}}) == "center_crop"  # imported ImageNet weights
    assert eval_transform_of({**run, "task": "segmentation"}) == "resize"
    with pytest.raises(ValueError, match="unknown evaluation transform 'squash'; expected one of center_crop, resize"):
        eval_transform_of({**run, "eval_transform": "squash"})
