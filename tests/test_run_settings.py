"""Settings that cannot drift: resolved hardware settings in config.json, a recipe's schedule under a new length."""

import json

import pytest
from click.testing import CliRunner

from kcnn.cli import main
from kcnn.train import pretrain
from kcnn.train.hardware import resolve_precision

LENET = dict(model="lenet5", dataset="digits", recipe="small", verbose=0)


def test_config_records_resolved_settings_and_a_resume_that_resolves_otherwise_is_refused(tmp_path):
    run = tmp_path / "run"
    pretrain(out=run, steps=3, precision="fp32", **LENET)
    config = json.loads((run / "config.json").read_text())
    assert (config["precision"], config["strategy"], config["replicas"]) == ("float32", "default", 1)

    other = "mixed_bfloat16"  # what `auto` gives on a CPU with AVX512-BF16; named here so any CPU refuses
    with pytest.raises(ValueError, match=r"precision float32 -> mixed_bfloat16.*--force-resume"):
        pretrain(out=run, steps=3, precision=other, resume=True, **LENET)
    if resolve_precision("auto") != "float32":  # this machine's `auto` drifts from the run's float32
        with pytest.raises(ValueError, match="precision float32 ->"):
            pretrain(out=run, steps=3, precision="auto", resume=True, **LENET)

    rows = pretrain(out=run, steps=3, precision=other, resume=True, force_resume=True, **LENET)
    assert rows[-1]["step"] == 3 and json.loads((run / "config.json").read_text())["precision"] == other
    with pytest.raises(ValueError, match=r"other settings than the run's \(steps\)"):
        pretrain(out=run, steps=6, precision=other, resume=True, force_resume=True, **LENET)


def test_a_new_length_scales_the_schedule_and_the_run_says_so_once(tmp_path):
    # resnet_cifar: lr 0.1, x0.1 at 32k and 48k of 64k steps; 1 epoch of digits at batch 64 = 22 steps
    result = CliRunner().invoke(main, ["pretrain", "--model", "lenet5", "--dataset", "digits", "--recipe",
                                       "resnet_cifar", "--epochs", "1", "--set", "batch_size=64", "--precision",
                                       "fp32", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert result.output.count("recipe resnet_cifar: 64000 steps -> 22 steps") == 1
    assert "lr x0.1 at steps 32000, 48000 -> 11, 16" in result.output
    last = json.loads((tmp_path / "run" / "history.json").read_text())[-1]
    assert last["step"] == 22 and last["lr"] == pytest.approx(0.1 * 0.1 * 0.1)
