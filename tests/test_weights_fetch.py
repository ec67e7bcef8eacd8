"""``weights="imagenet"``: the published file downloaded from a local HTTP server (a catalogue put in place with
``catalog.using``), checked, converted once and cached; truncated, mismatching and unreachable downloads fail
at once, name the URL, the cache path and the manual command, and leave nothing in the cache."""

import contextlib
import hashlib
import http.server
import os
import shutil
import socket
import threading
import time
import types

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save

import kcnn
from helpers import torch_state_dict
from kcnn.cli import main
from kcnn.train.finetune import backbone_weights_path
from kcnn.weights import catalog, fetch, read_metadata
from kcnn.weights.catalog import OfficialWeights
from kcnn.weights.importer import import_weights


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.mode``: "full", "truncate" (announces the whole length, sends half)
    or "no-length" (sends half without announcing a length: only the hash can tell)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.server.requests.append(self.path)
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.server.mode != "no-length":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if self.server.mode == "full" else body[: len(body) // 2])

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serving(files):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.mode, server.requests = dict(files), "full", []
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _dead_url(path):
    """A URL on 127.0.0.1 where nothing listens: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def _torchvision_entry(url, sha256):
    return OfficialWeights("torchvision", "resnet18", {"version": "v1.5"}, url, "sha256-prefix", sha256[:8],
                           69.758, 89.078, "torch")


def _cached_files(root):
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, _, names in os.walk(root) for name in names)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy in the environment must not see the test server
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture(scope="module")
def published():
    """A resnet18 file in torchvision's layout (float16 to halve it), named as torchvision names its files."""
    keras.utils.set_random_seed(0)
    tensors = torch_state_dict(kcnn.build("resnet18", version="v1.5"))
    body = save({key: value.astype("float16") if value.dtype == np.float32 else value
                 for key, value in tensors.items()})
    sha256 = hashlib.sha256(body).hexdigest()
    return types.SimpleNamespace(body=body, sha256=sha256, name=f"resnet18-{sha256[:8]}.safetensors")


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    root = tmp_path / "keras"
    monkeypatch.setenv("KERAS_HOME", str(root))
    return root


@pytest.fixture(scope="module")
def first_fetch(published, tmp_path_factory):
    """``build("resnet18", weights="imagenet")`` in an empty cache, the file served from 127.0.0.1."""
    root = tmp_path_factory.mktemp("keras")
    with pytest.MonkeyPatch.context() as patch, _serving({f"/models/{published.name}": published.body}) as server:
        patch.setenv("KERAS_HOME", str(root))
        patch.setenv("no_proxy", "127.0.0.1")
        entry = _torchvision_entry(server.url(f"/models/{published.name}"), published.sha256)
        with catalog.using([entry]):
            model = kcnn.build("resnet18", weights="imagenet", classifier_activation=None)
        requests = list(server.requests)
    path = root / "kcnn" / f"resnet18-v1.5-torchvision-{published.sha256[:8]}.weights.h5"
    return types.SimpleNamespace(root=root, entry=entry, model=model, requests=requests, path=str(path))


@pytest.fixture
def warm_cache(first_fetch, keras_home):
    """A copy of the cache ``first_fetch`` filled, its server gone (the entry's URL now refuses connections)."""
    shutil.copytree(first_fetch.root, keras_home)
    with catalog.using([first_fetch.entry]):
        yield os.path.join(keras_home, os.path.relpath(first_fetch.path, first_fetch.root))


def test_choice_is_the_best_published_file_of_the_variant():
    assert fetch.choose("resnet50").file_name == "resnet50-11ad3fa6.pth"  # torchvision V2, 80.858
    assert fetch.choose("resnet50", version="v1").file_name == "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    assert fetch.choose("resnet50", "torchvision").file_name == "resnet50-11ad3fa6.pth"
    assert fetch.choose("vgg16").library == "torchvision"  # timm ships the same weights, unhashed
    assert fetch.choose("vgg16", "keras").top1 == 71.3  # the file with a classifier, not notop
    assert fetch.choose("vgg16", "timm").hash_kind == "none"
    assert fetch.choose("googlenet").file_name == "googlenet-1378be20.pth"
    with pytest.raises(ValueError, match=r"no published ImageNet weights for lenet5; kcnn fetches them for "
                                         r"alexnet, inception_v1, resnet101"):
        fetch.choose("lenet5")
    with pytest.raises(ValueError, match=r"no published ImageNet weights for resnet18 from keras; published: "
                                         r"torchvision version=v1.5 \(top-1 69.758\); timm .*"
                                         r"\(kcnn weights list --model resnet18\)"):
        fetch.choose("resnet18", "keras")
    with pytest.raises(ValueError, match="unknown weights source 'caffe'; accepted: imagenet, torchvision"):
        fetch.choose("resnet18", "caffe")


def test_first_call_downloads_checks_converts_and_loads(first_fetch, published, tmp_path):
    assert first_fetch.requests == [f"/models/{published.name}"]
    assert _cached_files(first_fetch.root) == [
        os.path.join("kcnn", os.path.basename(first_fetch.path)), os.path.join("models", published.name)]
    metadata = read_metadata(first_fetch.path)
    assert metadata["source"]["url"] == first_fetch.entry.url
    assert metadata["source"]["sha256"] == published.sha256
    assert metadata["source"]["hash_check"] == f"sha256-prefix:{published.sha256[:8]}"
    assert first_fetch.model.weights_metadata == metadata and metadata["options"] == {"version": "v1.5"}

    (tmp_path / "by_hand.safetensors").write_bytes(published.body)
    import_weights("torchvision", "resnet18", tmp_path / "by_hand.safetensors", tmp_path / "direct.weights.h5")
    direct = kcnn.build("resnet18", weights=tmp_path / "direct.weights.h5", classifier_activation=None)
    for got, want in zip(first_fetch.model.get_weights(), direct.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype("float32")
    logits = first_fetch.model.predict(images, verbose=0)
    assert np.abs(logits).max() > 1e-3
    np.testing.assert_array_equal(logits, direct.predict(images, verbose=0))


def test_later_calls_use_the_cache_without_network(warm_cache, first_fetch, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    assert fetch.fetch("resnet18") == fetch.fetch("resnet18", "torchvision") == warm_cache
    model = kcnn.build("resnet18", weights="imagenet", include_top=False, pooling="avg", input_shape=(64, 64, 3))
    np.testing.assert_array_equal(model.get_layer("conv1_conv").get_weights()[0],
                                  first_fetch.model.get_layer("conv1_conv").get_weights()[0])


@pytest.mark.parametrize("mode, message", [
    ("truncate", r"retrieval incomplete: got only \d+ out of \d+ bytes"),
    ("no-length", r"is not the one torchvision publishes: its sha256 is [0-9a-f]{16}\.\.\., expected [0-9a-f]{8}"),
])
def test_truncated_download_is_never_cached_and_the_next_call_downloads_again(published, keras_home, mode, message):
    path = f"/models/{published.name}"
    with _serving({path: published.body}) as server:
        entry = _torchvision_entry(server.url(path), published.sha256)
        server.mode = mode
        with catalog.using([entry]), pytest.raises(fetch.FetchError, match=message):
            fetch.fetch("resnet18")
        assert _cached_files(keras_home) == []
        server.mode = "full"
        downloaded = fetch.download(entry)
    assert downloaded == str(keras_home / "models" / published.name)
    assert hashlib.sha256(open(downloaded, "rb").read()).hexdigest() == published.sha256
    assert _cached_files(keras_home) == [os.path.join("models", published.name)]


@pytest.mark.parametrize("library, model, file, hash_kind, published_hash", [
    ("torchvision", "resnet18", "resnet18-0123abcd.pth", "sha256-prefix", "0123abcd"),
    ("keras", "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels.h5", "md5", "64373286793e3c8b2b4e3219cbf3544b"),
])
def test_wrong_hash_is_deleted_and_the_error_says_what_to_do(
        keras_home, library, model, file, hash_kind, published_hash):
    with _serving({f"/{file}": b"an altered file" * 100}) as server:
        options = {"version": "v1.5"} if model == "resnet18" else {}
        entry = OfficialWeights(library, model, options, server.url(f"/{file}"), hash_kind, published_hash,
                                70.0, 90.0, "torch")
        with catalog.using([entry]), pytest.raises(fetch.FetchError) as raised:
            kcnn.build(model, weights=library)
    text = str(raised.value)
    converted = fetch.converted_path(entry)
    kind = "md5" if hash_kind == "md5" else "sha256"
    assert "\n" not in text
    assert f"the file downloaded from {entry.url} is not the one {library} publishes: its {kind} is" in text
    assert f"nothing was cached in {keras_home / 'models' / file}" in text
    assert f"kcnn weights import --from {library} --model {model} --source {file} --out {converted}" in text
    assert converted.startswith(str(keras_home / "kcnn"))
    assert _cached_files(keras_home) == []


def test_no_server_fails_in_under_5_seconds_naming_url_cache_and_command(keras_home):
    entry = _torchvision_entry(_dead_url("/models/resnet18-f37072fd.pth"), "f37072fd" + "0" * 56)
    with catalog.using([entry]):
        start = time.monotonic()
        with pytest.raises(fetch.FetchError) as raised:
            kcnn.build("resnet18", weights="imagenet")
        elapsed = time.monotonic() - start
    assert elapsed < 5, elapsed
    text = str(raised.value)
    assert "\n" not in text
    assert text.startswith(f"cannot download {entry.url} (") and "refused" in text
    assert f"save it as {keras_home / 'models' / 'resnet18-f37072fd.pth'}" in text
    assert (f"kcnn weights import --from torchvision --model resnet18 --source resnet18-f37072fd.pth "
            f"--out {keras_home / 'kcnn' / 'resnet18-v1.5-torchvision-f37072fd.weights.h5'}") in text
    assert _cached_files(keras_home) == []


def test_a_silent_server_times_out(keras_home):
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/models/resnet18-f37072fd.pth"
        entry = _torchvision_entry(url, "f37072fd" + "0" * 56)
        with catalog.using([entry]):
            start = time.monotonic()
            with pytest.raises(fetch.FetchError, match=r"cannot download .*\(timed out\)"):
                fetch.fetch("resnet18", timeout=0.5)
            assert time.monotonic() - start < 5
    assert _cached_files(keras_home) == []


def test_a_file_saved_by_hand_at_the_cache_path_is_checked_and_used_offline(published, keras_home):
    entry = _torchvision_entry(_dead_url(f"/models/{published.name}"), published.sha256)
    target = keras_home / "models" / published.name
    target.parent.mkdir(parents=True)
    target.write_bytes(published.body[:-1] + b"!")  # not the published file: downloaded again (offline: refused)
    with pytest.raises(fetch.FetchError, match="refused"):
        fetch.download(entry)
    target.write_bytes(published.body)
    assert fetch.download(entry) == str(target)


def test_unhashed_source_warns_and_a_broken_download_is_deleted(published, keras_home):
    path = "/timm/resnet18.tv_in1k/resolve/main/model.safetensors"
    with _serving({path: published.body}) as server:
        entry = OfficialWeights("timm", "resnet18", {"version": "v1.5"}, server.url(path), "none", "",
                                69.758, 89.078, "torch")
        with catalog.using([entry]):
            with pytest.warns(UserWarning, match=f"timm publishes no hash.*its sha256 {published.sha256}"):
                downloaded = fetch.download(entry)
            assert os.path.basename(downloaded).startswith("timm-resnet18-")
            assert downloaded.endswith("-model.safetensors")
            assert os.path.basename(fetch.converted_path(entry)).startswith("resnet18-v1.5-timm-url")
            os.remove(downloaded)
            server.mode = "no-length"  # half a file, nothing to tell it by but the failed conversion
            with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"could not be converted: .*deleted"):
                fetch.fetch("resnet18", "timm")
    assert _cached_files(keras_home) == []


def test_cli_fetch_prints_the_cached_file_and_finetune_resolves_imagenet(warm_cache):
    result = CliRunner().invoke(main, ["weights", "fetch", "resnet18"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == warm_cache
    result = CliRunner().invoke(main, ["weights", "fetch", "resnet18", "--from", "torchvision", "-o", "version=v1"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: no published ImageNet weights for resnet18 from torchvision with version='v1'; published: "
        "torchvision version=v1.5 (top-1 69.758) (kcnn weights list --model resnet18)"]
    assert backbone_weights_path("imagenet", "resnet18") == warm_cache
    with pytest.raises(ValueError, match="--weights 'imagenet.h5' does not exist"):
        backbone_weights_path("imagenet.h5", "resnet18")
