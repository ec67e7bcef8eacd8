"""RoIAlign speed, kcnn's (``tf.image.crop_and_resize`` on pairs of samples) against torchvision's C++ kernel.

One implementation per process, so that ``farm-bench`` can time the two in turn:

    farm-bench --vs '.venv/bin/python benchmarks/roi_align_vs_torchvision.py torchvision' -- \\
        .venv/bin/python benchmarks/roi_align_vs_torchvision.py kcnn

Each process pools Faster R-CNN's training RoIs of kcnn's from-scratch defaults (16 images at 96x96, 128 RoIs
each, 64-channel P2-P5 maps, 7x7 bins, 2x2 samples; kcnn ``aligned=True``, torchvision's pooler
``aligned=False``, the same work) forward and backward ``ROUNDS`` times
after one warm-up round, and prints the median milliseconds per round (the figure to compare: farm-bench times the
whole process, TensorFlow's or torch's start-up included). The RoIs are the same in both (a seeded
numpy draw), as are the maps. Needs torch and torchvision (``make test-parity`` installs them).
"""

import statistics
import sys
import time

import numpy as np

BATCH, ROIS, CHANNELS, SIZE = 16, 128, 64, 96
ROUNDS = 200  # about 10 s of pooling a process: more than its start-up, which farm-bench times too


def inputs():
    rng = np.random.default_rng(0)
    maps = {level: rng.normal(size=(BATCH, SIZE // 2**level, SIZE // 2**level, CHANNELS)).astype("float32")
            for level in (2, 3, 4, 5)}
    start = rng.uniform(0, SIZE * 0.8, (BATCH, ROIS, 2))
    sides = np.exp(rng.uniform(np.log(4), np.log(SIZE), (BATCH, ROIS, 2)))
    boxes = np.concatenate([start, np.minimum(start + sides, SIZE)], -1).astype("float32")  # yxyx
    return maps, boxes


def kcnn_round():
    import tensorflow as tf

    from kcnn.tasks.roi_align import roi_align

    maps, boxes = inputs()
    variables = {level: tf.Variable(value) for level, value in maps.items()}
    # a tensor, as the model's proposals are: a numpy array would be folded into the graph as a constant, and
    # TensorFlow's constant folding of the box arithmetic makes that graph 25 times slower (measured)
    boxes = tf.constant(boxes)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(roi_align(variables, boxes, output_size=(7, 7), sampling_ratio=2) ** 2)
        return tape.gradient(loss, list(variables.values()))

    return lambda: [g.numpy() for g in step()]


def torchvision_round():
    sys.modules.setdefault("triton", None)  # see tests/test_parity_torchvision.py
    import torch
    import torchvision

    maps, boxes = inputs()
    tensors = {f"p{level}": torch.from_numpy(value).permute(0, 3, 1, 2).contiguous().requires_grad_()
               for level, value in maps.items()}
    rois = [torch.from_numpy(image[:, [1, 0, 3, 2]]) for image in boxes]
    pool = torchvision.ops.MultiScaleRoIAlign(list(tensors), 7, 2)

    def step():
        for tensor in tensors.values():
            tensor.grad = None
        pool(tensors, rois, [(SIZE, SIZE)] * BATCH).pow(2).sum().backward()
        return [tensor.grad for tensor in tensors.values()]

    return step


def main(which):
    step = {"kcnn": kcnn_round, "torchvision": torchvision_round}[which]()
    step()  # warm-up: tracing, first allocations
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    print(f"{which}: {1000 * statistics.median(times):.1f} ms per forward + backward round (median of {ROUNDS})")


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("kcnn", "torchvision"):
        sys.exit("usage: roi_align_vs_torchvision.py kcnn|torchvision")
    main(sys.argv[1])
