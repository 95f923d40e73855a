"""Grad-CAM throughput (images/s) against plain inference on the same images.

    .venv/bin/python benchmarks/bench_gradcam.py [--backbone mobilenet_v2] [--images 128]

Random 224x224 uint8 images (throughput does not depend on content), the training
code's model with random weights: (a) ``model.predict``; (b) ``training.gradcam.grad_cam``
(feature maps, one backward pass through the head, weighted sum) at the backbone's
declared last convolutional layer, same batch size. Prints images/s for each and (b)/(a).
Uses a GPU with mixed precision when TensorFlow sees one.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from melanoma.config import TrainConfig
from training.device import configure_device
from training.gradcam import grad_cam
from training.model import build_model, pooled_layer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    print(f"device: {configure_device()}")
    x = np.random.default_rng(0).integers(0, 256, (args.images, 224, 224, 3), dtype=np.uint8)
    model = build_model(TrainConfig(backbone=args.backbone), 224)
    layer = pooled_layer(model)

    model.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)  # warm up
    started = time.perf_counter()
    model.predict(x, batch_size=args.batch_size, verbose=0)
    t_predict = time.perf_counter() - started
    print(f"(a) inference: {args.images / t_predict:.1f} images/s")

    grad_cam(model, x[: args.batch_size], layer, args.batch_size)  # warm up
    started = time.perf_counter()
    maps = grad_cam(model, x, layer, args.batch_size)
    t_cam = time.perf_counter() - started
    print(f"(b) Grad-CAM at {layer}: {args.images / t_cam:.1f} images/s, maps {maps.shape[1:]}")
    print(f"ratio (b)/(a): {t_predict / t_cam:.2f}")


if __name__ == "__main__":
    main()
