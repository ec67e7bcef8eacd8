"""Files others watch appear whole: written beside their destination, then renamed into place.

>>> import os, tempfile
>>> target = os.path.join(tempfile.mkdtemp(), "run", "history.weights.h5")
>>> with atomic_path(target) as partial:
...     _ = open(partial, "w").write("weights")
...     print(os.path.basename(partial).startswith(".history.partial-"), partial.endswith(".weights.h5"),
...           os.path.exists(target))
True True False
>>> os.listdir(os.path.dirname(target))
['history.weights.h5']
"""

import contextlib
import json
import os


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside ``path`` (same suffixes, which writers such as Keras and matplotlib
    read) and renames it to ``path`` when the block succeeds; on failure nothing is left behind."""
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    stem, dot, suffixes = name.partition(".")
    partial = os.path.join(directory, f".{stem}.partial-{os.getpid()}{dot}{suffixes}")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def write_text(path, write):
    """Atomically writes ``path`` with ``write(stream)`` (a text stream)."""
    with atomic_path(path) as partial, open(partial, "w", encoding="utf-8", newline="") as stream:
        write(stream)


def write_json(path, value):
    write_text(path, lambda stream: json.dump(value, stream, indent=1))
