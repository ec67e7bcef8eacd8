"""TensorFlow's C++ start-up chatter kept off the terminal, unless ``kcnn --verbose`` (or ``KCNN_VERBOSE=1``).

TensorFlow prints lines while it loads (absl's "log messages before absl::InitializeLog() ...", oneDNN,
the CUDA stubs, CPU features) and an error-level one on its first operation without a GPU driver
(cuInit). ``TF_CPP_MIN_LOG_LEVEL=3`` silences those printed once its logging is set up; those printed
before it can only be kept off the process's stderr: while ``tensorflow`` loads, file descriptor 2 goes
to ``/dev/null`` and comes back when the import returns or raises (kcnn's own messages, and Python
tracebacks, come after it on the real stderr).

The ``kcnn`` group calls :func:`configure` before any command runs. It imports nothing heavy: it sets the
log level and installs an import hook, so that TensorFlow loads quietly when (and only if) a command
imports it, whichever module does (keras, kcnn.train, ...); ``--help``, usage errors and the commands
that need no TensorFlow stay quick.
"""

import contextlib
import importlib.abc
import os
import sys

_TF_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
_QUIET_LEVEL = "3"  # errors too: the cuInit failure on machines without a GPU driver is error-level
_VERBOSE_LEVEL = "0"


@contextlib.contextmanager
def stderr_to_devnull():
    """The process's file descriptor 2 (C/C++ code's stderr, Python's too) on /dev/null for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _set_log_level(level):
    """TensorFlow's C++ log level for when it loads, unless the user chose one (``kcnn`` notes that)."""
    import kcnn  # light: the package itself

    if not kcnn._TF_LOG_LEVEL_GIVEN:
        os.environ[_TF_LOG_LEVEL] = level


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as the other finders do and loads it inside :func:`stderr_to_devnull`,
    whoever imports it first (keras, kcnn.train, ...); then leaves ``sys.meta_path``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                loader_exec = spec.loader.exec_module

                def exec_module(module):
                    try:
                        with stderr_to_devnull():
                            loader_exec(module)
                    finally:
                        uninstall()

                spec.loader.exec_module = exec_module  # this spec's own loader instance
            return spec
        return None


_HOOK = _QuietTensorFlow()


def uninstall():
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def configure(verbose):
    """Before a command runs: verbose, TensorFlow logs as it prints them; else TF_CPP_MIN_LOG_LEVEL=3
    and TensorFlow's import, whenever a command makes it, with stderr on /dev/null. No effect once
    TensorFlow is loaded (as in tests that run the CLI in-process)."""
    if "tensorflow" in sys.modules:
        return
    if verbose:
        uninstall()
        _set_log_level(_VERBOSE_LEVEL)
        return
    _set_log_level(_QUIET_LEVEL)
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
