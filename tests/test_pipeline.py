"""kcnn run: every shipped pipeline validates; bad files fail up front naming key and line; the offline
pipelines run end to end; a failing stage keeps the earlier ones and --resume skips what completed."""

import glob
import json
import os

import pytest
from click.testing import CliRunner

from kcnn.cli import main
from kcnn.pipeline import StageFailed, load, run

SHIPPED = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "pipelines", "*.yaml")))
CI_PIPELINES = ("digits_lenet", "shapes_smoke")  # offline and small: run end to end here


def test_the_shipped_pipelines_are_there_and_valid():
    names = {os.path.splitext(os.path.basename(path))[0] for path in SHIPPED}
    assert {"imagenet_resnet50", "segmentation_pets_resnet50", "detection_voc_resnet50", "degradation_cifar10",
            "tune_zfnet", *CI_PIPELINES} <= names
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
