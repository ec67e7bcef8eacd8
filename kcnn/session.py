"""Leaving the caller's session as it was found: Keras's global state and the random generators.

kcnn's training, tuning and export set the random seed, the dtype policy and (as keras-tuner
does between trials) clear the Keras session; called from a notebook, they must not change
what the caller has set. ``caller_state_kept()`` records, and gives back on exit: Keras's
global state (dtype policy, layer-name counters, the global random seed and generator; what
``keras.backend.clear_session`` replaces), Python's, NumPy's and TensorFlow's global random
generators.

>>> import random
>>> random.seed(3)
>>> expected = [random.random() for _ in range(2)]
>>> random.seed(3)
>>> first = random.random()
>>> with caller_state_kept():
...     random.seed(0)
>>> [first, random.random()] == expected
True
"""

import contextlib
import random

import keras
import numpy as np
from keras.src.backend.common import global_state  # private: the objects clear_session replaces
from keras.src.random.seed_generator import SeedGenerator
from tensorflow.python.eager import context  # private: TF's global seed and its op-seed sequence


def _copied(value):
    """A value of Keras's global state as it is now (containers copied, generators' states read)."""
    if isinstance(value, SeedGenerator):
        return value, keras.ops.convert_to_numpy(value.state)
    if isinstance(value, (dict, list, set)):
        return value, value.copy()
    return value, None


def _given_back(value, saved):
    if isinstance(value, SeedGenerator):
        value.state.assign(saved)
        return value
    return value if saved is None else saved


def _keras_state():
    trackers = (global_state.GLOBAL_STATE_TRACKER, global_state.GLOBAL_SETTINGS_TRACKER)
    return trackers, [{key: _copied(value) for key, value in vars(tracker).items()} for tracker in trackers]


def _restore_keras_state(saved):
    trackers, contents = saved
    global_state.GLOBAL_STATE_TRACKER, global_state.GLOBAL_SETTINGS_TRACKER = trackers
    for tracker, values in zip(trackers, contents):
        vars(tracker).clear()
        vars(tracker).update({key: _given_back(value, copy) for key, (value, copy) in values.items()})


def _tensorflow_seed():
    tf_context = context.context()
    rng = getattr(tf_context, "_rng", None)
    return tf_context._seed, rng.getstate() if rng is not None else None


def _restore_tensorflow_seed(saved):
    seed, rng_state = saved
    tf_context = context.context()
    if seed is None:
        tf_context._seed, tf_context._rng = None, None
        return
    tf_context._set_global_seed(seed)
    tf_context._rng.setstate(rng_state)


@contextlib.contextmanager
def caller_state_kept():
    """Runs the block, then gives the caller back Keras's global state and the random generators."""
    saved = (_keras_state(), random.getstate(), np.random.get_state(), _tensorflow_seed())
    try:
        yield
    finally:
        keras_state, python_state, numpy_state, tensorflow_seed = saved
        _restore_keras_state(keras_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        _restore_tensorflow_seed(tensorflow_seed)
