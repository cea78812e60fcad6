"""The renderer (render engine: mapping net + keypoint transformation + generator) at one size, over batch
sizes: s/frame and frames/s, achieved GFLOP/s, and the split between its modules.

Inputs: the engine of :class:`sadtalker.loader.Models` (the configured weights policy; speed does not depend
on the values), a fixed random source image and coefficients; ``set_source`` (per-clip work) is timed once.
For each batch size: ``warmup`` untimed batches, then ``batches`` timed batches of ``driving_keypoints``
(mapping net + keypoints) and ``render`` (the generator); s/frame is the median batch time / batch size.

``compile``: the engine renders through ``torch.compile`` (the ``--compile`` render option); its first
batch, which compiles, is timed apart (``first_batch_s``; inductor's on-disk cache makes it shorter in
later processes), then the batches are timed as above. A new batch size recompiles once (the batch
dimension turns dynamic), in its warm-up.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over the first warm-up batch of the first batch size
(counted once per size, then per frame: FLOPs are linear in the batch), through the eager generator (a
compiled one does the same arithmetic). It counts convolutions (conv2d and
conv3d alike, through ``aten.convolution``) and matrix products; ``grid_sample``, norms, interpolation and
element-wise ops are not counted (they are a small part of the work but not of the time). Achieved GFLOP/s
= counted FLOPs per frame / s per frame.

Per-operator split (``ops``): one more batch of the first batch size under ``torch.profiler`` (CPU
activity: the operators' own time; on a GPU it is the launch side only, so it is skipped there): the
convolutions' share of the generator's operator time, their in-place GFLOP/s (generator FLOPs / conv time:
set beside the isolated shapes of the ``peak`` section, it says how fast the convolutions run inside the
network), and the heaviest other operators. The profiler adds some overhead, so these are shares, not
timings.

Per-module split (not with ``compile``: a compiled pass runs no module hooks): forward pre- and post-hooks
on the generator's dense motion network and SPADE decoder take a timestamp (CUDA events on a GPU, so
nothing is synchronised inside the batch; ``perf_counter`` on the CPU, where ops are synchronous); ``rest``
= the generator's time minus those two (the 3-D warp of the source features, the 2-D projection convs, the
occlusion mask); ``mapping`` = ``driving_keypoints``.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Marks, median, models_holder, peak_rss_mb, set_random_source, sync, weights_record


def _flops(animator, windows, batch: int) -> dict[str, float]:
    """GFLOP per frame of the mapping net + keypoints and of the generator (total and per module)."""
    from torch.utils.flop_counter import FlopCounterMode

    generator = animator.generator
    with FlopCounterMode(display=False) as mapping_counter:
        _, kp = animator.driving_keypoints(windows)
    source = animator.source
    with FlopCounterMode(display=False) as counter:  # eager: the counter sees every operator
        generator.forward_from_features(source.features, source.kp_source, kp)
    counts = counter.get_flop_counts()

    def module(name: str) -> float:
        # FlopCounterMode keys a module by its class name when it is the outermost module called, else by
        # the path from the outermost one.
        for key in (type(getattr(generator, name)).__name__, f"{type(generator).__name__}.{name}"):
            if key in counts:
                return sum(counts[key].values()) / batch / 1e9
        return float("nan")

    total = counter.get_total_flops() / batch / 1e9
    dense, decoder = module("dense_motion_network"), module("decoder")
    return {
        "mapping": mapping_counter.get_total_flops() / batch / 1e9,
        "generator": total,
        "dense_motion": dense,
        "decoder": decoder,
        "rest": total - dense - decoder,
    }


class _ModuleTimes:
    """Pre/post forward hooks on the generator's dense motion network and decoder."""

    def __init__(self, generator, marks: Marks):
        self.marks = marks
        self.events: dict[str, list] = {}
        self.handles = []
        for name in ("dense_motion_network", "decoder"):
            module = getattr(generator, name)
            self.handles.append(module.register_forward_pre_hook(self._pre(name)))
            self.handles.append(module.register_forward_hook(self._post(name)))

    def _pre(self, name):
        def hook(module, args):
            self.events.setdefault(name, []).append(self.marks.mark())

        return hook

    def _post(self, name):
        def hook(module, args, output):
            self.events[name].append(self.marks.mark())

        return hook

    def seconds(self) -> dict[str, float]:
        """Seconds in each module since the last call, summed over its passes (on the CPU the generator
        runs a batch one frame at a time: ``sadtalker.render.generator.CPU_FRAMES_PER_CALL``)."""
        times = {
            name: sum(self.marks.seconds(marks[i], marks[i + 1]) for i in range(0, len(marks), 2))
            for name, marks in self.events.items()
        }
        self.events = {}
        return times

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


_CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_overrideable", "aten::_convolution_pointwise")
_COMPILED_CONV = "mkldnn::_convolution_pointwise"  # inductor's fused oneDNN convs (and their in-place form)


def _is_conv(op: str) -> bool:
    return op in _CONV_OPS or op.startswith(_COMPILED_CONV)


def op_split(animator, windows, batch: int, flops_per_frame: float, top: int = 6) -> dict[str, Any]:
    """Operator shares of one generator batch (CPU only): see the module docstring."""
    from torch.profiler import ProfilerActivity, profile

    with animator.inference_context():
        _, kp = animator.driving_keypoints(windows(range(batch)))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            animator.render(kp)
    own = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    total = sum(own.values())
    conv = sum(t for name, t in own.items() if _is_conv(name))
    others = sorted(((t, k) for k, t in own.items() if not _is_conv(k)), reverse=True)[:top]
    return {
        "batch_size": batch,
        "profiled_s": total,
        "conv_share": conv / total if total else None,
        "conv_gflops_in_place": flops_per_frame * batch / conv if conv else None,
        "top_other_ops": [{"op": k, "share": t / total} for t, k in others],
    }


def time_batches(animator, windows, batch: int, batches: int, warmup: int) -> dict[str, Any]:
    """Median per-frame seconds of the engine's parts over ``batches`` timed batches of ``batch`` frames."""
    import torch

    device = str(animator.device)
    marks = Marks(device)
    # A compiled pass runs no module hooks (and adding them would make it recompile): no module split.
    compiled = animator.frames_fn is not None
    hooks = None if compiled else _ModuleTimes(animator.generator, marks)
    rows = []
    try:
        with animator.inference_context():
            for step in range(warmup + batches):
                frames = windows(range(step * batch, (step + 1) * batch))
                sync(device)
                t0 = marks.mark()
                _, kp = animator.driving_keypoints(frames)
                t1 = marks.mark()
                out = animator.render(kp)
                t2 = marks.mark()
                sync(device)
                # this batch's passes (and nothing left from the warm-up)
                parts = hooks.seconds() if hooks else {"dense_motion_network": None, "decoder": None}
                if step >= warmup:
                    generator = marks.seconds(t1, t2)
                    dense, decoder = parts["dense_motion_network"], parts["decoder"]
                    rows.append(
                        {
                            "total": marks.seconds(t0, t2),
                            "mapping": marks.seconds(t0, t1),
                            "generator": generator,
                            "dense_motion": dense,
                            "decoder": decoder,
                            "rest": None if compiled else generator - dense - decoder,
                        }
                    )
                del out
    finally:
        if hooks:
            hooks.remove()
    per_frame = {
        key: None if rows[0][key] is None else median(r[key] for r in rows) / batch for key in rows[0]
    }
    spread = [r["total"] / batch for r in rows]
    result = {
        "batch_size": batch,
        "timed_batches": len(rows),
        "s_per_frame": per_frame["total"],
        "fps": 1 / per_frame["total"],
        "min_s_per_frame": min(spread),
        "max_s_per_frame": max(spread),
        "split_s_per_frame": {k: per_frame[k] for k in ("mapping", "dense_motion", "decoder", "rest")},
    }
    if device.startswith("cuda"):
        result["gpu_peak_memory_mb"] = torch.cuda.max_memory_allocated() / 1e6
    return result


def measure(
    models,
    size: int,
    device: str = "cpu",
    dtype: str = "float32",
    batch_sizes=(1, 2, 4, 8, 16),
    batches: int = 3,
    warmup: int = 1,
    compile: bool = False,
) -> dict[str, Any]:
    """The renderer at ``size`` on ``device`` / ``dtype`` over ``batch_sizes``, with the engine of
    ``models`` (loaded here if needed: ``load_s``); ``compile``: through ``torch.compile``."""
    import torch

    batch_sizes = list(batch_sizes)
    start = time.perf_counter()
    animator = models.animator(size, "crop", device, dtype, compile)
    sync(device)
    load_s = time.perf_counter() - start
    t0 = time.perf_counter()
    windows = set_random_source(animator, size)
    sync(device)
    source_s = time.perf_counter() - t0
    first_batch_s = None
    if compile:  # the compile happens in the first batch: timed apart, not in any row
        t0 = time.perf_counter()
        with animator.inference_context():
            animator.render(animator.driving_keypoints(windows(range(batch_sizes[0])))[1])
        sync(device)
        first_batch_s = time.perf_counter() - t0
        print(f"render {size} px {dtype} compiled: first batch (compiles) {first_batch_s:.1f} s", flush=True)
    with animator.inference_context():
        flops = _flops(animator, windows(range(batch_sizes[0])), batch_sizes[0])
    rows = []
    for i, batch in enumerate(batch_sizes):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        # the FLOP-counting pass was the first batch size's first warm-up
        try:
            row = time_batches(animator, windows, batch, batches, max(0, warmup - (i == 0)))
        except torch.cuda.OutOfMemoryError as exc:  # a GPU too small for this batch: larger ones will not fit
            rows.append({"batch_size": batch, "error": f"out of memory: {str(exc).splitlines()[0]}"})
            print(f"render {size} px {dtype} batch {batch}: out of memory", flush=True)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            break
        seconds = row["s_per_frame"]
        row["gflops"] = (flops["mapping"] + flops["generator"]) / seconds
        split = row["split_s_per_frame"]
        row["split_share"] = {k: None if v is None else v / seconds for k, v in split.items()}
        row["split_gflops"] = {k: (flops[k] / v if v else None) for k, v in split.items()}
        rows.append(row)
        print(
            f"render {size} px {dtype} batch {batch}: {seconds:.4g} s/frame, {row['fps']:.4g} frames/s, "
            f"{row['gflops']:.4g} GFLOP/s",
            flush=True,
        )
    ops = None
    if not device.startswith("cuda"):
        ops = op_split(animator, windows, batch_sizes[0], flops["generator"])
    animator.clear_source()
    best = min((r for r in rows if "error" not in r), key=lambda r: r["s_per_frame"])
    return {
        "size": size,
        "device": device,
        "dtype": dtype,
        "compile": compile,
        "threads": torch.get_num_threads(),
        "weights": weights_record(models, [size]),
        "load_s": load_s,
        "set_source_s": source_s,
        "first_batch_s": first_batch_s,
        "gflop_per_frame": flops,
        "batches": rows,
        "ops": ops,
        "best": {k: best[k] for k in ("batch_size", "s_per_frame", "fps", "gflops")},
        "wall_s": time.perf_counter() - start,
    }


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Section ``render`` for one size (``bench/run.py`` runs each size in a fresh process). Params: size,
    batch_sizes, batches, warmup, device, dtype, weights, compile."""
    models = models_holder(params.get("weights"))
    result = measure(
        models,
        int(params.get("size", 256)),
        params.get("device", "cpu"),
        params.get("dtype", "float32"),
        params.get("batch_sizes", [1, 2, 4, 8, 16]),
        int(params.get("batches", 3)),
        int(params.get("warmup", 1)),
        bool(params.get("compile", False)),
    )
    result["peak_rss_mb"] = peak_rss_mb()
    return result
