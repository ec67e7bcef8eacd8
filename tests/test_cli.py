"""The click CLI, run in-process with CliRunner."""

import json

from click.testing import CliRunner

from kcnn.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_lists_every_command():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("models", "profile", "weights", "pretrain", "recipes", "evaluate", "degradation", "bench",
                    "finetune", "export", "predict", "tune"):
        assert command in result.output


def test_models_table_and_json():
    table = run("models", "--family", "cifar_resnet")
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split()[:3] == ["model", "family", "year"]
    resnet110 = next(line for line in lines if line.startswith("resnet110 "))
    assert "1,727,962" in resnet110 and "6.43 %" in resnet110
    rows = json.loads(run("models", "--dataset", "mnist", "--json").output)
    assert [r["name"] for r in rows] == ["lenet5"] and rows[0]["params"] == 61_706


def test_profile_inception_v1_reads_like_the_lecture_table():
    result = run("profile", "inception_v1")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert rows["inception_3a"][1:] == ["inception", "28x28x256", "164K", "128M", "6"]
    assert rows["inception_5b"][2] == "7x7x1024" and rows["pool4"][2] == "7x7x832"
    assert rows["total"][1:] == ["6,998,552", "1,582,671,872", "58"]


def test_profile_json_and_options():
    result = run("profile", "resnet50", "-o", "version=\"v1.5\"", "--json")
    data = json.loads(result.output)
    assert data["totals"]["params"] == 25_557_032 and data["totals"]["macs"] == 4_089_184_256
    assert data["conventions"]["macs"].startswith("multiply-accumulates")


def test_bad_input_is_one_line_and_non_zero():
    for args, message in [
        (("profile", "resnt50"), "Error: unknown model 'resnt50'; did you mean: resnet50"),
        (("profile", "resnet50", "--input-shape", "224,224"), "expected H,W,C"),
        (("profile", "resnet50", "-o", "towers=2"), "Error: unknown option 'towers'"),
        (("models", "--family", "densenet"), "Error: unknown family 'densenet'"),
    ]:
        result = run(*args)
        assert result.exit_code != 0
        assert message in result.output


def test_weights_list_shows_official_files_with_hashes_and_accuracy():
    result = run("weights", "list", "--from", "torchvision", "--model", "resnet50")
    assert result.exit_code == 0
    assert "resnet50-0676ba61.pth" in result.output and "76.13" in result.output
    assert "sha256-prefix:11ad3fa6" in result.output
    rows = json.loads(run("weights", "list", "--json").output)
    assert {row["library"] for row in rows} == {"torchvision", "timm", "keras"}


def test_weights_import_and_info(tmp_path):
    from safetensors.numpy import save_file

    import kcnn
    from helpers import torch_state_dict

    save_file(torch_state_dict(kcnn.build("resnet18", version="v1.5"), "timm"), str(tmp_path / "model.safetensors"))
    out = tmp_path / "resnet18.weights.h5"
    result = run("weights", "import", "--from", "timm", "--model", "resnet18",
                 "--source", str(tmp_path / "model.safetensors"), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "resnet18 (version=v1.5), 1000 classes, preprocessing torch" in result.output
    info = run("weights", "info", str(out))
    assert "architecture    resnet18" in info.output
    assert json.loads(run("weights", "info", str(out), "--json").output)["source"]["library"] == "timm"

    wrong = run("weights", "import", "--from", "timm", "--model", "resnet34",
                "--source", str(tmp_path / "model.safetensors"), "--out", str(tmp_path / "x.weights.h5"))
    assert wrong.exit_code == 1
    assert wrong.output.strip().splitlines() == [
        "Error: 'model.safetensors' holds resnet18 weights, not resnet34; import it with --model resnet18"]
    assert not (tmp_path / "x.weights.h5").exists()


def test_recipes_table():
    result = run("recipes")
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if line.startswith("resnet_cifar"))
    assert "64000 steps" in row and "x0.1 at 32000,48000" in row


def test_pretrain_runs_and_reports(tmp_path):
    result = run("pretrain", "--model", "lenet5", "--dataset", "digits", "--recipe", "small", "--steps", "30",
                 "--precision", "fp32", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "done: 30 steps, val top-1" in result.output
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["step"] == 30


def test_pretrain_bad_input_is_one_line(tmp_path):
    unprepared = run("pretrain", "--model", "lenet5", "--dataset", "cifar100", "--data-dir", str(tmp_path),
                     "--out", str(tmp_path / "run"))
    assert unprepared.exit_code == 1
    assert len(unprepared.output.strip().splitlines()) == 1 and "--download" in unprepared.output
    bad_field = run("pretrain", "--model", "lenet5", "--dataset", "digits", "--set", "momentum_x=1",
                    "--out", str(tmp_path / "run"))
    assert bad_field.exit_code == 1 and "unknown recipe field 'momentum_x'" in bad_field.output
    assert not (tmp_path / "run").exists()


def test_bench_prints_rates_and_ratios():
    result = run("bench", "--model", "lenet5", "--source", "memory", "--steps", "2", "--warmup", "1")
    assert result.exit_code == 0, result.output
    header, row = result.output.strip().splitlines()[-2:]
    assert header.split()[:5] == ["model", "mode", "precision", "source", "img/s"]
    assert row.split()[:4] == ["lenet5", "train", "float32", "memory"] and float(row.split()[4]) > 0


def _version(tmp_path, labels=None, card=None):
    """An exported model's directory as predict reads it for names (no graph needed)."""
    version = tmp_path / "model" / "1"
    (version / "assets.extra").mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    if labels is not None:
        (version / "assets").mkdir()
        (version / "assets" / "labels.txt").write_text("".join(f"{name}\n" for name in labels))
    if card is not None:
        (version / "assets.extra" / "model_card.json").write_text(json.dumps(card))
    return tmp_path / "model"


def test_predict_names_the_classes_of_masks_and_detections(tmp_path):
    from kcnn.export.predict import class_names, summary

    names = class_names(_version(tmp_path, labels=["background", "circle", "square", "triangle"]))
    assert names == ["background", "circle", "square", "triangle"]
    mask = {"segmentation_mask": [[[0, 0, 1, 255], [0, 3, 1, 255], [255] * 4]], "image_size": [[2, 3]]}
    assert summary(mask, ["dir/a.png"], names) == ["a.png: 3x2 mask; background: 50.0%, circle: 33.3%, triangle: 16.7%"]
    assert summary(mask, ["a.png"]) == ["a.png: 3x2 mask; class 0: 50.0%, class 1: 33.3%, class 3: 16.7%"]
    found = {"num_detections": [2, 0], "detection_classes": [[1.0, 2.0, 0.0], [0.0] * 3],
             "detection_scores": [[0.9, 0.5, 0.1], [0.0] * 3]}
    assert summary({**found, "detection_labels": [["circle", "square", ""], [""] * 3]}, ["b.png", "c.png"]) == [
        "b.png: 2 detections: circle 0.90, square 0.50", "c.png: 0 detections"]
    detector = ["circle", "square", "triangle"]  # a detector's names have no background
    assert summary(found, ["b.png", "c.png"], detector)[0] == "b.png: 2 detections: square 0.90, triangle 0.50"


def test_predict_reads_the_names_from_the_model_card_without_labels_txt(tmp_path):
    from kcnn.export.predict import class_names

    assert class_names(_version(tmp_path / "a", card={"class_names": ["cat", "dog"]})) == ["cat", "dog"]
    assert class_names(_version(tmp_path / "b")) is None
