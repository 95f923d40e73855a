"""Training throughput (images/s): phase 1 with and without feature caching, and phase 2
with and without a cached trunk.

    .venv/bin/python benchmarks/bench_training.py [--backbone mobilenet_v2] [--images 512] \
        [--epochs 3] [--unfreeze-blocks 3] [--views 4] [--precision auto] [--xla] \
        [--input 224x224]

On random uint8 images of ``--input`` (height x width, default 224x224) (throughput does not depend on content), with the
same model and code paths as training: (a) phase 1 plain, the full model with a
frozen backbone, each epoch through the backbone; (b) phase 1 cached, pooled features
computed once, then the head trained on them, counted over the same epochs; (c)
phase 2, the last ``--unfreeze-blocks`` blocks unfrozen, the whole model each step; (d)
the same phase 2 on a cached trunk (``phase2_cached_views``): the frozen trunk run once
per image and each of ``--views`` flips and rotations, then the top trained on the cache,
counted over the same epochs. Prints images/s for each, (b)/(a) and (d)/(c).

``--precision`` is training's setting (``auto``: mixed_float16 on a GPU, float32 on a
CPU); ``--xla`` compiles every fit with XLA (``jit_compile``), as training does on a GPU.
On a GPU, ``--backbone resnet50 --precision mixed_float16 --xla`` gives the figure to
hold against NVIDIA's published ResNet50 training throughput with AMP and XLA: about
2,400 images/s on one A100 (NVIDIA Deep Learning Examples, TensorFlow ResNet50 v1.5,
mixed precision, batch 256). Ours trains at batch 32 with a frozen backbone in phase 1,
so (a) and (c) bound it from below.

``--compare-threads`` runs the benchmark twice, in fresh processes (TensorFlow's thread
pools are fixed once it starts): with one thread (``MELANOMA_TF_THREADS=1``, the
baseline) and with every core (training's default), and prints the ratios.
``--compare-precision POLICY`` likewise runs it in float32 (the baseline) and in POLICY.
``--compare-input HxW`` runs it at 224x224 (the baseline) and at HxW: ``150x200`` is
training at HAM10000's own aspect and resolution (``image_size`` 150, ``image_width`` 200).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

import keras
import numpy as np

from melanoma.config import PRECISIONS, TrainConfig
from melanoma.images import dihedral_views
from training.device import configure_device, dtype_policy
from training.model import (
    build_model,
    feature_extractor,
    head_model,
    split_at_trainable,
    unfreeze_last_blocks,
)
from training.phases import trunk_outputs


def input_shape(text: str) -> tuple[int, int]:
    """``HxW`` (such as 150x200) as (height, width)."""
    height, _, width = text.partition("x")
    if not (height.isdigit() and width.isdigit()):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 150x200, got {text!r}")
    return int(height), int(width)


def timed_fit(model: keras.Model, x, y, epochs: int, batch_size: int, jit: bool) -> float:
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4), loss="binary_crossentropy", jit_compile=jit
    )
    model.fit(
        x[:batch_size], y[:batch_size], batch_size=batch_size, epochs=1, verbose=0
    )  # build and warm up
    started = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--unfreeze-blocks", type=int, default=3)
    parser.add_argument("--views", type=int, default=4, choices=[1, 2, 4, 8])
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument(
        "--xla", action="store_true", help="jit_compile every fit (default: on a GPU)"
    )
    parser.add_argument("--compare-threads", action="store_true")
    parser.add_argument("--compare-precision", choices=PRECISIONS[2:], metavar="POLICY")
    parser.add_argument("--input", type=input_shape, default=(224, 224), metavar="HxW")
    parser.add_argument("--compare-input", type=input_shape, metavar="HxW")
    args = parser.parse_args()
    if args.compare_threads:
        compare(
            [("1 thread", {"MELANOMA_TF_THREADS": "1"}, []), ("all cores", {}, [])],
            "--compare-threads",
        )
        return
    if args.compare_precision:
        variants = [("float32", {}, ["--precision", "float32"])]
        variants.append((args.compare_precision, {}, ["--precision", args.compare_precision]))
        compare(variants, "--compare-precision", args.compare_precision)
        return
    if args.compare_input:
        shape = "x".join(map(str, args.compare_input))
        variants = [("224x224", {}, ["--input", "224x224"]), (shape, {}, ["--input", shape])]
        compare(variants, "--compare-input", shape)
        return
    device = configure_device(args.precision)
    device["xla"] = device["xla"] or args.xla
    print(f"device: {device}")
    with dtype_policy(device["precision"]):
        measure(args, device)


def measure(args: argparse.Namespace, device: dict) -> None:
    """(a) to (d), under the dtype policy in force."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, *args.input, 3), dtype=np.uint8)
    y = (rng.random(args.images) < 0.15).astype("float32")
    seen = args.images * args.epochs

    plain = build_model(TrainConfig(backbone=args.backbone), args.input)
    t_plain = timed_fit(plain, x, y, args.epochs, args.batch_size, device["xla"])
    print(
        f"(a) phase 1 plain: {seen / t_plain:.1f} images/s ({args.epochs} epochs of {args.images})"
    )

    cached = build_model(TrainConfig(backbone=args.backbone), args.input)
    extractor = feature_extractor(cached)
    extractor.predict(x[: args.batch_size], verbose=0)
    started = time.perf_counter()
    features = extractor.predict(x, batch_size=64, verbose=0)
    t_features = time.perf_counter() - started
    t_head = timed_fit(head_model(cached), features, y, args.epochs, args.batch_size, device["xla"])
    t_cached = t_features + t_head
    print(
        f"(b) phase 1 cached: {seen / t_cached:.1f} images/s (features once {t_features:.1f}s, head {t_head:.1f}s)"
    )
    print(
        f"ratio cached / plain: {t_plain / t_cached:.2f}x over {args.epochs} epochs "
        f"(grows with epochs: the backbone runs once, not once per epoch)"
    )

    blocks = args.unfreeze_blocks
    unfreeze_last_blocks(cached, args.backbone, blocks)
    t_phase2 = timed_fit(cached, x, y, args.epochs, args.batch_size, device["xla"])
    print(
        f"(c) phase 2 ({blocks} blocks unfrozen): {seen / t_phase2:.1f} images/s; "
        f"ratio to phase 1 plain {t_plain / t_phase2:.2f}x"
    )

    split = split_at_trainable(cached)
    assert split is not None, f"{args.backbone} cannot be cut at {blocks} blocks"
    started = time.perf_counter()
    parts = [trunk_outputs(split, view) for view in dihedral_views(x, args.views)]
    t_trunk = time.perf_counter() - started
    # As CachedViewBatches serves them: each image in one of its views.
    view_of = rng.integers(0, args.views, args.images)
    inputs = [
        np.stack([p[i] for p in parts])[view_of, np.arange(args.images)]
        for i in range(len(parts[0]))
    ]
    t_top = timed_fit(
        split.top,
        inputs if len(inputs) > 1 else inputs[0],
        y,
        args.epochs,
        args.batch_size,
        device["xla"],
    )
    t_cached2 = t_trunk + t_top
    print(
        f"(d) phase 2 on a cached trunk ({args.views} views): {seen / t_cached2:.1f} images/s "
        f"(trunk once per view {t_trunk:.1f}s, top {t_top:.1f}s)"
    )
    print(
        f"ratio cached trunk / whole model, phase 2: {t_phase2 / t_cached2:.2f}x over {args.epochs} epochs"
    )


def compare(variants: list[tuple[str, dict[str, str], list[str]]], *drop: str) -> None:
    """The benchmark once per variant (a name, environment, extra arguments), each in a
    fresh process, the first the baseline; prints each figure's ratio to the baseline's."""
    argv = [a for a in sys.argv[1:] if a not in drop]
    rates: dict[str, list[float]] = {}
    for name, env, extra in variants:
        out = subprocess.run(
            [sys.executable, __file__, *argv, *extra],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        print(f"--- {name}\n{out}", end="")
        rates[name] = [float(x) for x in re.findall(r"^\(\w\) .*?: ([\d.]+) images/s", out, re.M)]
    (baseline, base), (name, other) = ((v[0], rates[v[0]]) for v in variants)
    for label, one, every in zip(("(a)", "(b)", "(c)", "(d)"), base, other, strict=True):
        print(f"{label} {name} / {baseline}: {every / one:.2f}x")


if __name__ == "__main__":
    main()
