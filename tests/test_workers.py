"""Several workers = one worker: two local workers (TF_CONFIG on 127.0.0.1) with global batch B end with the
weights one process gets with batch B, for classification (LeNet-5, SGD) and segmentation (a U-Net with
BatchNormalization, synchronized over the replicas, and Adam)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kcnn
from kcnn.tasks import load_task_model

PRETRAIN = ["pretrain", "--model", "lenet5", "--dataset", "digits", "--recipe", "small", "--steps", "12",
            "--precision", "fp32", "--checkpoint-every", "5"]
FINETUNE = ["finetune", "--backbone", "resnet20", "--task", "segmentation", "--head", "unet", "--head-option",
            "width=16", "--dataset", "shapes", "--image-size", "32", "--steps", "6", "--set", "batch_size=8",
            "--precision", "fp32"]


def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _kcnn(arguments, out, **environment):
    return subprocess.Popen([sys.executable, "-m", "kcnn.cli", *arguments, "--out", str(out)],
                            env={**os.environ, **environment}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _two_workers(arguments, out):
    """``kcnn ARGUMENTS --out OUT`` as the two workers of a local cluster."""
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    # One intra-op thread each: two TF processes on this project's 2 cores otherwise oversubscribe them,
    # every collective (a synchronized BatchNormalization makes ~100 a step) waits for a descheduled peer,
    # and the segmentation run takes 30 to 160 s instead of about 25.
    processes = [_kcnn([*arguments, "--strategy", "multiworker"], out, TF_NUM_INTRAOP_THREADS="1",
                       TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                             "task": {"type": "worker", "index": index}}))
                 for index in range(2)]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]


def _one_process(arguments, out):
    process = _kcnn([*arguments, "--strategy", "default"], out)
    output = process.communicate(timeout=300)[0]
    assert process.returncode == 0, output[-2000:]


def _assert_close(got, expected, *, rtol, atol):
    """Every variable (BatchNormalization's moving statistics too) of two models of one architecture."""
    assert [v.path for v in got.weights] == [v.path for v in expected.weights]
    for a, b in zip(got.weights, expected.weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=a.path)


def _assert_equal(got, expected):
    for a, b in zip(got.weights, expected.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_two_local_workers_end_with_the_weights_of_one_worker(tmp_path):
    _two_workers(PRETRAIN, tmp_path / "run")
    _one_process(PRETRAIN, tmp_path / "single")
    chief = kcnn.build("lenet5", weights=tmp_path / "run" / "model.weights.h5")
    other = kcnn.build("lenet5", weights=tmp_path / "run" / "workers" / "worker-1" / "model.weights.h5")
    _assert_equal(chief, other)  # the workers hold one model
    # Each global batch of 64 is split in two halves of 32 (Loop.distribute): the same examples, the same
    # mean loss, only summed in another order (two partial sums, then an all-reduce of the gradients).
    # Measured after the 12 SGD steps: max |two workers - one process| 9e-8 (3.6e-7 with the workers on two
    # intra-op threads each), about as far as one process is from itself with oneDNN off (2.7e-7) or on
    # one thread (4.8e-7); max |w| is 0.65. The bound 2e-6 + 1e-6 |w| is ~5x the largest of these. A wrong
    # split (sharding off: both workers on the same half-batch at every step) misses it 40000-fold (0.08).
    _assert_close(chief, kcnn.build("lenet5", weights=tmp_path / "single" / "model.weights.h5"),
                  rtol=1e-6, atol=2e-6)
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["step"] == 12
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["step-000000005", "step-000000010",
                                                                     "step-000000012"]


def test_two_local_workers_segment_like_one_worker_with_synchronized_batch_norm(tmp_path):
    _two_workers(FINETUNE, tmp_path / "run")
    _one_process(FINETUNE, tmp_path / "single")
    chief = load_task_model(tmp_path / "run" / "model.weights.h5")
    _assert_equal(chief, load_task_model(tmp_path / "run" / "workers" / "worker-1" / "model.weights.h5"))
    # Batch statistics over the global batch of 8 (synchronized BatchNormalization: an all-reduce of sums
    # and squared sums, E[x^2] - E[x]^2, where one process takes tf.nn.moments' two passes) and Adam, whose
    # first steps divide each gradient by its own magnitude: float32 rounding differences grow step by
    # step. Measured max |two workers - one process| over the trainable weights: 6e-6 after 1 step, 1.6e-4
    # after 3, 7.8e-4 after 6; over the moving statistics after 6: 3.6e-3 on a variance of 2.8, 2.1e-3 on a
    # mean of -0.55. One process differs from itself about as much with oneDNN off (6.1e-4; 1.9e-3). The
    # bound 5e-3 + 5e-3 |w| is 3.6x the closest of these (that moving mean), 6x the trainable weights'
    # difference. Unsynchronized BatchNormalization misses it 90-fold (1.4e-2 on the trainable weights,
    # 1.6 on a moving variance): the two workers would normalise by their halves' statistics.
    _assert_close(chief, load_task_model(tmp_path / "single" / "model.weights.h5"), rtol=5e-3, atol=5e-3)
    assert json.loads((tmp_path / "run" / "history.json").read_text())[-1]["step"] == 6


def test_a_last_validation_batch_smaller_than_the_workers_leaves_one_worker_empty_handed(tmp_path):
    # 359 validation digits at batch 179: the last batch holds 1 image, and worker 1's share is empty
    arguments = ["pretrain", "--model", "lenet5", "--dataset", "digits", "--recipe", "small", "--steps", "2",
                 "--set", "batch_size=179", "--precision", "fp32"]
    _two_workers(arguments, tmp_path / "run")
    _one_process(arguments, tmp_path / "single")
    workers, single = (json.loads((tmp_path / run / "history.json").read_text())[-1] for run in ("run", "single"))
    # every validation image counted once: the same loss as one process's (weights within 1e-6, as above)
    assert workers["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    assert workers["val_top1"] == pytest.approx(single["val_top1"], abs=1e-4)
