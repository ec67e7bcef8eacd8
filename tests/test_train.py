"""The training engine on real data (scikit-learn's digits): learning, recipes, resume after SIGKILL, NaN stop."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import kcnn
from kcnn.train import TrainingStopped, pretrain, recipes
from kcnn.train.checkpoints import latest

LENET = dict(model="lenet5", dataset="digits", recipe="small", precision="fp32", verbose=0)


def test_lenet5_learns_digits(tmp_path):
    rows = pretrain(out=tmp_path / "run", **LENET)
    assert rows[-1]["val_top1"] >= 98.0, rows[-1]
    assert rows[-1]["val_top1"] > rows[0]["val_top1"]
    for name in ("history.json", "history.csv", "curves.png", "model.weights.h5", "config.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert os.listdir(tmp_path / "run" / "tensorboard")
    model = kcnn.build("lenet5", weights=tmp_path / "run" / "model.weights.h5")
    assert model.weights_metadata["class_names"] == [str(d) for d in range(10)]


def _pretrain_command(out, *extra):
    return [sys.executable, "-m", "kcnn.cli", "pretrain", "--model", "lenet5", "--dataset", "digits",
            "--recipe", "small", "--epochs", "3", "--precision", "fp32", "--checkpoint-every", "5",
            "--out", str(out), *extra]


def test_sigkill_then_resume_reaches_the_same_result(tmp_path):
    uninterrupted = pretrain(out=tmp_path / "full", epochs=3, checkpoint_every=5, **LENET)

    process = subprocess.Popen(_pretrain_command(tmp_path / "killed"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (latest(checkpoint_dir) and "step-000000010" in latest(checkpoint_dir)):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(open(os.path.join(latest(checkpoint_dir), "state.json")).read())["step"]
    assert 10 <= killed_at < uninterrupted[-1]["step"]

    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        pretrain(out=tmp_path / "killed", epochs=3, checkpoint_every=5, **LENET)
    resumed = pretrain(out=tmp_path / "killed", epochs=3, checkpoint_every=5, resume=True, **LENET)
    assert [row["step"] for row in resumed] == [row["step"] for row in uninterrupted]
    assert all(name.startswith("step-") for name in os.listdir(checkpoint_dir))  # no partial left behind
    np.testing.assert_allclose([row["val_top1"] for row in resumed], [row["val_top1"] for row in uninterrupted],
                               atol=1.0)
    np.testing.assert_allclose(resumed[-1]["loss"], uninterrupted[-1]["loss"], rtol=0.05)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingStopped, match="non-finite|loss became"):
        pretrain(out=tmp_path / "run", overrides={"lr": 1e6}, checkpoint_every=1, **LENET)
    good = latest(tmp_path / "run" / "checkpoints")
    if good is not None:
        model = kcnn.build("lenet5")
        model.load_weights(os.path.join(good, "model.weights.h5"))
        assert all(np.isfinite(w).all() for w in model.get_weights())


def test_recipe_overrides_are_checked():
    assert recipes.get("resnet_cifar", lr=0.01).lr == 0.01
    with pytest.raises(ValueError, match="unknown recipe field 'learning_rate'; accepted: augment"):
        recipes.get("resnet_cifar", learning_rate=0.01)
    with pytest.raises(ValueError, match="recipe field 'batch_size' must be int"):
        recipes.get("resnet_cifar", batch_size="big")
    with pytest.raises(ValueError, match="unknown recipe 'resnet'.*did you mean"):
        recipes.get("resnet")


def test_paper_schedules():
    cifar = recipes.get("resnet_cifar")
    assert [cifar.learning_rate(s, steps_per_epoch=391) for s in (0, 31999, 32000, 48000)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.001])
    imagenet = recipes.get("resnet_imagenet")
    assert imagenet.total_steps(steps_per_epoch=5005) == 90 * 5005
    assert imagenet.learning_rate(30 * 5005, 5005) == pytest.approx(0.01)
