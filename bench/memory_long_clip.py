#!/usr/bin/env python3
"""Peak memory of the one-pair path for a short and a long clip: it must not grow with the clip's length.

    python bench/memory_long_clip.py [--short 10] [--long 600] [--real-frames 0]

Each clip runs in a fresh subprocess (peak RSS = ``ru_maxrss``) through the real pipeline: image loading,
face detection, 3DMM, audio decoding, mel windows, ExpNet and PoseVAE over the whole clip, the mapping net
and keypoint transformation for every frame, uint8 conversion, the streaming H.264 + AAC encode and the
QC probe. Only the generator's forward (1.2 TFLOP per 256 px frame, 10-20 s on 2 CPU cores) is replaced by
a stand-in that returns the source image, so a 10-minute clip (15,000 frames) finishes in minutes; its
memory per batch is fixed by the batch size, not by the clip. ``--real-frames N`` also runs a clip of N
frames with the real generator to show its (constant) footprint.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import numpy as np, soundfile
from sadtalker.options import RenderOptions
from sadtalker.pipeline import render_pair
seconds, stand_in, image, out = float(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], sys.argv[4]
wav = out + ".wav"
t = np.arange(int(seconds * 16000)) / 16000
speech = 0.2 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
soundfile.write(wav, speech.astype(np.float32), 16000, subtype="PCM_16")
if stand_in:
    from sadtalker.render.generator import OcclusionAwareSPADEGenerator
    def source_only(self, features, kp_source, kp_driving):
        return self._stand_in.expand(kp_driving.shape[0], -1, -1, -1)
    real_encode = OcclusionAwareSPADEGenerator.encode_source
    def encode(self, image):
        self._stand_in = image
        return real_encode(self, image)
    OcclusionAwareSPADEGenerator.encode_source = encode
    OcclusionAwareSPADEGenerator.forward_from_features = source_only
start = time.perf_counter()
result = render_pair(image, wav, out, RenderOptions(batch_size=2))
print(json.dumps({"seconds": seconds, "frames": result.num_frames, "wall_s": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "qc": "; ".join(result.qc["problems"]) or "ok"}))
"""


def run(seconds: float, stand_in: bool, image: Path, folder: Path) -> dict:
    out = folder / f"clip_{seconds:g}s_{int(stand_in)}.mp4"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(seconds), "1" if stand_in else "0", str(image), str(out)],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--short", type=float, default=10.0, help="seconds of the short clip")
    parser.add_argument("--long", type=float, default=600.0, help="seconds of the long clip")
    parser.add_argument("--real-frames", type=int, default=0, help="also N real frames")
    parser.add_argument("--image", type=Path, default=REPO / "tests" / "data" / "portrait.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run(args.short, True, args.image, Path(tmp)), run(args.long, True, args.image, Path(tmp))]
        if args.real_frames:
            rows.append(run(args.real_frames / 25, False, args.image, Path(tmp)))
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"# {started}  peak RSS per clip (fresh process each), generator stand-in except the last row")
    print("# (QC rightly reports the stand-in's output as a frozen video)")
    for row in rows:
        print(f"{row['seconds']:>7.1f} s  {row['frames']:>6} frames  peak {row['peak_rss_mb']:7.0f} MB  "
              f"wall {row['wall_s']:6.1f} s  QC: {row['qc']}")  # fmt: skip
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"long/short peak RSS ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
