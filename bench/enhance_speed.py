#!/usr/bin/env python3
"""Face enhancer speed (GFPGAN v1.4, ``enhancer: gfpgan``) against the renderer's, measured in one run.

    python bench/enhance_speed.py [--batch-sizes 1 4 8] [--batches 1] [--frame-size 256]
                                  [--render-batches 1] [--render-batch-size 2] [--device cpu cuda]

Synthetic weights (speed does not depend on the values): the full-size v1.4 network, built in memory, and
the renderer at 256 px from the synthetic SadTalker files (written to the weights cache on first use).
For each device (default: the CPU, and CUDA when there is one): one warm-up frame, then ``--batches`` timed
batches of ``enhance_frames`` on random ``frame-size`` x ``frame-size`` uint8 frames at each batch size
(resize to 512 and back, network, uint8 conversion included); then the renderer (mapping net + keypoints +
generator, as ``bench/run.py --only render`` times it) on the same device. Prints frames/s and s/frame of
each, and the enhancer's cost relative to the renderer's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def enhancer_speed(device: str, batch_sizes: list[int], batches: int, frame_size: int) -> dict[int, float]:
    """``{batch size: frames per second}`` of ``enhance_frames`` with the full v1.4 network on ``device``."""
    from sadtalker.enhance.frames import enhance_frames
    from sadtalker.enhance.gfpgan import V14, GFPGANv1Clean, synthetic_gfpgan_state
    from sadtalker.weights.loading import load_strict

    net = load_strict(GFPGANv1Clean(V14), synthetic_gfpgan_state(V14, 0), "GFPGAN v1.4").eval().to(device)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(max(batch_sizes), frame_size, frame_size, 3), dtype=np.uint8)
    enhance_frames(frames[:1], net, device)  # warm-up
    _sync(device)
    speeds = {}
    for batch in batch_sizes:
        start = time.perf_counter()
        for _ in range(batches):
            enhance_frames(frames[:batch], net, device, batch_size=batch)
        _sync(device)
        elapsed = time.perf_counter() - start
        speeds[batch] = batch * batches / elapsed
        per_frame = 1 / speeds[batch]
        print(f"  enhancer {device} batch {batch}: {speeds[batch]:.3f} frames/s ({per_frame:.2f} s/frame)")
    del net
    return speeds


def renderer_speed(device: str, batches: int, batch_size: int) -> float:
    """Frames per second of the 256 px renderer (synthetic weights) on ``device``, after a warm-up batch
    (:func:`bench.render.measure`, as ``bench/run.py --only render`` times it)."""
    from bench.common import models_holder
    from bench.render import measure

    result = measure(models_holder("synthetic"), 256, device, "float32", [batch_size], batches, warmup=1)
    speed = result["best"]["fps"]
    print(f"  renderer {device} 256 px batch {batch_size}: {speed:.3f} frames/s ({1 / speed:.2f} s/frame)")
    return speed


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--batches", type=int, default=1, help="timed batches per batch size")
    parser.add_argument("--frame-size", type=int, default=256, help="side of the input frames")
    parser.add_argument("--render-batches", type=int, default=1)
    parser.add_argument("--render-batch-size", type=int, default=2)
    parser.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda when available")
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices {', '.join(devices)}")
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
        print(f"{device} ({name}):")
        enhance = enhancer_speed(device, args.batch_sizes, args.batches, args.frame_size)
        render = renderer_speed(device, args.render_batches, args.render_batch_size)
        best = max(enhance, key=enhance.get)
        print(
            f"  => enhancer at batch {best} costs {render / enhance[best]:.2f}x the renderer's time/frame "
            f"(renderer + enhancer: {1 / (1 / render + 1 / enhance[best]):.3f} frames/s)"
        )


if __name__ == "__main__":
    main()
