"""The GPU suite: every GPU figure of issue #12 in one short run (under 5 minutes on an H100 / H200).

    bench/gpu.sh                    # = python bench/run.py --gpu-suite [--out FILE] [--device cuda:0]

Refuses to start, with exit status 2 and the reason, when torch sees no CUDA device. In one process:

1. ``peak``: matmul and the renderer's conv shapes (:mod:`bench.peak`, batch 8) in float32, float16 and
   bfloat16 (float32 convolutions run as cuDNN allows: ``torch.backends.cudnn.allow_tf32``, recorded in
   the machine record, is PyTorch's default True).
2. ``render``: the renderer (:func:`bench.render.measure`) at 256 and 512 in float32, float16 and bfloat16
   (autocast, as ``--dtype`` runs it) over batch sizes 1-32: frames/s, GFLOP/s, module split, peak GPU
   memory (``torch.cuda.max_memory_allocated`` per batch size).
3. ``psnr``: the same ``frames`` frames (fixed random source and coefficients) rendered in float16 and
   bfloat16 against float32, per size: PSNR of the float frames in [0, 1] (over all frames, and the
   worst frame), of the delivered uint8 frames, and the largest absolute difference (target >= 40 dB).
4. ``encode``: the streaming encoder alone (libx264 + AAC, :func:`bench.stages._encode`) on ``frames``
   moving frames at 256 and 512 (frames/s: what the encoder can take), and ``render_stage``: the real
   render stage (:func:`sadtalker.pipeline.render_video`, the generator on every frame, the encode in the
   loop) of a ``seconds`` clip at each size in float16 at batch 16, and in ``full`` mode (paste-back into
   a 768 x 1024 photo) at the first size: its frames/s against the generator's own (timed inside the same
   run): the encode and paste-back keep up when the two are close (the next batch renders while this one
   is post-processed).
5. ``compiled``: the renderer through ``torch.compile`` (the ``--compile`` render option) at the first size in
   ``compile_dtype`` (float16) at batch ``compile_batch`` (16): its first batch (the compile) apart, then
   frames/s beside the eager row of the same size, dtype and batch (``render``). Last, so that a slow
   compile costs no other figure.
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import peak, render
from bench.common import (
    PORTRAIT,
    GeneratorStandIn,
    median,
    models_holder,
    pipeline,
    render_options,
    set_random_source,
    speech_wav,
    sync,
    weights_record,
    wide_photo,
)

DTYPES = ("float32", "float16", "bfloat16")


class NoCudaError(RuntimeError):
    """The suite was started without a CUDA device (``bench/run.py`` exits 2 with the message)."""


def require_cuda(device: str) -> None:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        seen = "sees none" if not torch.cuda.is_available() else f"was asked for {device!r}"
        raise NoCudaError(
            f"the GPU suite needs a CUDA device: torch {torch.__version__} "
            f"(CUDA build: {torch.version.cuda}) {seen}. "
            "Run bench/gpu.sh on a GPU worker with a CUDA build of torch (README: Install); on a CPU use "
            "`python bench/run.py`."
        )


def _frames(models, size: int, device: str, dtype: str, frames: int, batch: int):
    """``frames`` rendered frames as float64 arrays: (float in [0, 1], uint8 values)."""
    import numpy as np
    import torch

    from sadtalker.render.animate import frames_to_uint8

    animator = models.animator(size, "crop", device, dtype)
    windows = set_random_source(animator, size)
    out = []
    with animator.inference_context():
        for start in range(0, frames, batch):
            _, kp = animator.driving_keypoints(windows(range(start, min(frames, start + batch))))
            out.append(animator.render(kp).float().cpu())
    animator.clear_source()
    stacked = torch.cat(out)
    return stacked.numpy().astype(np.float64), frames_to_uint8(stacked).astype(np.float64)


def _psnr(mse: float, peak_value: float) -> float:
    return float("inf") if mse == 0 else 10 * math.log10(peak_value**2 / mse)


def psnr(models, size: int, device: str, dtypes, frames: int, batch: int = 8) -> dict[str, Any]:
    reference, reference_u8 = _frames(models, size, device, "float32", frames, batch)
    result = {}
    for dtype in dtypes:
        if dtype == "float32":
            continue
        half, half_u8 = _frames(models, size, device, dtype, frames, batch)
        per_frame = ((half - reference) ** 2).reshape(frames, -1).mean(axis=1)
        result[dtype] = {
            "frames": frames,
            "psnr_db": _psnr(float(per_frame.mean()), 1.0),
            "worst_frame_psnr_db": _psnr(float(per_frame.max()), 1.0),
            "uint8_psnr_db": _psnr(float(((half_u8 - reference_u8) ** 2).mean()), 255.0),
            "max_abs_diff": float(abs(half - reference).max()),
            "finite": bool((half == half).all()),
        }
    return result


def render_stage(
    models,
    size: int,
    device: str,
    dtype: str,
    batch: int,
    seconds: float,
    tmp: Path,
    preprocess: str = "crop",
):
    """The real render stage of a ``seconds`` clip (generator on every frame, streaming encode; in ``full``
    mode the paste-back into a 768 x 1024 photo too)."""
    p = pipeline()
    options = render_options(size=size, preprocess=preprocess, batch_size=batch, device=device, dtype=dtype)
    wav = speech_wav(tmp / "speech.wav", seconds)
    photo = wide_photo(tmp / "photo.png") if preprocess == "full" else PORTRAIT
    face = p.extract_face(photo, options, models)
    coeffs = p.audio_to_coefficients(wav, face, options, models)
    animator = models.animator(size, preprocess, device, dtype)
    batches = math.ceil(coeffs.num_frames / batch)
    timed = GeneratorStandIn(animator, batches, tuple(range(batches)))
    try:
        start = time.perf_counter()
        video = p.render_video(face, coeffs, photo, wav, tmp / f"clip{size}.mp4", options, models)
        sync(device)
        wall = time.perf_counter() - start
    finally:
        timed.remove()
    frames = video.num_frames
    return {
        "size": size,
        "preprocess": preprocess,
        "dtype": dtype,
        "batch_size": batch,
        "frames": frames,
        "render_stage_fps": frames / wall,
        "generator_fps": timed.real_frames / timed.real_seconds,
        "generator_share_of_stage": timed.real_seconds / wall,
    }


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Params: device, sizes, dtypes, batch_sizes, batches, warmup, psnr_frames, encode_frames,
    stage_seconds, stage_batch, compile_dtype, compile_batch, weights; allow_cpu (a dry run of the code
    paths on the CPU: tests)."""
    from bench.stages import _encode, _moving_frames

    device = params.get("device", "cuda")
    if not params.get("allow_cpu"):
        require_cuda(device)
    sizes = params.get("sizes", [256, 512])
    dtypes = params.get("dtypes", list(DTYPES))
    start = time.perf_counter()
    out: dict[str, Any] = {"device": device, "sizes": sizes, "dtypes": dtypes, "errors": {}}

    def part(name: str, fn) -> None:
        """Run one part; a failure is recorded and the suite goes on (the figures of the others stay)."""
        t0 = time.perf_counter()
        print(f"gpu suite: {name} ...", flush=True)
        try:
            out[name] = fn()
        except Exception:
            out["errors"][name] = traceback.format_exc()
            print(f"gpu suite: {name} failed\n{out['errors'][name]}", flush=True)
        print(f"gpu suite: {name} took {time.perf_counter() - t0:.1f} s", flush=True)

    def peaks():
        repeats, tiny = params.get("repeats", 5), params.get("tiny", False)
        return {
            dtype: peak.run({"device": device, "dtype": dtype, "repeats": repeats, "tiny": tiny})
            for dtype in dtypes
        }

    models = models_holder(params.get("weights"))

    def renders():
        rows = []
        for size in sizes:
            for dtype in dtypes:
                row = render.measure(
                    models,
                    size,
                    device,
                    dtype,
                    params.get("batch_sizes", [1, 4, 8, 16, 32]),
                    int(params.get("batches", 3)),
                    int(params.get("warmup", 2)),
                )
                conv = None if params.get("tiny") else out.get("peak", {}).get(dtype, {}).get("conv_gflops")
                row["conv_peak_gflops"] = conv
                row["best"]["of_conv_peak"] = row["best"]["gflops"] / conv if conv else None
                rows.append(row)
        return rows

    def psnrs():
        frames = int(params.get("psnr_frames", 16))
        return {str(size): psnr(models, size, device, dtypes, frames) for size in sizes}

    tmp_dir = tempfile.TemporaryDirectory(prefix="bench-gpu-")
    tmp = Path(tmp_dir.name)

    def encodes():
        count = int(params.get("encode_frames", 250))
        wav = speech_wav(tmp / "encode.wav", count / 25)
        result = {}
        for size in sizes:
            frames = _moving_frames(count, size, size)
            times = [_encode(tmp / f"enc{size}.mp4", wav, frames, 16) for _ in range(2)]
            result[str(size)] = {"frames": count, "fps": count / median(times)}
        return result

    def stages():
        dtype = params.get("stage_dtype", "float16" if "float16" in dtypes else dtypes[0])
        batch, seconds = int(params.get("stage_batch", 16)), float(params.get("stage_seconds", 10.0))
        rows = [render_stage(models, size, device, dtype, batch, seconds, tmp) for size in sizes]
        return rows + [render_stage(models, sizes[0], device, dtype, batch, seconds, tmp, "full")]

    def compiled():
        dtype = params.get("compile_dtype", "float16" if "float16" in dtypes else dtypes[0])
        batch = int(params.get("compile_batch", 16))
        warm, timed = int(params.get("warmup", 2)), int(params.get("batches", 3))
        # the first size only: a compile takes a minute or more, and the suite must stay under 5 minutes
        return [render.measure(models, sizes[0], device, dtype, [batch], timed, warm, True)]

    try:
        part("peak", peaks)
        out["weights"] = weights_record(models, sizes)
        part("render", renders)
        part("psnr", psnrs)
        part("encode", encodes)
        part("render_stage", stages)
        part("compiled", compiled)
    finally:
        tmp_dir.cleanup()
    out["wall_s"] = time.perf_counter() - start
    return out
