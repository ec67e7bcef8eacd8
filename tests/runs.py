"""Comparing two run directories: what an interrupted-and-resumed run must share with an uninterrupted one."""

import json
import os

import h5py
import numpy as np

from kcnn.train.checkpoints import ARRAYS, latest

TIMING = ("images_per_second",)  # wall-clock figures: the only history values two runs may not share


def history(run):
    return json.loads(open(os.path.join(run, "history.json"), encoding="utf-8").read())


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as stream:
        stream.visititems(lambda name, item: arrays.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return arrays


def assert_identical_runs(run, reference):
    """History (but timing), final weights and the last checkpoint's optimizer and seed state, bit for bit."""
    rows, expected = history(run), history(reference)
    assert [{k: v for k, v in row.items() if k not in TIMING} for row in rows] == \
           [{k: v for k, v in row.items() if k not in TIMING} for row in expected]
    weights, expected_weights = _h5_arrays(os.path.join(run, "model.weights.h5")), \
        _h5_arrays(os.path.join(reference, "model.weights.h5"))
    assert sorted(weights) == sorted(expected_weights)
    for name, value in expected_weights.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    last, expected_last = (latest(os.path.join(path, "checkpoints")) for path in (run, reference))
    assert os.path.basename(last) == os.path.basename(expected_last)
    with np.load(os.path.join(last, ARRAYS)) as state, np.load(os.path.join(expected_last, ARRAYS)) as wanted:
        assert sorted(state.files) == sorted(wanted.files)
        for name in wanted.files:
            np.testing.assert_array_equal(state[name], wanted[name], err_msg=name)
