"""Hardware profiles: the defaults that fit the machine that trains.

A run on a 2-core CPU and a run on a GPU want different models: ResNet50 fine-tuned for
20 epochs takes minutes on a GPU and many hours on a CPU. Each profile's defaults are in
one table here, ``PROFILES``. The ``profile`` param picks one: ``cpu``, ``gpu``, or
``auto``, which asks TensorFlow on the worker that trains (the ``gpu`` queue under
compose) whether it sees a GPU. A param given explicitly always wins over the profile;
a setting the environment supplies (``MELANOMA_BACKBONE``) wins over it too.

This module is pure: which GPUs there are is passed in. Research use only, not a
diagnostic device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PROFILE_CHOICES = ("auto", "cpu", "gpu")

# Setting name -> value, per profile. The cpu profile is the configuration chosen on a
# 2-core CPU on LOSO and the acquisition-shift yardstick (docs/results.md): MobileNetV2
# at HAM10000's own 150x200, its head on cached multiscale features, then its top 4
# blocks fine-tuned on a cached trunk. The gpu profile is the product's default:
# ResNet50 at 224x224, fine-tuned on online-augmented images.
PROFILES: Mapping[str, Mapping[str, Any]] = {
    "cpu": {
        "backbone": "mobilenet_v2",
        "image_size": 150,
        "image_width": 200,
        "phase1_epochs": 40,
        "phase2_epochs": 6,
        "unfreeze_blocks": 4,
        "phase2_learning_rate": 1e-4,
        "phase2_schedule": "cosine",
        "phase2_cached_views": 4,
        "multiscale_features": True,
    },
    "gpu": {
        "backbone": "resnet50",
        "image_size": 224,
        "image_width": 0,
        "phase1_epochs": 10,
        "phase2_epochs": 20,
        "unfreeze_blocks": 3,
        "phase2_learning_rate": 1e-5,
        "phase2_schedule": "constant",
        "phase2_cached_views": 0,
        "multiscale_features": False,
    },
}

# Settings that follow another: a run that gives ``image_size`` and leaves ``image_width``
# empty asks for a square input of that size, not the profile's width beside its own height.
FOLLOWS: Mapping[str, str] = {"image_width": "image_size"}

# The settings a profile sets: the same in every profile.
PROFILED: frozenset[str] = frozenset(PROFILES["gpu"])


def choose_profile(requested: str, gpus: Sequence[str]) -> tuple[str, str]:
    """The profile to run (``cpu`` or ``gpu``) and why, in words, for ``requested``
    (the ``profile`` param) and the GPUs the training worker's TensorFlow lists."""
    if requested not in PROFILE_CHOICES:
        raise ValueError(f"profile {requested!r} is not one of {', '.join(PROFILE_CHOICES)}")
    if requested != "auto":
        return requested, f"the profile param is {requested}"
    if gpus:
        return (
            "gpu",
            f"TensorFlow on the training worker sees {len(gpus)} GPU(s): {', '.join(gpus)}",
        )
    return "cpu", "TensorFlow on the training worker sees no GPU"


def resolved_profile(
    requested: str | None, recorded: Mapping[str, Any] | None, detected: str | None
) -> str:
    """The run's profile, ``cpu`` or ``gpu``: the param when it names one; for ``auto``
    (or empty), the profile the run recorded at its split, else the one ``choose_profile``
    detected, else ``gpu``, the profile the stage configs' own defaults are."""
    if requested and requested != "auto":
        return choose_profile(requested, [])[0]  # refuses a name that is no profile
    if recorded and recorded.get("profile") in PROFILES:
        return str(recorded["profile"])
    return detected or "gpu"
