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
from kcnn.train.evaluate import evaluate
from runs import assert_identical_runs

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

    again = evaluate(tmp_path / "run", "digits")  # recomputed from the saved file, not the history
    assert again["count"] == 359
    assert again["top1"] == pytest.approx(rows[-1]["val_top1"], abs=1e-6)
    ten_crop = evaluate(tmp_path / "run" / "model.weights.h5", "digits", ten_crop=True)
    assert ten_crop["count"] == 359 and ten_crop["top1"] >= 90.0  # mirrored digits are other symbols


def _pretrain_command(out, *extra):
    return [sys.executable, "-m", "kcnn.cli", "pretrain", "--model", "lenet5", "--dataset", "digits",
            "--recipe", "small", "--epochs", "3", "--precision", "fp32", "--checkpoint-every", "11",
            "--out", str(out), *extra]


def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    # 22 steps an epoch, a checkpoint every 11: epoch ends fall on periodic checkpoints too
    uninterrupted = pretrain(out=tmp_path / "full", epochs=3, checkpoint_every=11, **LENET)

    process = subprocess.Popen(_pretrain_command(tmp_path / "killed"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint_dir = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (latest(checkpoint_dir) and "step-000000033" in latest(checkpoint_dir)):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = json.loads(open(os.path.join(latest(checkpoint_dir), "state.json")).read())["step"]
    assert 33 <= killed_at < uninterrupted[-1]["step"]

    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        pretrain(out=tmp_path / "killed", epochs=3, checkpoint_every=11, **LENET)
    resumed = pretrain(out=tmp_path / "killed", epochs=3, checkpoint_every=11, resume=True, **LENET)
    assert all(name.startswith("step-") for name in os.listdir(checkpoint_dir))  # no partial left behind
    assert_identical_runs(tmp_path / "killed", tmp_path / "full")  # the resumed epoch's row: the whole epoch
    assert len(resumed) == 3
    # a finished run resumed again returns its whole history (the epoch-end state of step 66 was kept)
    assert pretrain(out=tmp_path / "full", epochs=3, checkpoint_every=11, resume=True, **LENET) == uninterrupted


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    # 3 sane steps, then a rate that blows the weights up
    blow_up = {"unit": "steps", "length": 20, "boundaries": (3,), "factor": 1e8}
    with pytest.raises(TrainingStopped, match="non-finite|loss became"):
        pretrain(out=tmp_path / "run", overrides=blow_up, checkpoint_every=1, **LENET)
    good = latest(tmp_path / "run" / "checkpoints")
    assert good is not None and 3 <= int(os.path.basename(good).split("-")[1]) < 20
    model = kcnn.build("lenet5")
    model.load_weights(os.path.join(good, "model.weights.h5"))
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_mixed_bfloat16_computes_in_bfloat16_with_float32_logits(tmp_path):
    rows = pretrain(out=tmp_path / "run", steps=20, **{**LENET, "precision": "mixed_bfloat16"})
    assert rows[-1]["step"] == 20 and np.isfinite(rows[-1]["loss"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["precision"] == "mixed_bfloat16"
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = kcnn.build("lenet5")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("c1").compute_dtype == "bfloat16"
    assert model.get_layer("predictions").compute_dtype == "float32"


def test_degradation_experiment_trains_both_twins_and_draws_the_figure(tmp_path):
    from kcnn.train.degradation import degradation

    histories = degradation("digits", tmp_path, depths=(20,), steps=4, overrides={"batch_size": 32},
                            precision="fp32")
    assert sorted(histories) == ["plain20", "resnet20"]
    assert all(rows[-1]["step"] == 4 for rows in histories.values())
    summary = json.loads((tmp_path / "degradation.json").read_text())
    assert set(summary) == {"plain20", "resnet20"}
    assert (tmp_path / "degradation.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="depths must be among 20, 32, 44, 56, 110"):
        degradation("digits", tmp_path, depths=(21,))


def test_mixed_float16_scales_the_loss(tmp_path):
    import keras
    import tensorflow as tf

    from kcnn.train.engine import Loop, RunSettings
    from kcnn.train.task_data import ClassificationData
    from kcnn.weights import default_preprocessing

    recipe = recipes.get("small").in_steps(10)
    settings = RunSettings(task="classification", backbone="lenet5", dataset="digits", out=str(tmp_path),
                           recipe=recipe, input_shape=(32, 32, 1))
    digits = ClassificationData("digits", input_shape=(32, 32, 1), preprocessing=default_preprocessing(1))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        loop = Loop(settings, recipe, tf.distribute.get_strategy(), digits, steps_per_epoch=10)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert [type(group.optimizer) for group in loop.groups] == [keras.optimizers.LossScaleOptimizer]
    rows = pretrain(out=tmp_path / "run", steps=10, **{**LENET, "precision": "mixed_float16"})
    assert rows[-1]["step"] == 10 and np.isfinite(rows[-1]["loss"])


def test_xla_compiled_steps_train_the_same_network(tmp_path):
    plain = pretrain(out=tmp_path / "plain", steps=6, **LENET)
    compiled = pretrain(out=tmp_path / "xla", steps=6, xla=True, **LENET)
    np.testing.assert_allclose(compiled[-1]["loss"], plain[-1]["loss"], rtol=1e-3)
