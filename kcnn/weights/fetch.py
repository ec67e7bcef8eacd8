"""``fetch``: an official ImageNet file, downloaded and checked once, converted once, then read from the cache.

``kcnn.build(name, weights="imagenet")`` (or ``"torchvision"``, ``"timm"``, ``"keras"``),
``kcnn weights fetch NAME`` and ``kcnn finetune --weights imagenet`` come here. Which file
(``choose``), among the catalogue's (``kcnn weights list``) for the model:

- only files whose variant agrees with the options given (an option left out is the
  file's to pick, as with ``build(weights=path)``); a source name keeps only its files;
- the highest top-1 its source reports; files it reports none for (keras.applications'
  ``notop`` files, without a classifier: a file with one serves ``include_top=False`` too)
  only when nothing else fits; on a tie, a file with a published hash before one without, then the
  catalogue's order. So resnet50 is torchvision's V2 file, resnet50 ``version="v1"``
  keras.applications', vgg16 torchvision's (timm ships the same weights, unhashed).

The cache is Keras' (``$KERAS_HOME``, else ``~/.keras``, read at each call):

- ``models/<file name>``: the download, where ``keras.utils.get_file`` puts it and
  keras.applications keeps its own files under the same names (so they are shared); timm's
  files, all named ``model.safetensors``, get ``timm-<model>-<URL hash>-`` before the name;
- ``kcnn/<model>[-<variant>]-<source>-<published hash>.weights.h5``: the converted file
  ``build`` loads (``url<URL hash>`` for timm). Once it exists, no network is used.

Hash policy: torchvision publishes the first 8 hex digits of the sha256 (in the file name),
keras.applications an md5: the download must match, else it is deleted and ``FetchError``
says so. timm publishes none: its files are taken unchecked (a ``UserWarning`` says so, the
metadata's ``source.hash_check`` too, and records the sha256); ``"imagenet"`` never picks
them since torchvision's hashed files carry the same weights. A download goes to a temporary
name beside its place and is renamed only once checked: an interrupted, truncated or
mismatching download is never a cache entry. A connection silent for ``timeout`` seconds
(default 4) ends it, so offline the error comes at once. The error names the URL, the cache
path and the ``kcnn weights import`` command converting a file fetched by other means.

>>> best = choose("resnet50", version="v1")
>>> best.library, best.top1
('keras', 74.9)
>>> os.path.basename(converted_path(choose("resnet50")))
'resnet50-v1.5-torchvision-11ad3fa6.weights.h5'
>>> choose("googlenet", variant="paper")
Traceback (most recent call last):
...
ValueError: no published ImageNet weights for inception_v1 with variant='paper'; published: torchvision ...
"""

import contextlib
import hashlib
import os
import secrets
import shlex
import socket
import urllib.error
import warnings

from kcnn import registry
from kcnn.weights import catalog
from kcnn.weights.files import SUFFIX, read_metadata

KEYWORDS = ("imagenet", "torchvision", "timm", "keras")
TIMEOUT_S = 4.0  # seconds a connection may stay silent (connecting, then between reads)
DOWNLOADS = "models"  # keras.applications' subfolder of the Keras cache
CONVERTED = "kcnn"


class FetchError(ValueError):
    """Official weights could not be downloaded or did not match their published hash (nothing was cached)."""


def cache_root():
    """The Keras cache as Keras picks it: ``$KERAS_HOME``, else ``~/.keras`` (``/tmp/.keras`` if home is read-only)."""
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    home = os.path.expanduser("~")
    return os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")


def _describe(entry):
    variant = ",".join(f"{key}={value}" for key, value in entry.options.items())
    top1 = f"top-1 {entry.top1:g}" if entry.top1 is not None else "no classifier"
    return f"{entry.library} {variant + ' ' if variant else ''}({top1})"


def choose(model, source="imagenet", **options):
    """The catalogue entry ``build(model, weights=source, **options)`` loads (rule in the module's docstring)."""
    if source not in KEYWORDS:
        raise ValueError(f"unknown weights source {source!r}; accepted: {', '.join(KEYWORDS)}")
    name = registry.get(model).name
    published = catalog.entries(model=name)
    if not published:
        names = sorted({entry.model for entry in catalog.entries()})
        raise ValueError(f"no published ImageNet weights for {name}; kcnn fetches them for "
                         f"{', '.join(names)} (kcnn weights list)")
    fitting = [entry for entry in published if source in ("imagenet", entry.library)
               and all(options.get(key, value) == value for key, value in entry.options.items())]
    if not fitting:
        asked = [f"from {source}"] if source != "imagenet" else []
        asked += [f"with {key}={value!r}" for key, value in options.items()
                  if any(key in entry.options for entry in published)]
        raise ValueError(f"no published ImageNet weights for {name} {' '.join(asked)}; published: "
                         f"{'; '.join(map(_describe, published))} (kcnn weights list --model {name})")
    return max(fitting, key=lambda entry: (entry.top1 is not None, entry.top1 or 0.0, entry.hash_kind != "none"))


def _url_key(entry):
    return hashlib.sha256(entry.url.encode()).hexdigest()[:8]


def download_path(entry, root=None):
    """Where the downloaded file of ``entry`` is kept."""
    name = entry.file_name
    if entry.hash_kind == "none":  # no hash in the name, and timm names every file model.safetensors
        name = f"{entry.library}-{entry.model}-{_url_key(entry)}-{name}"
    return os.path.join(root or cache_root(), DOWNLOADS, name)


def converted_path(entry, root=None):
    """Where the kcnn weights file converted from ``entry`` is kept, keyed by the source's published hash."""
    key = entry.hash if entry.hash_kind != "none" else f"url{_url_key(entry)}"
    name = "-".join([entry.model, *map(str, entry.options.values()), entry.library, key])
    return os.path.join(root or cache_root(), CONVERTED, name + SUFFIX)


def import_command(entry, out):
    """The ``kcnn weights import`` command converting ``entry``'s file, downloaded by hand, into ``out``."""
    return (f"kcnn weights import --from {entry.library} --model {entry.model} "
            f"--source {shlex.quote(entry.file_name)} --out {shlex.quote(os.fspath(out))}")


def _by_hand(entry, target, out):
    return (f"Without network, download it by other means and save it as {target} (checked and converted "
            f"on the next call), or convert it yourself: {import_command(entry, out)}")


def _reason(error):
    """The network's own words: HTTP status, refused connection, time-out, short read."""
    cause = error
    while cause is not None and not isinstance(cause, OSError):  # get_file re-raises a plain Exception
        cause = cause.__context__
    if cause is None:
        return str(error)
    if isinstance(cause, urllib.error.HTTPError):
        return f"HTTP {cause.code} {cause.reason}"
    reason = getattr(cause, "reason", None) or cause
    return str(reason) or type(reason).__name__


@contextlib.contextmanager
def _socket_timeout(seconds):
    """``keras.utils.get_file`` takes no time-out; its sockets take the default one, set for the download only."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _checked(entry, path):
    return entry.hash_kind == "none" or entry.matches(catalog.file_digests(path))


def download(entry, root=None, *, timeout=TIMEOUT_S):
    """The checked file of ``entry`` in the Keras cache: a download, or an earlier one (keras.applications' too)."""
    root = root or cache_root()
    target = download_path(entry, root)
    out = converted_path(entry, root)
    if os.path.isfile(target) and _checked(entry, target):
        return target
    import keras

    folder, name = os.path.split(target)
    with contextlib.suppress(OSError):  # get_file takes a cache not created yet for unwritable (then /tmp/.keras)
        os.makedirs(folder, exist_ok=True)
    partial_name = f".{name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    partial = os.path.join(folder, partial_name)
    try:
        try:
            with _socket_timeout(timeout):
                partial = keras.utils.get_file(partial_name, entry.url, cache_dir=root, cache_subdir=DOWNLOADS)
        except Exception as error:  # noqa: BLE001 (get_file raises a plain Exception for network errors)
            raise FetchError(f"cannot download {entry.url} ({_reason(error)}); nothing was cached. "
                             f"{_by_hand(entry, target, out)}") from None
        digests = catalog.file_digests(partial)
        if entry.hash_kind == "none":
            warnings.warn(f"{entry.url}: {entry.library} publishes no hash, so this download is not checked; "
                          f"its sha256 {digests['sha256']} is recorded in the converted file", stacklevel=3)
        elif not entry.matches(digests):
            kind = "md5" if entry.hash_kind == "md5" else "sha256"
            raise FetchError(f"the file downloaded from {entry.url} is not the one {entry.library} publishes: "
                             f"its {kind} is {digests[kind][:16]}..., expected {entry.hash}...; it was deleted and "
                             f"nothing was cached in {target}. Try again later. {_by_hand(entry, target, out)}")
        target = os.path.join(os.path.dirname(partial), name)  # get_file may have moved to /tmp/.keras
        os.replace(partial, target)
        return target
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _converted(path):
    try:
        return os.path.isfile(path) and read_metadata(path) is not None
    except ValueError:  # another kcnn's format: convert again
        return False


def fetch(model, source="imagenet", *, timeout=TIMEOUT_S, **options):
    """The path of the converted kcnn weights file of ``model`` from ``source`` (see the module's docstring).

    ``source``: "imagenet" (the best file published for the variant ``options`` ask for),
    "torchvision", "timm" or "keras". Downloads, checks and converts on the first call only;
    raises ``FetchError`` (a ``ValueError``) when the file cannot be downloaded or does not match its hash.
    """
    entry = choose(model, source, **options)
    root = cache_root()
    out = converted_path(entry, root)
    if _converted(out):
        return out
    downloaded = download(entry, root, timeout=timeout)
    from kcnn.weights.importer import import_weights

    try:
        import_weights(entry.library, entry.model, downloaded, out, official=entry)
    except Exception as error:  # noqa: BLE001 (a broken file fails in its reader: h5py, safetensors, torch)
        if entry.hash_kind == "none":  # unchecked: the download itself may be what is broken
            os.remove(downloaded)
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{entry.url} was downloaded to {downloaded} but could not be converted: {message}"
                         f"{'; it was deleted' if entry.hash_kind == 'none' else ''}") from error
    return out
