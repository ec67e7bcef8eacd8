"""What this machine offers: the mixed-precision policy and the tf.distribute strategy to train with.

``auto`` precision: float16 on GPUs with tensor cores (compute capability 7.0+),
bfloat16 on TPUs and on CPUs with AVX512-BF16 or AMX, float32 otherwise.
``auto`` strategy: multi-worker when ``TF_CONFIG`` names several workers, mirrored
over several local GPUs, else the default strategy.

>>> resolve_precision("fp32")
'float32'
>>> resolve_precision("mixed_bfloat16", flags=set())
'mixed_bfloat16'
>>> resolve_precision("auto", gpus=[], flags={"avx512_bf16"})
'mixed_bfloat16'
"""

import json
import os

import tensorflow as tf

PRECISIONS = ("auto", "fp32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags():
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _tensor_core_gpus(gpus):
    capable = []
    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if tuple(capability) >= (7, 0):
            capable.append(gpu)
    return capable


def resolve_precision(precision, *, gpus=None, flags=None):
    """``auto|fp32|mixed_float16|mixed_bfloat16`` -> a Keras dtype policy name."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "float32"
    if precision != "auto":
        return precision
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    if gpus:
        return "mixed_float16" if _tensor_core_gpus(gpus) else "float32"
    if tf.config.list_logical_devices("TPU"):
        return "mixed_bfloat16"
    flags = cpu_flags() if flags is None else flags
    return "mixed_bfloat16" if any(flag in flags for flag in BF16_CPU_FLAGS) else "float32"


def _workers_in_tf_config():
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    return len(config.get("cluster", {}).get("worker", []))


def resolve_strategy(name="auto"):
    """A ``tf.distribute`` strategy by name (see the module docstring for ``auto``)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; accepted: {', '.join(STRATEGIES)}")
    if name == "auto":
        if _workers_in_tf_config() > 1:
            name = "multiworker"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multiworker":
        if not _workers_in_tf_config():
            raise ValueError("the multiworker strategy needs TF_CONFIG with a cluster of workers")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def strategy_name(strategy):
    """The name of a resolved strategy, one of ``STRATEGIES`` but ``auto`` (what ``config.json`` records)."""
    kinds = {tf.distribute.MultiWorkerMirroredStrategy: "multiworker", tf.distribute.MirroredStrategy: "mirrored",
             tf.distribute.TPUStrategy: "tpu"}
    return next((name for kind, name in kinds.items() if isinstance(strategy, kind)), "default")


def is_chief(strategy):
    """Whether this process writes checkpoints and logs (task 0 of a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)
