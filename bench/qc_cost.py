#!/usr/bin/env python3
"""What QC costs against the render it checks, and whether it keeps up with a fast renderer.

    python bench/qc_cost.py [--seconds 0.2] [--long 10 60] [--repeats 3] [--json out.json]

1. **Same clip** (the issue's budget: QC at most 10 % of the render time at 256 on these CPUs): renders
   ``--seconds`` of tests/data/speech.wav from tests/data/portrait.png at 256 px / crop with the real
   pipeline (synthetic weights: the cost does not depend on the values), then runs the pipeline's full QC
   (:func:`sadtalker.pipeline.quality_check`, exactly what the batch's QC task runs) on the written file:
   once cold (dlib models loading) and ``--repeats`` times warm. Prints render seconds, QC seconds and the
   ratio (median of the warm runs; the cold one separately).
2. **Throughput on long clips**: the rendered clip looped to ``--long`` seconds (video and speech, ffmpeg
   ``-stream_loop``; coefficients tiled), QC'd warm. QC samples frames for the face metrics and decodes
   at most 256 px on the long side, so its cost grows slowly with the clip; the figure that matters for a
   GPU worker is QC **video frames per second** per QC task, against the renderer's frames per second: the
   batch runs a row's QC as its own task, overlapping the next row's render, so QC keeps up when
   ``concurrent QC tasks x QC frames/s >= renderer frames/s``. The script prints how many concurrent QC
   tasks a renderer of 100, 300 and 1000 frames/s needs.

Everything runs in this one process, one after the other (same machine state); medians of ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"


def _loop(src: Path, audio: Path, seconds: float, out: Path) -> None:
    """``src`` (its audio dropped) and ``audio``, both looped and cut to ``seconds``, muxed to ``out``."""
    import ffmpeg as ffmpeg_python

    from sadtalker.video.ffmpeg import run_ffmpeg

    video = ffmpeg_python.input(str(src), stream_loop=-1)["v"]
    sound = ffmpeg_python.input(str(audio), stream_loop=-1)["a"]
    looped = ffmpeg_python.output(
        video, sound, str(out), t=f"{seconds:.3f}", vcodec="libx264", pix_fmt="yuv420p", crf=25,
        acodec="aac", r=25,
    )  # fmt: skip
    run_ffmpeg(looped, "loop the clip")


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument(
        "--seconds", type=float, default=0.2, help="rendered clip length (12 s/frame on 2 cores)"
    )
    parser.add_argument("--long", type=float, nargs="*", default=[10.0, 60.0], help="looped clip lengths (s)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("SADTALKER_WEIGHTS_POLICY", "synthetic")

    import numpy as np
    import soundfile
    import torch

    from sadtalker.loader import Models
    from sadtalker.options import RenderOptions
    from sadtalker.pipeline import (
        audio_to_coefficients,
        extract_face,
        quality_check,
        render_video,
    )
    from sadtalker.records import Coefficients

    figures: dict = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "date": time.strftime("%Y-%m-%d"),
    }
    models = Models()
    options = RenderOptions(size=256, preprocess="crop", batch_size=2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data, rate = soundfile.read(DATA / "speech.wav", dtype="int16")
        speech = tmp / "speech.wav"
        soundfile.write(speech, data[: int(args.seconds * rate)], rate, subtype="PCM_16")
        face = extract_face(DATA / "portrait.png", options, models)
        coeffs = audio_to_coefficients(speech, face, options, models)
        models.animator(256, "crop", "cpu", "float32")  # load outside the timed render, as a warm worker
        start = time.perf_counter()
        video = render_video(face, coeffs, DATA / "portrait.png", speech, tmp / "clip.mp4", options, models)
        render_s = time.perf_counter() - start
        frames = video.num_frames

        def qc(path: Path, clip: Coefficients) -> float:
            t0 = time.perf_counter()
            report = quality_check(
                path,
                face,
                clip,
                DATA / "portrait.png",
                speech,
                options,
                models=models,
                synthetic_weights=True,
            )
            seconds = time.perf_counter() - t0
            assert report.verdict in ("pass", "warn", "fail")
            return seconds

        cold = qc(video.path, coeffs)
        warm = statistics.median(qc(video.path, coeffs) for _ in range(args.repeats))
        figures["same_clip"] = {
            "frames": frames,
            "render_s": round(render_s, 2),
            "render_s_per_frame": round(render_s / frames, 2),
            "qc_cold_s": round(cold, 2),
            "qc_warm_s": round(warm, 2),
            "qc_over_render_warm": round(warm / render_s, 4),
            "qc_over_render_cold": round(cold / render_s, 4),
        }
        print(
            f"same clip, {frames} frames at 256 px: render {render_s:.1f} s "
            f"({render_s / frames:.2f} s/frame); "
            f"QC warm {warm:.2f} s = {100 * warm / render_s:.2f} % of the render "
            f"(cold, first QC of the process: {cold:.2f} s = {100 * cold / render_s:.2f} %)"
        )
        long_rows = []
        for seconds in args.long:
            looped = tmp / f"loop{seconds:g}.mp4"
            long_speech = tmp / f"speech{seconds:g}.wav"
            reps = math.ceil(seconds / args.seconds) + 1
            soundfile.write(
                long_speech, np.tile(data[: int(args.seconds * rate)], reps), rate, subtype="PCM_16"
            )
            _loop(video.path, long_speech, seconds, looped)
            n = round(seconds * 25)
            tiled = np.resize(coeffs.coefficients, (n, coeffs.coefficients.shape[1]))
            blink = np.resize(coeffs.blink, (n, 1)).astype(np.float32)
            clip = Coefficients(tiled.astype(np.float32), n, seconds, blink)
            t = statistics.median(qc(looped, clip) for _ in range(args.repeats))
            fps = n / t
            need = {f"{r}": math.ceil(r / fps) for r in (100, 300, 1000)}
            long_rows.append(
                {"seconds": seconds, "frames": n, "qc_s": round(t, 2), "qc_fps": round(fps, 1), "tasks": need}
            )
            print(
                f"looped {seconds:g} s ({n} frames): QC {t:.2f} s = {fps:.0f} video frames/s per QC task; "
                f"concurrent QC tasks to keep up with 100 / 300 / 1000 frames/s: "
                f"{need['100']} / {need['300']} / {need['1000']}"
            )
        figures["long_clips"] = long_rows
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
