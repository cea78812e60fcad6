"""Peak memory (and time) of the one-pair process, per clip, each clip in a fresh process.

Each clip runs the real one-pair path for the clip's full length, stage by stage as
:func:`sadtalker.pipeline.render_pair` chains them (``extract_face``, ``audio_to_coefficients``,
``render_video``, ``quality_check``, called the same way, so that each stage can be timed and its memory
sampled): the test portrait (256 px / crop, batch size 2 unless told), tests/data/speech.wav looped to the
clip's length, image loading and face detection, 3DMM, audio decoding, mel windows, ExpNet and PoseVAE over
the whole clip, the mapping net and keypoints for every frame, the generator, uint8 conversion, the
streaming H.264 + AAC encode and the full QC of the written file.

Generator modes: ``real`` runs it on every frame. ``ends`` (the 10-minute clip on a CPU, where rendering
15,000 frames would take days) runs it on the first and the last batches only; every batch between them
gets a stand-in that returns the source image (:class:`bench.common.GeneratorStandIn`; a per-batch memory
of the real generator is set by the batch size, not by the clip, and the first and last batches show it).
QC rightly reports the stand-in's middle as frozen; its cost is that of any clip of this length. On a GPU
the long clip runs ``real`` too (``--long-mode``).

Memory: peak RSS = the child's ``ru_maxrss``; per stage, a 10 ms ``VmRSS`` sampler records the RSS at the
stage's start and its highest sample during the stage. The renderer's share = the engine's parameters and
buffers (keypoint detector, generator, mapping net) + the RSS growth during the render stage (activations,
the source encoding, frame buffers, the encoder pipe).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PORTRAIT,
    GeneratorStandIn,
    RssSampler,
    models_holder,
    module_mb,
    peak_rss_mb,
    pipeline,
    render_options,
    rss_mb,
    run_child,
    speech_wav,
    weights_record,
)


def run_clip(params: dict[str, Any]) -> dict[str, Any]:
    """One clip in this (fresh) process. Params: name, seconds, size, batch_size, mode (real|ends),
    device, dtype, weights, image."""
    seconds = float(params["seconds"])
    size = int(params.get("size", 256))
    mode = params.get("mode", "real")
    image = params.get("image") or str(PORTRAIT)
    p = pipeline()
    import_rss = rss_mb()
    options = render_options(
        size=size,
        preprocess="crop",
        batch_size=int(params.get("batch_size", 2)),
        device=params.get("device", "cpu"),
        dtype=params.get("dtype", "float32"),
    )
    models = models_holder(params.get("weights"))
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, RssSampler() as sampler:
        wav = speech_wav(Path(tmp) / "speech.wav", seconds)
        out = Path(tmp) / "clip.mp4"
        start = time.perf_counter()
        with sampler.stage("face"):
            face = p.extract_face(image, options, models)
        with sampler.stage("coeffs"):
            coeffs = p.audio_to_coefficients(wav, face, options, models)
        with sampler.stage("render_load"):  # the mapping net and the engine (the size's networks are loaded)
            animator = models.animator(size, "crop", options.device, options.dtype)
        batches = math.ceil(coeffs.num_frames / options.batch_size)
        real = range(batches) if mode == "real" else (0, batches - 1)
        stand_in = GeneratorStandIn(animator, batches, tuple(real))
        try:
            with sampler.stage("render"):
                video = p.render_video(face, coeffs, image, wav, out, options, models)
        finally:
            stand_in.remove()
        with sampler.stage("qc"):
            report = p.quality_check(
                video.path,
                face,
                coeffs,
                image,
                wav,
                options,
                models=models,
                synthetic_weights=video.synthetic_weights,
                upstream=video.frame_stats,
            )
        wall = time.perf_counter() - start
        file_mb = out.stat().st_size / 1e6
    stages = sampler.stages
    render = stages["render"]
    renderer_mb = module_mb(animator.kp_detector, animator.generator, animator.mapping)
    frames = coeffs.num_frames
    return {
        "name": params.get("name"),
        "seconds": seconds,
        "size": size,
        "batch_size": options.batch_size,
        "device": options.device,
        "dtype": options.dtype,
        "mode": mode,
        "frames": frames,
        "real_generator_batches": stand_in.real_batches,
        "real_generator_frames": stand_in.real_frames,
        "generator_s_per_frame": stand_in.real_seconds / max(1, stand_in.real_frames),
        "weights": weights_record(models, [size]),
        "wall_s": wall,
        "s_per_frame": wall / frames,
        "render_s_per_frame": render["seconds"] / frames,
        "stages": stages,
        "import_rss_mb": import_rss,
        "peak_rss_mb": peak_rss_mb(),
        "renderer_params_mb": renderer_mb,
        "renderer_share_mb": renderer_mb + max(0.0, render["peak_rss_mb"] - render["start_rss_mb"]),
        "file_mb": file_mb,
        "qc_verdict": report.verdict,
        "qc_problems": list(report.to_dict().get("problems", [])),
    }


def clips(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The clips of the section: a one-pair clip per size (target: peak RSS, end-to-end s/frame), a short
    clip and a long clip at the first size (peak RSS must not grow with the clip)."""
    cuda = params.get("device", "cpu").startswith("cuda")
    sizes = params.get("sizes", [256])
    common = {
        k: params[k]
        for k in ("device", "dtype", "weights", "batch_size", "threads")
        if params.get(k) is not None
    }
    rows = [
        {
            "name": f"one_pair_{size}",
            "seconds": params.get("one_pair_seconds", 1.0),
            "size": size,
            "mode": "real",
        }
        for size in sizes
    ]
    if params.get("short_seconds"):
        rows.append({"name": "short", "seconds": params["short_seconds"], "size": sizes[0], "mode": "real"})
    if params.get("long_seconds"):
        mode = params.get("long_mode") or "auto"
        if mode == "auto":
            mode = "real" if cuda else "ends"
        rows.append({"name": "long", "seconds": params["long_seconds"], "size": sizes[0], "mode": mode})
    return [{**common, **row} for row in rows]


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Section ``memory``: every clip of :func:`clips` in its own fresh process."""
    results = []
    for clip in clips(params):
        start = time.perf_counter()
        row = run_child("memory_clip", clip)
        row["process_wall_s"] = time.perf_counter() - start
        results.append(row)
        print(
            f"memory {row['name']}: {row['frames']} frames, peak RSS {row['peak_rss_mb']:.0f} MB, "
            f"{row['s_per_frame']:.3g} s/frame end to end",
            flush=True,
        )
    by_name = {row["name"]: row for row in results}
    short = by_name.get("short") or by_name.get(f"one_pair_{params.get('sizes', [256])[0]}")
    long = by_name.get("long")
    summary = {}
    if short and long:
        summary["long_over_short_peak_rss"] = long["peak_rss_mb"] / short["peak_rss_mb"]
    return {"clips": results, **summary}
