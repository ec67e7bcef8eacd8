"""The CLI's help: ``kcnn --help``, every command's ``--help`` and click's usage errors never import
TensorFlow (checked in a fresh interpreter); TensorFlow's start-up chatter stays off stderr unless
``--verbose``; every command's help has an example, and the examples run (chained, in a scratch
directory: pretrain's run is what evaluate, export and predict use)."""

import json
import os
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from kcnn.cli import main, options, quiet
from helpers import torch_state_dict
from test_pipeline import CI_PIPELINES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "keras")

# In a fresh interpreter: every command's --help and a usage error of each, then what imported a heavy module
# (the kcnn frames of the first import of each), if anything did.
LIGHT = r"""
import json, sys, traceback

first = {}


class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in HEAVY and name not in first:
            first[name] = [RUNNING] + [f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_stack()
                                       if "/kcnn/" in frame.filename]
        return None


HEAVY, RUNNING = json.loads(sys.argv[1]), "import kcnn.cli"
sys.meta_path.insert(0, Spy())
from click.testing import CliRunner

from kcnn.cli import main

exits = {}


def walk(command, path):
    yield path
    for name, sub in getattr(command, "commands", {}).items():
        yield from walk(sub, [*path, name])


for path in walk(main, []):
    for args in ([*path, "--help"], [*path, "--no-such-option"]):
        RUNNING = "kcnn " + " ".join(args)
        exits[RUNNING] = CliRunner().invoke(main, args).exit_code
for args in json.loads(sys.argv[2]):
    RUNNING = "kcnn " + " ".join(args)
    exits[RUNNING] = CliRunner().invoke(main, args).exit_code
print(json.dumps({"exits": exits, "heavy": first, "loaded": [name for name in HEAVY if name in sys.modules]}))
"""

USAGE_ERRORS = [  # click's errors of the arguments' types, choices and callbacks
    ["evaluate", "no/such/run", "--dataset", "digits"],
    ["pretrain", "--model", "lenet5", "--dataset", "digits", "--out", "o", "--precision", "fp8"],
    ["finetune", "--backbone", "resnet18", "--task", "classify", "--out", "o"],
    ["degradation", "--depths", "20,x", "--out", "o"],
    ["profile", "lenet5", "--input-shape", "32,32"],
    ["bench", "--mode", "serve"],
    ["tune", "--space", "resnet", "--dataset", "digits", "--tuner", "grid", "--out", "o"],
    ["predict", "no/such/model", "x.png"],
    ["no-such-command"],
]


def _fresh(code, *args, env=None):
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def _commands(command=main, path=()):
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield (*path, name)
        yield from _commands(sub, (*path, name))


def test_help_and_usage_errors_never_import_tensorflow():
    done = _fresh(LIGHT, json.dumps(HEAVY), json.dumps(USAGE_ERRORS))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert not report["heavy"] and not report["loaded"], (
        "imported while parsing (first import: the command line, then kcnn's frames):\n"
        + json.dumps(report["heavy"], indent=1))
    helps = {run: code for run, code in report["exits"].items() if run.endswith("--help")}
    assert len(helps) == len(list(_commands())) + 1 and set(helps.values()) == {0}, helps
    assert {code for run, code in report["exits"].items() if not run.endswith("--help")} == {2}, report["exits"]


def test_the_choices_repeated_for_the_options_are_the_libraries():
    from kcnn.tasks import TASKS
    from kcnn.train import bench, degradation, hardware
    from kcnn.tune import search
    from kcnn.weights import PRESETS, importer

    assert options.PRECISIONS == hardware.PRECISIONS and options.STRATEGIES == hardware.STRATEGIES
    assert options.BENCH_MODES == bench.MODES and options.BENCH_SOURCES == bench.SOURCES
    assert options.CIFAR_DEPTHS == degradation.CIFAR_DEPTHS and options.TUNERS == search.TUNERS
    assert options.TASKS == {task: tuple(heads) for task, heads in TASKS.items()}
    assert options.WEIGHT_SOURCES == importer.SOURCES and options.PREPROCESSING_PRESETS == tuple(PRESETS)


# TensorFlow loads in these: the zoo's profile (a model built, an operation run), then a user error.
CHATTY = """
import sys
from kcnn.cli import main
for args in (["profile", "lenet5"], ["profile", "resnt50"]):
    try:
        main([*sys.argv[1:], *args], prog_name="kcnn")
    except SystemExit as exit:
        print("exit", exit.code)
print("tensorflow loaded:", "tensorflow" in sys.modules)
"""
CHATTER = ("absl", "oneDNN", "cuda", "cuInit", "cpu_feature_guard", "I0000", "W0000", "E0000")


def _chatter(text):
    return [line for line in text.splitlines() if any(word in line for word in CHATTER)]


def test_tensorflow_start_up_chatter_only_with_verbose():
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KCNN_VERBOSE")}
    done = _fresh(CHATTY, env=env)
    assert "tensorflow loaded: True" in done.stdout and done.stdout.count("exit ") == 2, done.stdout + done.stderr
    assert "lenet5: input 32x32x1, 61,706 params" in done.stdout
    assert "exit 1" in done.stdout and "Error: unknown model 'resnt50'" in done.stderr  # kcnn's own errors show
    assert not _chatter(done.stderr), done.stderr
    verbose = _fresh(CHATTY, "--verbose", env=env)
    assert "tensorflow loaded: True" in verbose.stdout and "Error: unknown model 'resnt50'" in verbose.stderr
    assert _chatter(verbose.stderr), verbose.stderr  # TensorFlow 2.21 prints absl's and oneDNN's lines at least


def test_kcnn_verbose_in_the_environment_is_the_flag(monkeypatch):
    seen = []
    monkeypatch.setattr(quiet, "configure", seen.append)
    runner = CliRunner()
    for env, expected in (({}, False), ({"KCNN_VERBOSE": "1"}, True), ({"KCNN_VERBOSE": "0"}, False)):
        monkeypatch.delenv("KCNN_VERBOSE", raising=False)
        assert runner.invoke(main, ["recipes", "--help"], env=env).exit_code == 0
        assert seen.pop() is expected


def _help(path):
    return CliRunner().invoke(main, [*path, "--help"], terminal_width=200).output


def examples(path):
    """The ``kcnn ...`` command lines (continued with a backslash at the end, as in a shell) of the paragraph
    under "Example" in the command's help."""
    lines, found = [], False
    for line in _help(path).splitlines():
        text = line.strip()
        if text.startswith("Example"):
            found = True
        elif found and not text:
            break
        elif found and lines and lines[-1].endswith("\\"):
            lines[-1] = f"{lines[-1][:-1].rstrip()} {text}"
        elif found and text.startswith("kcnn "):
            lines.append(text)
    return lines


@pytest.mark.parametrize("path", [pytest.param(path, id=" ".join(path) or "kcnn") for path in [(), *_commands()]])
def test_every_help_has_an_example(path):
    assert examples(path), f"kcnn {' '.join(path)} --help has no 'Example:' paragraph with a kcnn line"
    assert all(example.split()[1:1 + len(path)] == list(path) or not path for example in examples(path))


# Examples in the order their outputs are used; commands not named here run after these, in the tree's order.
ORDER = ["pretrain", "evaluate", "export", "predict", "weights info"]
# Examples whose run the suite already makes with the same command line (a minute or more each): not run twice.
RUN_ELSEWHERE = {
    # tests/test_pipeline.py::test_offline_pipelines_run_end_to_end runs `kcnn run <pipeline> --out <dir>`
    "run": lambda args: os.path.splitext(os.path.basename(args[1]))[0] in CI_PIPELINES and args[2:3] == ["--out"],
    # tests/test_weights_fetch.py runs `kcnn weights fetch` against a local server (this one downloads)
    "weights fetch": lambda args: args[:2] == ["weights", "fetch"] and '["weights", "fetch", ' in open(
        os.path.join(ROOT, "tests", "test_weights_fetch.py"), encoding="utf-8").read(),
}


def _digit_png(path):
    """An 8x8 digit of scikit-learn's (the `digits` dataset's own source), scaled up, as a PNG."""
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] * 255 / 16).astype("uint8")
    Image.fromarray(pixels).resize((32, 32)).save(path)


def _timm_resnet18(path):
    """A resnet18 checkpoint in timm's layout (its values do not matter to the import)."""
    import kcnn
    from safetensors.numpy import save_file

    save_file(torch_state_dict(kcnn.build("resnet18", version="v1.5"), "timm"), str(path))


# The input files the examples name, made in the scratch directory before they run.
INPUT_FILES = {"digit.png": _digit_png, "model.safetensors": _timm_resnet18}


def test_the_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/, models/ and the like land here
    os.symlink(os.path.join(ROOT, "pipelines"), tmp_path / "pipelines")
    for name, make in INPUT_FILES.items():
        make(tmp_path / name)
    paths = sorted([(), *_commands()], key=lambda p: (ORDER.index(" ".join(p)) if " ".join(p) in ORDER
                                                      else len(ORDER), p))
    ran = []
    for path in paths:
        for example in examples(path):
            args = shlex.split(example)[1:]
            elsewhere = RUN_ELSEWHERE.get(" ".join(path)) or RUN_ELSEWHERE.get(path[0] if path else "")
            if elsewhere:
                assert elsewhere(args), f"{example}: not run by the suite"
                continue
            result = CliRunner().invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, f"{example}\n{result.output}"
            ran.append(example)
    assert {"kcnn predict models/lenet5 digit.png"} <= set(ran)
