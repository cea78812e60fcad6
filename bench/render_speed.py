#!/usr/bin/env python3
"""Renderer speed: seconds per frame at a given size, median over timed batches after a warm-up.

    python bench/render_speed.py [--size 256] [--batches 3] [--batch-size 2] [--device cpu] [--dtype float32]

Uses synthetic weights (speed does not depend on the values) and a fixed random source image and
coefficients. Prints the per-clip source work once, then per-batch times split into the mapping net +
keypoint transformation and the generator, and the median s/frame.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--size", type=int, default=256, choices=(256, 512))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    args = parser.parse_args()

    from sadtalker.loader import Models
    from sadtalker.render.animate import source_image_array
    from sadtalker.render.windows import semantic_windows, source_semantics

    models = Models()
    animator = models.animator(args.size, "crop", args.device, args.dtype)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(args.size, args.size, 3), dtype=np.uint8)
    source = rng.normal(size=73).astype(np.float32)
    coeffs = (source[None, :70] + 0.1 * rng.normal(size=(64, 70))).astype(np.float32)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    animator.set_source(source_image_array(image), source_semantics(source, animator.coeff_nc))
    sync()
    print(f"source (once per clip): {time.perf_counter() - start:.3f} s")
    times, split = [], []
    with animator.inference_context():
        for step in range(args.batches + 1):  # the first batch is a warm-up
            frames = np.arange(step * args.batch_size, (step + 1) * args.batch_size)
            windows = torch.from_numpy(semantic_windows(coeffs, frames)).to(animator.device)
            t0 = time.perf_counter()
            _, kp_driving = animator.driving_keypoints(windows)
            sync()
            t1 = time.perf_counter()
            animator.render(kp_driving)
            sync()
            t2 = time.perf_counter()
            if step:
                times.append((t2 - t0) / args.batch_size)
                split.append(((t1 - t0) / args.batch_size, (t2 - t1) / args.batch_size))
    mapping = statistics.median(s[0] for s in split)
    generator = statistics.median(s[1] for s in split)
    print(f"device {args.device} dtype {args.dtype} size {args.size} batch {args.batch_size} threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    print(f"per frame: mapping+keypoints {mapping:.3f} s, generator {generator:.3f} s")
    spread = f"min {min(times):.3f}, max {max(times):.3f}, n={len(times)}"
    print(f"median {statistics.median(times):.3f} s/frame ({spread})")


if __name__ == "__main__":
    main()
