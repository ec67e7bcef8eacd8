"""kcnn run: every shipped pipeline validates; bad files fail up front naming key and line; the offline
pipelines run end to end; a failing stage keeps the earlier ones and --resume skips what completed; a
training stage killed with SIGKILL says ``running`` and --resume continues it from its checkpoint; a
completed stage whose ``with:`` changed is refused, or rerun (with what uses it) with --rerun-changed."""

import datetime
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from click.testing import CliRunner

from kcnn.cli import main
from kcnn.pipeline import StageFailed, _plan, load, run
from kcnn.train.checkpoints import latest

SHIPPED = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "pipelines", "*.yaml")))
CI_PIPELINES = ("digits_lenet", "shapes_smoke")  # offline and small: run end to end here


def test_the_shipped_pipelines_are_there_and_valid():
    names = {os.path.splitext(os.path.basename(path))[0] for path in SHIPPED}
    assert {"imagenet_resnet50", "segmentation_pets_resnet50", "detection_voc_resnet50", "degradation_cifar10",
            "tune_zfnet", "shapes_instance_segmentation", "coco_mask_rcnn_resnet50", *CI_PIPELINES} <= names
    for path in SHIPPED:
        assert load(path)["stages"], path


@pytest.mark.parametrize("text, message", [
    ("stages:\n  - name: a\n    kind: pretrain\n    with: {model: lenet5, dataset: digits, epoch: 3}\n",
     ":4: unknown key 'epoch' in stage 'a' (pretrain); accepted: model, dataset"),
    ("stages:\n  - name: a\n    kind: pretrain\n    with:\n      model: lenet5\n      dataset: digits\n"
     "      epochs: three\n", ":7: stage 'a' (pretrain) key 'epochs' must be a int, got 'three'"),
    ("name: x\nstage: []\n", ":2: unknown key 'stage' in the pipeline; accepted: name, description, stages"),
    ("stages:\n  - name: a\n    kind: export\n    with: {source: $b, model_name: m}\n",
     ":4: stage 'a': source refers to $b, which is not an earlier stage (none)"),
    ("stages:\n  - name: a\n    kind: train\n", ":3: stage 'a': unknown kind 'train'; accepted: pretrain"),
    ("stages:\n  - name: a\n    kind: finetune\n    with: {backbone: resnet18}\n",
     ":2: stage 'a' (finetune) needs task, dataset"),
])
def test_bad_pipelines_are_refused_up_front_with_key_and_line(text, message, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as error:
        load(path)
    assert str(error.value) == f"{path}{message}" or message in str(error.value), str(error.value)
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing ran


@pytest.mark.parametrize("name", CI_PIPELINES)
def test_offline_pipelines_run_end_to_end(name, tmp_path):
    path = os.path.join(os.path.dirname(__file__), "..", "pipelines", f"{name}.yaml")
    result = CliRunner().invoke(main, ["run", path, "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for stage in load(path)["stages"]:
        manifest = json.loads((tmp_path / "run" / stage["name"] / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["config"] == stage["with"]
        for output in manifest["outputs"].values():
            assert os.path.exists(output), output
    exported = [m for m in (json.loads(p.read_text()) for p in (tmp_path / "run").glob("*/manifest.json"))
                if m["kind"] == "export"]
    assert exported and all(os.path.isfile(os.path.join(m["outputs"]["model"], "saved_model.pb")) for m in exported)
    again = CliRunner().invoke(main, ["run", path, "--out", str(tmp_path / "run"), "--resume"])
    assert again.exit_code == 0 and again.output.count("completed earlier, skipped") == len(load(path)["stages"])


def test_the_instance_segmentation_pipeline_runs_in_a_short_form(tmp_path):
    """The shipped shapes_instance_segmentation.yaml with a short finetune (10 steps of a small Mask R-CNN at
    64x64): train, evaluate (box and mask mAP) and export run end to end."""
    path = os.path.join(os.path.dirname(__file__), "..", "pipelines", "shapes_instance_segmentation.yaml")
    pipeline = yaml.safe_load(open(path))
    finetune = pipeline["stages"][0]["with"]
    finetune.update(steps=10, image_size=[64, 64], precision="fp32", head_options={
        "fpn_width": 16, "representation_size": 32, "mask_width": 16, "sampled_rois": 32, "train_proposals": 50,
        "test_proposals": 50})
    short = tmp_path / "short.yaml"
    short.write_text(yaml.safe_dump(pipeline))
    result = CliRunner().invoke(main, ["run", str(short), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    manifests = {stage["name"]: json.loads((tmp_path / "run" / stage["name"] / "manifest.json").read_text())
                 for stage in pipeline["stages"]}
    assert all(manifest["status"] == "completed" for manifest in manifests.values())
    assert {"mAP50", "mask_mAP50"} <= set(manifests["evaluate"]["metrics"])
    assert os.path.isfile(os.path.join(manifests["export"]["outputs"]["model"], "saved_model.pb"))


def test_a_failing_stage_keeps_the_earlier_ones_and_resume_reruns_from_it(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("name: p\nstages:\n"
                    "  - {name: train, kind: pretrain, with: {model: lenet5, dataset: digits, epochs: 1,"
                    " precision: fp32}}\n"
                    "  - {name: check, kind: evaluate, with: {source: $train, dataset: shapes}}\n")
    with pytest.raises(StageFailed, match=r"stage 2/2 'check' \(evaluate\) failed: .*kept in"):
        run(path, tmp_path / "run", echo=lambda line: None)
    first = json.loads((tmp_path / "run" / "train" / "manifest.json").read_text())
    assert first["status"] == "completed" and os.path.isfile(tmp_path / "run" / "train" / "model.weights.h5")
    failed = json.loads((tmp_path / "run" / "check" / "manifest.json").read_text())
    assert failed["status"] == "failed" and failed["error"]
    path.write_text(path.read_text().replace("dataset: shapes", "dataset: digits"))
    with pytest.raises(ValueError, match="already holds a run of a pipeline; pass --resume"):
        run(path, tmp_path / "run", echo=lambda line: None)
    lines = []
    manifests = run(path, tmp_path / "run", resume=True, echo=lines.append)
    assert "completed earlier, skipped" in lines[0] and [m["status"] for m in manifests] == ["completed"] * 2
    assert manifests[0]["finished"] == first["finished"]  # not run again
    assert manifests[1]["metrics"]["top1"] > 50


def _read(path):
    return json.loads(open(path, encoding="utf-8").read())


def test_sigkill_in_a_training_stage_then_resume_continues_it_from_its_checkpoint(tmp_path):
    path, out = tmp_path / "pipeline.yaml", tmp_path / "run"
    path.write_text("name: p\nstages:\n"
                    "  - {name: train, kind: pretrain, with: {model: lenet5, dataset: digits, recipe: small,"
                    " epochs: 6, checkpoint_every: 5, precision: fp32}}\n"
                    "  - {name: check, kind: evaluate, with: {source: $train, dataset: digits}}\n")
    process = subprocess.Popen([sys.executable, "-m", "kcnn.cli", "run", str(path), "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage = out / "train"

    def epochs_done():  # history.json is written (atomically) after each epoch's checkpoint
        try:
            return len(_read(stage / "history.json")) if latest(stage / "checkpoints") else 0
        except (OSError, ValueError):
            return 0

    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not epochs_done():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _read(stage / "history.json")
    checkpoint = os.path.basename(latest(stage / "checkpoints"))
    assert 1 <= len(before) < 6, "killed too late: the stage had finished"

    killed = _read(stage / "manifest.json")
    assert killed["status"] == "running" and "finished" not in killed and killed["config"]["epochs"] == 6
    started = datetime.datetime.fromisoformat(killed["started"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()) < 300
    assert not (out / "check").exists()

    lines = []
    manifests = run(path, out, resume=True, echo=lines.append)
    assert lines[0].endswith(f"continues from {checkpoint}"), lines
    assert [m["status"] for m in manifests] == ["completed"] * 2
    assert manifests[0]["resumed_from"] == checkpoint and manifests[0]["started"] >= killed["started"]
    after = _read(stage / "history.json")
    assert [row["epoch"] for row in after] == [1, 2, 3, 4, 5, 6]
    assert [row["step"] for row in after] == [22 * epoch for epoch in range(1, 7)]
    # The epochs before the kill are the checkpoint's, as recorded then (a restart from step 0 would have
    # measured them again: other losses and images per second).
    assert after[:len(before)] == before
    assert manifests[1]["upstream"] == {"train": manifests[0]["attempt"]} and manifests[1]["metrics"]["top1"] > 50


def _two_trainings(path, train_steps=3, seed=0):
    path.write_text("name: p\nstages:\n"
                    f"  - {{name: train, kind: pretrain, with: {{model: lenet5, dataset: digits, steps: {train_steps},"
                    f" seed: {seed}, precision: fp32}}}}\n"
                    "  - {name: check, kind: evaluate, with: {source: $train, dataset: digits}}\n"
                    "  - {name: other, kind: pretrain, with: {model: lenet5, dataset: digits, steps: 2,"
                    " precision: fp32}}\n")


def _manifests(out):
    return {name: _read(out / name / "manifest.json") for name in ("train", "check", "other")}


def test_a_completed_stage_whose_settings_changed_is_refused_and_nothing_reruns(tmp_path):
    path, out = tmp_path / "pipeline.yaml", tmp_path / "run"
    _two_trainings(path)
    run(path, out, echo=lambda line: None)
    first = _manifests(out)
    _two_trainings(path, train_steps=4, seed=1)
    message = (r"^stage 1/3 'train' \(pretrain\) completed with other settings \(changed: seed, steps\); "
               r"rerun it .*--rerun-changed")
    with pytest.raises(ValueError, match=message):
        run(path, out, resume=True, echo=lambda line: None)
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--resume"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "'train' (pretrain) completed with other settings (changed: seed, steps)" in result.output
    assert _manifests(out) == first  # nothing ran, not even the unchanged stages
    assert len(_read(out / "train" / "history.json")) == 1 and sorted(os.listdir(out)) == ["check", "other", "train"]


def test_rerun_changed_reruns_the_changed_stage_and_those_using_it(tmp_path):
    path, out = tmp_path / "pipeline.yaml", tmp_path / "run"
    _two_trainings(path)
    run(path, out, echo=lambda line: None)
    first = _manifests(out)
    (out / "train" / "stale.txt").write_text("from the first run")
    _two_trainings(path, train_steps=4)
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--rerun-changed"])
    assert result.exit_code == 0, result.output
    assert "[1/3] train (pretrain) -> " in result.output and "rerun from scratch (changed: steps)" in result.output
    assert "[2/3] check (evaluate) -> " in result.output and "input stage 'train' ran again" in result.output
    assert "[3/3] other (pretrain): completed earlier, skipped" in result.output
    again = _manifests(out)
    assert again["other"] == first["other"]
    for name in ("train", "check"):
        assert again[name]["status"] == "completed" and again[name]["attempt"] != first[name]["attempt"]
    assert again["train"]["config"]["steps"] == 4 and again["check"]["upstream"] == {"train": again["train"]["attempt"]}
    assert [row["step"] for row in _read(out / "train" / "history.json")] == [4]  # trained from scratch
    assert not (out / "train" / "stale.txt").exists() and sorted(os.listdir(out)) == ["check", "other", "train"]
    resumed = CliRunner().invoke(main, ["run", str(path), "--out", str(out), "--resume"])
    assert resumed.exit_code == 0 and resumed.output.count("completed earlier, skipped") == 3, resumed.output


def _write_manifest(out, name, **fields):
    os.makedirs(out / name, exist_ok=True)
    (out / name / "manifest.json").write_text(json.dumps({"stage": name, "outputs": {"run": str(out / name)},
                                                          **fields}))


def test_resume_plans_from_the_manifests(tmp_path):
    """The decisions without training: a stage whose input stage ran again in an earlier, interrupted call
    reruns; an interrupted training stage continues from its checkpoint unless its settings changed."""
    _two_trainings(tmp_path / "p.yaml")
    stages = load(tmp_path / "p.yaml")["stages"]
    out = tmp_path / "run"
    train = {"model": "lenet5", "dataset": "digits", "steps": 3, "seed": 0, "precision": "fp32"}
    _write_manifest(out, "train", kind="pretrain", status="completed", config=train, attempt="b")
    _write_manifest(out, "check", kind="evaluate", status="completed", attempt="c", upstream={"train": "a"},
                    config={"source": "$train", "dataset": "digits"})
    _write_manifest(out, "other", kind="pretrain", status="running", attempt="d",
                    config={"model": "lenet5", "dataset": "digits", "steps": 2, "precision": "fp32"})
    os.makedirs(out / "other" / "checkpoints" / "step-000000001")
    (out / "other" / "checkpoints" / "step-000000001" / "state.json").write_text("{}")
    plan, attempts = _plan(stages, str(out), True, False)
    assert [(action, why) for action, _, why, _ in plan] == [
        ("skip", "completed earlier, skipped"),
        ("fresh", "rerun from scratch: its input stage 'train' ran again"),
        ("resume", "continues from step-000000001")]
    assert plan[2][3].endswith("step-000000001") and attempts["train"] == "b" and attempts["other"] != "d"
    _write_manifest(out, "other", kind="pretrain", status="failed", attempt="d",
                    config={"model": "lenet5", "dataset": "digits", "steps": 5, "precision": "fp32"})
    with pytest.raises(ValueError, match=r"^stage 3/3 'other' \(pretrain\) was interrupted \(failed\) with a "
                                         r"checkpoint made with other settings \(changed: steps\); .*--rerun-changed"):
        _plan(stages, str(out), True, False)
    plan, _ = _plan(stages, str(out), True, True)
    assert [action for action, *_ in plan] == ["skip", "fresh", "fresh"] and plan[2][3] is None
