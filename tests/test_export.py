"""Export: TF Serving's layout, written atomically; SavedModels that answer like the Keras models on the
evaluation pipeline's images in a fresh process; signatures, warmup records, REST-style requests, bad inputs;
models.config; kcnn predict."""

import base64
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from google.protobuf import text_format
from PIL import Image
from tensorflow_serving.config import model_server_config_pb2

import kcnn
from kcnn.cli import main
from kcnn.data import augment, shapes
from kcnn.export import export, models_config, warmup
from kcnn.tasks import build_task_model
from kcnn.tasks.masks import paste_masks
from kcnn.train.task_data import ClassificationData
from kcnn.weights import PRESETS, files

SIZE = (64, 64)
FRESH_PROCESS = """
import sys, numpy as np, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
data = [open(path, "rb").read() for path in sys.argv[3:]]
files = loaded.signatures["serving_default"](image_bytes=tf.constant(data))
pixels = np.stack([np.asarray(tf.io.decode_image(d, channels=3)) for d in data[:1]])
images = loaded.signatures["serving_images"](images=tf.constant(pixels))
np.savez(sys.argv[2], **{"files_" + k: v.numpy() for k, v in files.items()},
         **{"images_" + k: v.numpy() for k, v in images.items()})
"""


def _metadata(task, architecture, classes, names, **extra):
    return {"task": task, "architecture": architecture, "options": {}, "include_top": task == "classification",
            "classes": classes, "input_shape": [*SIZE, 3], "preprocessing": PRESETS["torch"].to_dict(),
            "class_names": names, "source": {"library": "kcnn"}, "skipped_tensors": [], **extra}


def _save(model, path, metadata):
    path.parent.mkdir(parents=True, exist_ok=True)
    files.save(model, path / "model.weights.h5" if path.suffix != ".h5" else path, metadata)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A classifier weights file and segmentation / detection run directories (random weights)."""
    root = tmp_path_factory.mktemp("sources")
    keras_seed = 0
    kcnn.build.__globals__["keras"].utils.set_random_seed(keras_seed)
    classifier = kcnn.build("resnet20", classes=4, input_shape=(*SIZE, 3), classifier_activation=None)
    segmenter = build_task_model("segmentation", "resnet20", 4, image_size=SIZE, head="unet",
                                 head_options={"width": 16})
    options = {"fpn_width": 16, "head_width": 16, "head_depth": 1}
    detector = build_task_model("detection", "resnet20", 3, image_size=SIZE, head_options=options)
    output = detector.get_layer("class_subnet_output")
    output.bias.assign(np.full(output.bias.shape, -1.0, "float32"))  # scores ~0.27: NMS has work to do
    rcnn_options = {"fpn_width": 16, "representation_size": 32, "mask_width": 16, "sampled_rois": 64}
    instances = build_task_model("instance_segmentation", "resnet20", 3, image_size=SIZE, head_options=rcnn_options)
    classes = ["background", *shapes.SHAPES_CLASSES]
    (root / "segmentation").mkdir()
    (root / "segmentation" / "metrics.json").write_text(json.dumps({"mean_iou": 0.5}))
    return {
        "classification": (classifier, _save(classifier, root / "classifier.weights.h5", _metadata(
            "classification", "resnet20", 4, ["a", "b", "c", "d"], eval_transform="center_crop"))),
        "segmentation": (segmenter, _save(segmenter, root / "segmentation", _metadata(
            "segmentation", "resnet20", 4, classes, head="unet", head_options={"width": 16}))),
        "detection": (detector, _save(detector, root / "detection", _metadata(
            "detection", "resnet20", 3, list(shapes.SHAPES_CLASSES), head="retinanet", head_options=options))),
        "instance_segmentation": (instances, _save(instances, root / "instances", _metadata(
            "instance_segmentation", "resnet20", 3, list(shapes.SHAPES_CLASSES), head="mask_rcnn",
            head_options=rcnn_options))),
    }


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Two PNGs of other sizes than the network's (one not square) in a classification folder's val/x/."""
    root = tmp_path_factory.mktemp("images")
    images, _, _, _ = shapes.generate("val", size=96, count=2, seed=3)
    (root / "train" / "x").mkdir(parents=True)
    (root / "val" / "x").mkdir(parents=True)
    paths = [root / "val" / "x" / "a.png", root / "val" / "x" / "b.png"]
    Image.fromarray(images[0]).save(paths[0])
    Image.fromarray(images[1][:60, :90]).save(paths[1])
    return paths


@pytest.fixture(scope="module")
def exported(sources, tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    return base, {task: export(source, base / task) for task, (_, source) in sources.items()}


def _classifier_inputs(image_files):
    """The classification evaluation pipeline's normalised images of ``image_files``, in their order."""
    folder = image_files[0].parents[2]
    data = ClassificationData(folder, input_shape=(*SIZE, 3), preprocessing=PRESETS["torch"],
                              eval_transform="center_crop")
    images, _ = next(iter(data.pipeline("val", training=False, seed=0, batch_size=len(image_files))))
    return images


def _keras_answer(task, model, pixels, classifier_input):
    """The Keras model's answer on what the evaluation pipelines give it (segmenters and detectors: a resize)."""
    if task == "classification":
        return {"probabilities": tf.nn.softmax(model(classifier_input[None], training=False)).numpy()}
    resized = augment.eval_transform(tf.cast(pixels, tf.float32), SIZE, "resize", channels=3)
    outputs = model(PRESETS["torch"](resized[None]), training=False)
    if task == "segmentation":
        logits = tf.image.resize(outputs, pixels.shape[:2])
        return {"segmentation_mask": tf.argmax(logits, -1).numpy(), "probabilities": tf.nn.softmax(outputs).numpy()}
    found = {k: v.numpy() for k, v in model.detect(outputs).items()}
    if "detection_masks" in found:  # pasted at the image's own size, as the signature does
        height, width = pixels.shape[:2]
        boxes = found["detection_boxes"] * np.array([height, width, height, width], "float32")
        found["detection_masks"] = (paste_masks(found["detection_masks"], boxes, (height, width)).numpy() >= 0.5)
    return found


def test_layout_is_tf_serving_s_and_nothing_half_written_is_left(exported, sources):
    base, versions = exported
    for task, version in versions.items():
        assert version == str(base / task / "1")
        assert sorted(os.listdir(base / task)) == ["1"]  # no .partial-* directory
        for name in ("saved_model.pb", "variables", "assets/labels.txt", "assets.extra/tf_serving_warmup_requests",
                     "assets.extra/model_card.json"):
            assert os.path.exists(os.path.join(version, name)), (task, name)
    labels = (base / "segmentation" / "1" / "assets" / "labels.txt").read_text().splitlines()
    assert labels == ["background", "circle", "square", "triangle"]
    card = json.loads((base / "segmentation" / "1" / "assets.extra" / "model_card.json").read_text())
    assert card["metrics"] == {"mean_iou": 0.5} and card["architecture"] == "resnet20" and card["head"] == "unet"
    assert card["params"] == kcnn.profile(sources["segmentation"][0]).params > 0
    assert card["signatures"]["serving_default"]["inputs"] == {"image_bytes": {"dtype": "string", "shape": [None]}}


@pytest.mark.parametrize("task", ["classification", "segmentation", "detection", "instance_segmentation"])
def test_fresh_process_answers_like_the_keras_model(task, exported, sources, image_files, tmp_path):
    _, versions = exported
    result = tmp_path / "answer.npz"
    subprocess.run([sys.executable, "-c", FRESH_PROCESS, versions[task], str(result), *map(str, image_files)],
                   check=True, capture_output=True)
    answer = np.load(result, allow_pickle=True)  # labels are strings
    model = sources[task][0]
    classifier_inputs = _classifier_inputs(image_files)
    for index, path in enumerate(image_files):
        pixels = np.asarray(Image.open(path))
        expected = _keras_answer(task, model, pixels, classifier_inputs[index])
        if task == "classification":
            np.testing.assert_allclose(answer["files_probabilities"][index], expected["probabilities"][0], atol=1e-4)
            assert answer["files_classes"][index][0] == expected["probabilities"][0].argmax()
            assert answer["files_labels"][index][0].decode() == "abcd"[expected["probabilities"][0].argmax()]
        elif task == "segmentation":
            height, width = pixels.shape[:2]
            np.testing.assert_array_equal(answer["files_image_size"][index], [height, width])
            np.testing.assert_array_equal(answer["files_segmentation_mask"][index][:height, :width],
                                          expected["segmentation_mask"][0])
            assert (answer["files_segmentation_mask"][index][height:] == 255).all()  # padding of the batch
            np.testing.assert_allclose(answer["files_probabilities"][index], expected["probabilities"][0], atol=1e-4)
        else:
            count = int(expected["num_detections"][0])
            assert count > 1 and answer["files_num_detections"][index] == count
            np.testing.assert_allclose(answer["files_detection_boxes"][index][:count],
                                       expected["detection_boxes"][0][:count], atol=1e-4)
            np.testing.assert_allclose(answer["files_detection_scores"][index][:count],
                                       expected["detection_scores"][0][:count], atol=1e-4)
            np.testing.assert_array_equal(answer["files_detection_classes"][index][:count],
                                          expected["detection_classes"][0][:count])
            if task == "instance_segmentation":
                height, width = pixels.shape[:2]
                served = answer["files_detection_masks"][index][:count]
                assert served.shape[1:] == (max(p.size[1] for p in map(Image.open, image_files)),
                                            max(p.size[0] for p in map(Image.open, image_files)))
                assert not served[:, height:].any() and not served[:, :, width:].any()  # the batch's padding
                # the graph's and this eager call's boxes may differ by 1e-4 px (above): a mask border pixel may flip
                differing = served[:, :height, :width] != expected["detection_masks"][0][:count]
                assert differing.mean() < 1e-3 and expected["detection_masks"][0][:count].any()
    for key in answer.files:  # the uint8 signature agrees with the bytes signature on the same image
        value, from_files = answer[key][0], answer["files_" + key[len("images_"):]][0] if key.startswith(
            "images_") else None
        if from_files is not None and value.dtype.kind in "fiu":
            np.testing.assert_allclose(value, from_files[tuple(slice(0, n) for n in value.shape)], atol=1e-4)


def test_saved_model_cli_lists_the_documented_signatures(exported):
    _, versions = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", versions["detection"], "--all"], check=True,
                           capture_output=True, text=True).stdout
    default = shown[shown.index("signature_def['serving_default']"):shown.index("signature_def['serving_images']")]
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in default
    for name, dtype in (("detection_boxes", "DT_FLOAT"), ("detection_scores", "DT_FLOAT"),
                        ("detection_classes", "DT_FLOAT"), ("num_detections", "DT_INT32")):
        assert f"outputs['{name}'] tensor_info:\n        dtype: {dtype}" in default
    images = shown[shown.index("signature_def['serving_images']"):]
    assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, -1, -1, 3)" in images


def test_warmup_records_parse_and_run_against_the_signature(exported):
    _, versions = exported
    logs = warmup.read(os.path.join(versions["classification"], "assets.extra", warmup.WARMUP_FILE))
    assert len(logs) == 2
    loaded = tf.saved_model.load(versions["classification"])
    for count, log in enumerate(logs, start=1):
        request = log.predict_log.request
        assert request.model_spec.name == "classification"
        assert request.model_spec.signature_name == "serving_default"
        images = tf.make_ndarray(request.inputs["image_bytes"])
        outputs = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
        assert outputs["probabilities"].shape == (count, 4)


def _rest_instances(body):
    """TF Serving's REST row format for a single-input signature: each instance is that input's value,
    a {"b64": ...} object being base64-decoded bytes (tensorflow_serving/util/json_tensor.cc)."""
    return [base64.b64decode(instance["b64"]) for instance in json.loads(body)["instances"]]


def test_a_rest_request_body_gets_the_same_answer_as_the_bytes(exported, image_files):
    _, versions = exported
    data = [path.read_bytes() for path in image_files]
    body = json.dumps({"instances": [{"b64": base64.b64encode(d).decode()} for d in data]})
    loaded = tf.saved_model.load(versions["classification"])
    from_rest = loaded.signatures["serving_default"](image_bytes=tf.constant(_rest_instances(body)))
    direct = loaded.signatures["serving_default"](image_bytes=tf.constant(data))
    np.testing.assert_array_equal(from_rest["probabilities"], direct["probabilities"])


def test_bad_inputs_get_a_clear_error_from_the_signature(exported):
    _, versions = exported
    loaded = tf.saved_model.load(versions["segmentation"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="neither a JPEG nor a PNG"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([b"GIF89a not an image we take"]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        loaded.signatures["serving_default"](image_bytes=tf.constant([], dtype=tf.string))
    with pytest.raises(tf.errors.InvalidArgumentError, match="empty batch"):
        loaded.signatures["serving_images"](images=tf.zeros([0, 8, 8, 3], tf.uint8))


def test_versions_are_never_overwritten_without_force_and_failures_leave_nothing(sources, tmp_path, monkeypatch):
    source = sources["classification"][1]
    assert export(source, tmp_path / "m").endswith(os.sep + "1")
    assert export(source, tmp_path / "m").endswith(os.sep + "2")
    with pytest.raises(ValueError, match="already exists; pass --force"):
        export(source, tmp_path / "m", version=1)
    before = os.path.getmtime(tmp_path / "m" / "1" / "saved_model.pb")
    export(source, tmp_path / "m", version=1, force=True)
    assert os.path.getmtime(tmp_path / "m" / "1" / "saved_model.pb") >= before

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(warmup, "write", broken)
    with pytest.raises(OSError, match="disk full"):
        export(source, tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]  # no version 3, no partial directory


def test_models_config_is_a_valid_model_server_config(exported):
    base, _ = exported
    path = models_config(base)
    config = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
    assert [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config] == [
        (task, f"/models/{task}", "tensorflow")
        for task in ("classification", "detection", "instance_segmentation", "segmentation")]


def test_cli_export_and_predict(sources, image_files, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(sources["detection"][1]), "--out", str(tmp_path / "det")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["predict", str(tmp_path / "det"), *map(str, image_files), "--json"])
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.output.splitlines()[-1])
    assert len(outputs["num_detections"]) == 2 and set(outputs["detection_labels"][0]) <= {"circle", "square",
                                                                                           "triangle", ""}
    result = runner.invoke(main, ["predict", str(tmp_path / "det"), str(image_files[0])])
    assert result.exit_code == 0 and result.output.strip().startswith("a.png: ")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    result = runner.invoke(main, ["predict", str(tmp_path / "det"), str(bad)])
    assert result.exit_code == 1 and "neither a JPEG nor a PNG" in result.output
    result = runner.invoke(main, ["export", str(image_files[0]), "--out", str(tmp_path / "x")])
    assert result.exit_code == 1 and "holds no kcnn metadata" in result.output
    assert not (tmp_path / "x").exists()


def test_predict_prints_each_instance_and_draws_them(exported, image_files, tmp_path):
    _, versions = exported
    runner = CliRunner()
    result = runner.invoke(main, ["predict", versions["instance_segmentation"], *map(str, image_files),
                                  "--draw", str(tmp_path / "drawn")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("a.png: ") and " px)" in lines[0]  # each instance: label, score, mask area
    drawn = sorted(os.listdir(tmp_path / "drawn"))
    assert drawn == ["a.png", "b.png"] and all(f"drew {tmp_path / 'drawn' / name}" in result.output for name in drawn)
    assert Image.open(tmp_path / "drawn" / "a.png").size[0] > 100
    result = runner.invoke(main, ["predict", versions["classification"], str(image_files[0]), "--draw",
                                  str(tmp_path / "none")])
    assert result.exit_code == 1 and "not a detector" in result.output
