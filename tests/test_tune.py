"""kcnn tune: spaces as data (the zfnet space holds AlexNet and ZFNet exactly), budgets counted before
training, a Hyperband search on real digits that beats the untuned default, resume, chief + 2 workers."""

import json
import os
import socket
import subprocess
import sys

import pytest
from click.testing import CliRunner

import kcnn
from kcnn.cli import main
from kcnn.export import export
from kcnn.train import pretrain
from kcnn.tune.search import tune
from kcnn.tune.space import load

LENET_SPACE = """
model: lenet5
input_shape: [32, 32, 1]
hyperparameters:
  connection_table: {values: [true, false]}
  activation: {values: [tanh, relu]}
  lr: {min: 0.01, max: 0.1, sampling: log, default: 0.05}
  batch_size: {values: [64, 32]}
options: {connection_table: $connection_table, activation: $activation}
recipe: {lr: $lr, batch_size: $batch_size}
"""


@pytest.fixture()
def lenet_space(tmp_path):
    path = tmp_path / "lenet.yaml"
    path.write_text(LENET_SPACE)
    return path


def _counts(name, **options):
    counted = kcnn.profile(name, input_shape=(224, 224, 3), **options)
    return counted.params, counted.macs


def test_zfnet_space_default_is_alexnet_and_one_point_is_zfnet():
    space = load("zfnet")
    name, options, recipe = space.resolve(space.defaults())
    assert _counts(name, **options) == _counts("alexnet")
    assert recipe == {"lr": 0.01, "weight_decay": 0.0005, "batch_size": 128}  # the AlexNet paper's recipe
    zfnet = {**space.defaults(), "variant": "zfnet", "conv1_kernel": 7, "conv1_stride": 2}
    name, options, _ = space.resolve(zfnet)
    assert _counts(name, **options) == _counts("zfnet")
    lecture = {**zfnet, "conv3": 512, "conv4": 1024, "conv5": 512}  # the lecture's wider ZFNet
    assert kcnn.profile(space.resolve(lecture)[0], input_shape=(224, 224, 3),
                        **space.resolve(lecture)[1]).params > _counts("zfnet")[0]


@pytest.mark.parametrize("text, message", [
    ("model: alexnet\nhyperparameters: {}\nlayers: 3\n", "unknown key 'layers'"),
    ("hyperparameters: {}\n", "needs 'model' and 'hyperparameters'"),
    ("model: alexnet\nhyperparameters: {lr: {low: 1}}\n", "hyperparameter 'lr' must be"),
    ("model: alexnet\nhyperparameters: {}\noptions: {dropout: $rate}\n", "uses $rate"),
])
def test_bad_space_files_name_what_is_wrong(text, message, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("$", r"\$")):
        load(path)


MEMORY_SCRIPT = """
import json, re, sys
from kcnn.tune import search
rss, on_trial_end = [], search.ZooTuner.on_trial_end
def record(self, trial):
    on_trial_end(self, trial)
    rss.append(int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024)
search.ZooTuner.on_trial_end = record
search.tune(sys.argv[1], "digits", sys.argv[2], tuner="random", max_trials=6, max_epochs=1, precision="fp32")
print(json.dumps(rss))
"""


def test_the_tuner_s_memory_stays_flat_across_trials(lenet_space, tmp_path):
    """In a process of its own (a test worker's RSS moves with everything else it ran): in-process training
    grew ~6 MiB a trial, 30 MiB over these 5; trials in subprocesses leave the tuner flat."""
    finished = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(lenet_space), str(tmp_path / "s")],
                              capture_output=True, text=True, check=True)
    rss = json.loads(finished.stdout.strip().splitlines()[-1])
    assert len(rss) == 6 and rss[-1] - rss[0] < 10, rss


def test_out_of_budget_points_are_skipped_not_failed_and_the_best_run_exports(lenet_space, tmp_path):
    with_table = kcnn.profile("lenet5", connection_table=True).params
    assert kcnn.profile("lenet5", connection_table=False).params > with_table
    rows = tune(lenet_space, "digits", tmp_path / "search", tuner="random", max_trials=5, max_epochs=1,
                max_params=with_table, precision="fp32")
    assert len(rows) == 5 and all(row["status"] == "COMPLETED" and row["score"] > 0 for row in rows)
    assert all(row["connection_table"] is True and row["params"] <= with_table for row in rows)
    skipped = json.loads((tmp_path / "search" / "skipped.json").read_text())
    assert skipped and all(point["values"]["connection_table"] is False for point in skipped)
    for name in ("trials.csv", "trials.md", "pareto.png", "best/model.weights.h5"):
        assert (tmp_path / "search" / name).is_file(), name
    assert "| **" in (tmp_path / "search" / "trials.md").read_text()  # the best trial is marked
    assert export(tmp_path / "search" / "best", tmp_path / "models" / "lenet").endswith("1")


def test_hyperband_on_digits_beats_the_untuned_default(tmp_path):
    settings = dict(input_shape=(32, 32, 3), precision="fp32")
    rows = tune("resnet", "digits", tmp_path / "search", tuner="hyperband", max_epochs=3, max_params=300_000,
                **settings)
    space = load("resnet")
    name, options, recipe = space.resolve(space.defaults())
    default = pretrain(name, "digits", tmp_path / "default", overrides=recipe, epochs=3, model_options=options,
                       verbose=0, **settings)[-1]["val_top1"]
    best = max(row["score"] for row in rows if row["epochs"] == 3)  # fully trained trials only
    assert best > default, (best, default)


def test_resume_continues_the_search_without_rerunning_trials(lenet_space, tmp_path):
    first = tune(lenet_space, "digits", tmp_path / "s", tuner="random", max_trials=2, max_epochs=1, precision="fp32")
    stamps = {row["trial"]: os.path.getmtime(tmp_path / "s" / "trials" / row["trial"] / "history.json")
              for row in first}
    with pytest.raises(ValueError, match="already holds a search; pass --resume"):
        tune(lenet_space, "digits", tmp_path / "s", tuner="random", max_trials=3, max_epochs=1, precision="fp32")
    again = tune(lenet_space, "digits", tmp_path / "s", tuner="random", max_trials=3, max_epochs=1, precision="fp32",
                 resume=True)
    assert len(again) == 3 and all(row["score"] is not None for row in again)
    for trial, stamp in stamps.items():
        assert os.path.getmtime(tmp_path / "s" / "trials" / trial / "history.json") == stamp


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_chief_and_two_workers_split_the_trials(lenet_space, tmp_path):
    port = _free_port()
    command = [sys.executable, "-m", "kcnn.cli", "tune", "--space", str(lenet_space), "--dataset", "digits",
               "--tuner", "random", "--max-trials", "6", "--max-epochs", "1", "--precision", "fp32",
               "--out", str(tmp_path / "search")]
    environment = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    chief = subprocess.Popen(command, env={**environment, "KERASTUNER_TUNER_ID": "chief"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = [subprocess.Popen(command, env={**environment, "KERASTUNER_TUNER_ID": f"tuner{i}"},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        for worker in workers:
            assert worker.wait(timeout=600) == 0
        output, _ = chief.communicate(timeout=120)
    finally:
        for process in (chief, *workers):
            process.kill()
    assert chief.returncode == 0, output[-2000:]
    rows = list(__import__("csv").DictReader(open(tmp_path / "search" / "trials.csv")))
    assert len(rows) == 6 and all(row["status"] == "COMPLETED" and float(row["score"]) > 0 for row in rows)
    assert {row["worker"] for row in rows} == {"tuner0", "tuner1"}


def test_cli_refuses_an_unknown_space(tmp_path):
    result = CliRunner().invoke(main, ["tune", "--space", "inception", "--dataset", "digits", "--out",
                                       str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "unknown search space 'inception'; accepted: zfnet, resnet, vgg or a YAML file" in result.output
