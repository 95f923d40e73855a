"""The device TensorFlow trains on: its CPU threads, its numeric precision and XLA.
Research use only, not a diagnostic device.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf

from melanoma.profiles import choose_profile

log = logging.getLogger(__name__)


def cpu_threads(environ: dict[str, str] | None = None) -> int:
    """The CPU threads TensorFlow may use: ``MELANOMA_TF_THREADS`` or every core this
    process may run on (its affinity, which a container's cpuset narrows)."""
    env = os.environ if environ is None else environ
    if env.get("MELANOMA_TF_THREADS"):
        return max(1, int(env["MELANOMA_TF_THREADS"]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_run_profile(requested: str | None) -> dict[str, str]:
    """The run's hardware profile and why (``melanoma.profiles``), as the ``choose_profile``
    task returns it: for ``auto``, from the GPUs this process's TensorFlow lists."""
    requested = requested or "auto"
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")] if requested == "auto" else []
    name, why = choose_profile(requested, gpus)
    log.info("hardware profile %s: %s", name, why)
    return {"name": name, "why": why}


def resolve_precision(precision: str, gpu: bool) -> str:
    """The Keras dtype policy for a ``precision`` setting: ``auto`` is mixed_float16 on a
    GPU (Micikevicius et al., "Mixed Precision Training", ICLR 2018) and float32 on a CPU,
    where float16 has no fast kernels; an explicit policy is taken as given."""
    if precision == "auto":
        return "mixed_float16" if gpu else "float32"
    return precision


def configure_device(precision: str = "auto") -> dict[str, Any]:
    """Every core for TensorFlow's ops; the dtype policy ``precision`` resolves to here,
    and XLA on a GPU. Nothing global changes but the threads: training sets the policy
    with :func:`dtype_policy` for as long as it builds and fits.

    The thread pools are set before TensorFlow starts its runtime: after, they are fixed.
    """
    threads = cpu_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime already started (a second call in one process)
        threads = tf.config.threading.get_intra_op_parallelism_threads() or threads
    gpus = tf.config.list_physical_devices("GPU")
    return {
        "gpu": bool(gpus),
        "devices": [d.name for d in gpus] or ["CPU"],
        "precision": resolve_precision(precision, bool(gpus)),
        "xla": bool(gpus),
        "cpu_threads": threads,
    }


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Keras' global dtype policy ``name`` inside the block, the previous one after it.

    Layers and models take the policy when they are made, and ``compile`` wraps the
    optimizer in a ``LossScaleOptimizer`` for a mixed_float16 model, so the model is
    built, compiled and fitted inside the block. A model loaded later keeps its layers'
    policies (they are saved with it).
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
