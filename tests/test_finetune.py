"""Fine-tuning: every backbone takes both heads, the freezing policy holds, runs resume after SIGKILL,
``kcnn evaluate`` recomputes a run's metrics, and bad combinations fail with one clear line."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import kcnn
from kcnn.cli import main
from kcnn.data import shapes
from kcnn.tasks import build_task_model, load_task_model
from kcnn.train.checkpoints import latest
from kcnn.train.dense_evaluate import evaluate_task
from kcnn.train.finetune import finetune
from runs import assert_identical_runs
from kcnn.weights import PRESETS, files

SMALL_HEADS = {"segmentation": {"head": "fcn", "head_options": {"width": 8}},
               "detection": {"head": "retinanet",
                             "head_options": {"fpn_width": 8, "head_width": 8, "head_depth": 1}},
               # Mask R-CNN is Faster R-CNN's network and heads plus the mask head: it runs both on every backbone
               "instance_segmentation": {"head": "mask_rcnn", "head_options": {
                   "fpn_width": 8, "representation_size": 16, "mask_width": 8, "sampled_rois": 16,
                   "train_proposals": 20, "test_proposals": 20}}}
TINY_RETINANET = ["--head-option", "fpn_width=16", "--head-option", "head_width=16", "--head-option", "head_depth=1"]


@pytest.mark.parametrize("task", sorted(SMALL_HEADS))
@pytest.mark.parametrize("name", [name for name in kcnn.list_models() if name != "resnet1202"])
def test_every_backbone_takes_every_task(name, task):
    """resnet1202 is resnet110's builder with n=200 (about 4,000 layers; built in test_zoo_harness)."""
    spec = kcnn.model_info(name)
    size = (96, 96) if name in ("alexnet", "zfnet") else (64, 64)
    model = build_task_model(task, name, 3, image_size=size, head=SMALL_HEADS[task]["head"],
                             head_options=SMALL_HEADS[task]["head_options"])
    outputs = model(np.random.default_rng(0).normal(size=(1, *size, spec.input_shape[2])).astype("float32"))
    if task == "instance_segmentation":  # the second stage: proposals, RoIAlign, box and mask heads, NMS
        outputs = model.detect(outputs)
    for value in (outputs.values() if isinstance(outputs, dict) else [outputs]):
        assert value.dtype in ("float32", "int32") and np.isfinite(value).all()


def _write_mask_folder(root, train=16, val=8, size=64):
    """The masks layout, with real content: shapes images and their exact masks."""
    for split, count in (("train", train), ("val", val)):
        images, masks, _, _ = shapes.generate(split, size=size, count=count, seed=5)
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for index, (image, mask) in enumerate(zip(images, masks)):
            Image.fromarray(image).save(root / split / "images" / f"{index:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{index:03d}.png")
    (root / "classes.txt").write_text("\n".join(["background", *shapes.SHAPES_CLASSES]) + "\n")
    return root


@pytest.fixture(scope="module")
def mask_folder(tmp_path_factory):
    return _write_mask_folder(tmp_path_factory.mktemp("masks"))


@pytest.fixture(scope="module")
def resnet20_weights(tmp_path_factory):
    """A kcnn classification weights file for resnet20 (what `kcnn pretrain` or `weights import` write)."""
    model = kcnn.build("resnet20", classes=10)
    for layer in model.layers:  # BN statistics that differ from their initial values, to see them kept
        if isinstance(layer, kcnn.build.__globals__["keras"].layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.25, "float32"))
    path = tmp_path_factory.mktemp("weights") / "resnet20.weights.h5"
    return files.save(model, path, {
        "architecture": "resnet20", "options": {}, "include_top": True, "classes": 10,
        "input_shape": [32, 32, 3], "preprocessing": PRESETS["torch"].to_dict(), "class_names": list("0123456789"),
        "source": {"library": "kcnn"}, "skipped_tensors": []})


def test_freezing_policy_frozen_backbone_then_lower_rate_bn_statistics_kept(mask_folder, resnet20_weights, tmp_path):
    initial = kcnn.build("resnet20", weights=resnet20_weights)
    rows = finetune("resnet20", "segmentation", mask_folder, tmp_path / "run", weights=resnet20_weights,
                    freeze_backbone_epochs=1, epochs=2, overrides={"batch_size": 8}, image_size=(64, 64),
                    precision="fp32", verbose=0, **SMALL_HEADS["segmentation"])
    assert [row["step"] for row in rows] == [2, 4]
    checkpoints = sorted(os.listdir(tmp_path / "run" / "checkpoints"))
    after_first_epoch = load_task_model(tmp_path / "run" / "model.weights.h5")  # architecture, then epoch-1 weights
    after_first_epoch.load_weights(tmp_path / "run" / "checkpoints" / checkpoints[0] / "model.weights.h5")
    final = load_task_model(tmp_path / "run" / "model.weights.h5")
    conv = "conv2_block1_1_conv"
    np.testing.assert_array_equal(after_first_epoch.get_layer(conv).kernel, initial.get_layer(conv).kernel)
    assert not np.array_equal(final.get_layer(conv).kernel, initial.get_layer(conv).kernel)
    assert not np.array_equal(after_first_epoch.get_layer("fcn_score").kernel, final.get_layer("fcn_score").kernel)
    for name in ("conv1_bn", "conv4_block3_2_bn"):  # frozen BN: statistics and scales as loaded
        for kept in ("moving_mean", "moving_variance", "gamma"):
            np.testing.assert_array_equal(getattr(final.get_layer(name), kept), getattr(initial.get_layer(name), kept))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["freeze_bn"] is True and config["backbone_lr_factor"] == 0.1


def _finetune_command(out, dataset, *extra):
    return [sys.executable, "-m", "kcnn.cli", "finetune", "--backbone", "resnet20", "--task", "segmentation",
            "--head", "fcn", "--head-option", "width=8", "--dataset", str(dataset), "--image-size", "64",
            "--epochs", "3", "--set", "batch_size=4", "--precision", "fp32", "--checkpoint-every", "2",
            "--out", str(out), *extra]


def test_sigkill_then_resume_is_bit_identical_with_dropout_and_augmentation(mask_folder, tmp_path):
    # FCN's head has dropout; segmentation training scales, crops and flips at random
    runner = CliRunner()
    result = runner.invoke(main, _finetune_command(tmp_path / "full", mask_folder)[3:])
    assert result.exit_code == 0, result.output
    uninterrupted = json.loads((tmp_path / "full" / "history.json").read_text())

    process = subprocess.Popen(_finetune_command(tmp_path / "killed", mask_folder), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 180
    while time.time() < deadline and not (latest(checkpoint_dir) and "step-000000006" in latest(checkpoint_dir)):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(open(os.path.join(latest(checkpoint_dir), "state.json")).read())["step"]
    assert 6 <= killed_at < 12

    result = runner.invoke(main, _finetune_command(tmp_path / "killed", mask_folder, "--resume")[3:])
    assert result.exit_code == 0, result.output
    assert [row["step"] for row in uninterrupted] == [4, 8, 12]
    assert_identical_runs(tmp_path / "killed", tmp_path / "full")
    assert all(name.startswith("step-") for name in os.listdir(checkpoint_dir))


def test_detection_run_writes_its_outputs_and_evaluate_recomputes_them(tmp_path):
    result = CliRunner().invoke(main, [
        "finetune", "--backbone", "resnet20", "--task", "detection", "--dataset", "shapes", "--image-size", "64",
        "--steps", "6", "--precision", "fp32", "--out", str(tmp_path / "run"), *TINY_RETINANET])
    assert result.exit_code == 0, result.output
    for name in ("metrics.json", "history.json", "history.csv", "curves.png", "predictions.png", "model.weights.h5",
                 "config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert os.listdir(tmp_path / "run" / "tensorboard")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["per_class_AP50"]) == set(shapes.SHAPES_CLASSES)
    again = evaluate_task(tmp_path / "run", "shapes")
    for key in ("mAP", "mAP50", "mAP75", "loss"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
    cli = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--dataset", "shapes", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.output.splitlines()[-1])["mAP50"] == pytest.approx(metrics["mAP50"])


@pytest.mark.parametrize("arguments, message", [
    (["--task", "detection", "--head", "unet"], "unknown detection head 'unet'; accepted: retinanet"),
    (["--task", "segmentation", "--head", "retinanet"], "unknown segmentation head 'retinanet'; accepted: fcn"),
    (["--task", "segmentation", "--option", "output_stride=16", "--backbone", "vgg11"],
     "output_stride is an option of resnet backbones, not of vgg11"),
    (["--task", "segmentation", "--backbone", "resnet19"], "unknown model 'resnet19'"),
    (["--task", "segmentation", "--dataset", "voc/2012"], "segmentation"),
    (["--task", "segmentation", "--weights", "setup.py"], "is not a kcnn classification weights file"),
])
def test_bad_combinations_fail_with_one_line_and_write_nothing(arguments, message, tmp_path):
    base = {"--backbone": "resnet20", "--out": str(tmp_path / "run")}
    for key, value in zip(arguments[::2], arguments[1::2]):
        base[key] = value
    result = CliRunner().invoke(main, ["finetune", *[part for item in base.items() for part in item]])
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_defaults_are_small_data_from_scratch_and_the_paper_s_from_weights(task, mask_folder, resnet20_weights,
                                                                           tmp_path, capsys):
    dataset = mask_folder if task == "segmentation" else "shapes"
    finetune("resnet20", task, dataset, tmp_path / "scratch", steps=1, image_size=(32, 32), precision="fp32")
    scratch = json.loads((tmp_path / "scratch" / "config.json").read_text())
    assert scratch["recipe"]["name"] == "small_data" and scratch["recipe"]["optimizer"] == "adam"
    expected_heads = {"segmentation": ("unet", {"width": 64}),
                      "detection": ("retinanet", {"fpn_width": 64, "head_width": 64, "head_depth": 2,
                                                  "head_norm": "group"})}[task]
    assert (scratch["head"], scratch["head_options"]) == expected_heads
    assert "from scratch (no weights): recipe small_data" in capsys.readouterr().out
    finetune("resnet20", task, dataset, tmp_path / "weights", weights=resnet20_weights, steps=1,
             image_size=(32, 32), precision="fp32", head_options={"width": 8} if task == "segmentation" else None)
    paper = json.loads((tmp_path / "weights" / "config.json").read_text())
    assert paper["recipe"]["name"] == {"segmentation": "deeplabv3", "detection": "retinanet"}[task]
    assert paper["head"] == {"segmentation": "fcn", "detection": "retinanet"}[task]
    assert paper["head_options"] == ({"width": 8} if task == "segmentation" else {})  # the paper's sizes
    assert "backbone from weights: recipe" in capsys.readouterr().out
