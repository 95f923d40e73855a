"""The device TensorFlow trains on: its CPU threads, and on a GPU mixed precision and XLA.
Research use only, not a diagnostic device.
"""

from __future__ import annotations

import os
from typing import Any

import keras
import tensorflow as tf


def cpu_threads(environ: dict[str, str] | None = None) -> int:
    """The CPU threads TensorFlow may use: ``MELANOMA_TF_THREADS`` or every core this
    process may run on (its affinity, which a container's cpuset narrows)."""
    env = os.environ if environ is None else environ
    if env.get("MELANOMA_TF_THREADS"):
        return max(1, int(env["MELANOMA_TF_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_device() -> dict[str, Any]:
    """Every core for TensorFlow's ops; mixed precision and XLA on a GPU, float32 on a CPU.

    The thread pools are set before TensorFlow starts its runtime: after, they are fixed.
    """
    threads = cpu_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime already started (a second call in one process)
        threads = tf.config.threading.get_intra_op_parallelism_threads() or threads
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        keras.mixed_precision.set_global_policy("float32")
    return {
        "gpu": bool(gpus),
        "devices": [d.name for d in gpus] or ["CPU"],
        "precision": keras.mixed_precision.global_policy().name,
        "xla": bool(gpus),
        "cpu_threads": threads,
    }
