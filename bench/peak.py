"""Machine peak, measured in the same run as the renderer: a large matmul, and conv2d / conv3d at the
renderer's own layer shapes.

Shapes: the generator's per-frame forward (``forward_from_features``, what runs for every frame) is traced
once on the ``meta`` device (no weights, no compute) with a dispatch mode that records every
``aten.convolution`` call: input shape, weight shape, stride, padding, groups, how many times it runs per
frame, and its FLOPs (``2 · prod(weight) · prod(output spatial)`` per sample, as
``torch.utils.flop_counter`` counts). The heaviest distinct shapes, until they cover ``coverage`` of the
convolution FLOPs (at least one conv2d and one conv3d), are then timed in isolation with random tensors
(``torch.nn.functional.conv2d/conv3d``, batch ``batch``), each in both memory layouts, contiguous and
channels-last, the faster one counting (the SPADE decoder runs channels-last, the rest contiguous; the
peak is what the machine can do, whichever layout): one warm-up call, then the median of ``repeats`` timed
calls (on a GPU each timed call is ``inner`` launches between CUDA events).

Figures (GFLOP/s): ``matmul`` (n x n, fp32 unless ``dtype``); each shape's; ``conv_gflops`` = the
FLOP-weighted throughput of the timed shapes (sum of count x FLOPs over sum of count x time: how fast the
renderer's convolutions run when each runs alone; the renderer's target is 0.9 of it); ``conv_best``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.common import Marks, generator_class, median, sync


def conv_calls(size: int = 256) -> list[dict[str, Any]]:
    """Every distinct convolution of one frame of the generator at ``size``, heaviest first (meta device)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    calls: dict[tuple, dict[str, Any]] = {}

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func._overloadpacket is torch.ops.aten.convolution:
                x, w, bias, stride, padding, dilation, transposed, _, groups = args[:9]
                key = (
                    tuple(x.shape[1:]),
                    tuple(w.shape),
                    tuple(stride),
                    tuple(padding),
                    tuple(dilation),
                    bool(transposed),
                    int(groups),
                    bias is not None,
                )
                flops = 2 * math.prod(w.shape) * math.prod(out.shape[2:])
                entry = calls.setdefault(
                    key,
                    {
                        "kind": f"conv{w.ndim - 2}d",
                        "input": list(x.shape[1:]),
                        "weight": list(w.shape),
                        "stride": list(stride),
                        "padding": list(padding),
                        "dilation": list(dilation),
                        "groups": int(groups),
                        "bias": bias is not None,
                        "transposed": bool(transposed),
                        "gflop": flops / 1e9,
                        "count": 0,
                    },
                )
                entry["count"] += 1
            return out

    generator_cls = generator_class()
    with torch.device("meta"), torch.no_grad():
        generator = generator_cls().eval()
        features = generator.encode_source(torch.empty(1, 3, size, size))
        kp = torch.empty(1, generator.config.dense_motion.num_kp, 3)
        with Record():
            generator.forward_from_features(features, kp, kp)
    rows = sorted(calls.values(), key=lambda r: r["gflop"] * r["count"], reverse=True)
    total = sum(r["gflop"] * r["count"] for r in rows)
    for row in rows:
        row["share"] = row["gflop"] * row["count"] / total
    return rows


def select_shapes(rows: list[dict[str, Any]], coverage: float, max_shapes: int) -> list[dict[str, Any]]:
    """The heaviest shapes until ``coverage`` of the FLOPs (at most ``max_shapes``), plus the heaviest
    conv2d and conv3d when neither is among them."""
    chosen, covered = [], 0.0
    for row in rows:
        if covered >= coverage or len(chosen) >= max_shapes:
            break
        chosen.append(row)
        covered += row["share"]
    for kind in ("conv2d", "conv3d"):
        if not any(r["kind"] == kind for r in chosen):
            chosen.extend([r for r in rows if r["kind"] == kind][:1])
    return chosen


def _label(row: dict[str, Any]) -> str:
    cin, *spatial = row["input"]
    cout, _, *kernel = row["weight"]
    return f"{row['kind']} {cin}->{cout} {'x'.join(map(str, kernel))} @{'x'.join(map(str, spatial))}" + (
        f" g{row['groups']}" if row["groups"] != 1 else ""
    )


def _shrink(row: dict[str, Any]) -> dict[str, Any]:
    """Tiny variant of a shape (tests): channels and spatial sizes / 8, groups 1."""
    cin, *spatial = row["input"]
    cout, _, *kernel = row["weight"]
    cin, cout, spatial = max(1, cin // 8), max(1, cout // 8), [max(2, s // 8) for s in spatial]
    out = [
        (s + 2 * p - d * (k - 1) - 1) // st + 1
        for s, p, d, k, st in zip(
            spatial, row["padding"], row["dilation"], kernel, row["stride"], strict=True
        )
    ]
    weight = [cout, cin, *kernel]
    gflop = 2 * math.prod(weight) * math.prod(out) / 1e9
    return {**row, "input": [cin, *spatial], "weight": weight, "groups": 1, "gflop": gflop}


def _timed(fn, device: str, repeats: int, inner: int) -> float:
    """Median seconds of one call of ``fn`` (one warm-up call first)."""
    marks = Marks(device)
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = marks.mark()
        for _ in range(inner):
            fn()
        end = marks.mark()
        sync(device)
        times.append(marks.seconds(start, end) / inner)
    return median(times)


def time_conv(
    row: dict[str, Any], batch: int, device: str, dtype, repeats: int, inner: int
) -> tuple[float, str]:
    """(seconds, layout) of the faster memory layout for this shape: ``contiguous`` or ``channels_last``."""
    import torch
    import torch.nn.functional as F

    x = torch.randn(batch, *row["input"], device=device, dtype=dtype)
    w = torch.randn(*row["weight"], device=device, dtype=dtype) * 0.01
    b = torch.randn(row["weight"][0], device=device, dtype=dtype) if row["bias"] else None
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[len(row["weight"]) - 2]
    kwargs = {"stride": row["stride"], "padding": row["padding"], "dilation": row["dilation"]}
    layouts = {"contiguous": x}
    if x.dim() in (4, 5):
        last = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        layouts["channels_last"] = x.contiguous(memory_format=last)
    times = {}
    with torch.no_grad():
        for name, inp in layouts.items():
            times[name] = _timed(
                lambda inp=inp: conv(inp, w, b, groups=row["groups"], **kwargs), device, repeats, inner
            )
    layout = min(times, key=times.__getitem__)
    return times[layout], layout


def time_matmul(n: int, device: str, dtype, repeats: int, inner: int) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.no_grad():
        return _timed(lambda: a @ b, device, repeats, inner)


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Section ``peak``. Params: device, dtype, size (shapes from), batch, matmul_n, repeats, coverage,
    max_shapes, tiny (tests: tiny shapes)."""
    import torch

    device = params.get("device", "cpu")
    dtype = getattr(torch, params.get("dtype", "float32"))
    cuda = device.startswith("cuda")
    inner = 10 if cuda else 1
    repeats = params.get("repeats", 5)
    batch = params.get("batch") or (8 if cuda else 1)
    size = params.get("size", 256)
    tiny = bool(params.get("tiny"))
    n = params.get("matmul_n") or (8192 if cuda else 4096)
    if tiny:
        n, batch = min(n, 128), 1

    start = time.perf_counter()
    matmul_s = time_matmul(n, device, dtype, repeats, inner)
    matmul = {"n": n, "dtype": str(dtype).replace("torch.", ""), "seconds": matmul_s}
    matmul["gflops"] = 2 * n**3 / matmul_s / 1e9

    calls = conv_calls(size)
    chosen = select_shapes(calls, params.get("coverage", 0.8), params.get("max_shapes", 8))
    if tiny:
        chosen = [_shrink(r) for r in chosen[:1]] + [
            _shrink(next(r for r in chosen if r["kind"] == "conv3d"))
        ]
    shapes = []
    for row in chosen:
        seconds, layout = time_conv(row, batch, device, dtype, repeats, inner)
        gflop = row["gflop"] * batch
        shapes.append(
            {
                "name": _label(row),
                "kind": row["kind"],
                "input": row["input"],
                "weight": row["weight"],
                "per_frame_count": row["count"],
                "share_of_conv_flops": row["share"],
                "gflop_per_call": gflop,
                "seconds": seconds,
                "layout": layout,
                "gflops": gflop / seconds,
            }
        )
    weighted_flops = sum(s["per_frame_count"] * s["gflop_per_call"] for s in shapes)
    weighted_time = sum(s["per_frame_count"] * s["seconds"] for s in shapes)
    return {
        "device": device,
        "dtype": str(dtype).replace("torch.", ""),
        "batch": batch,
        "shapes_from_size": size,
        "tiny": tiny,
        "matmul": matmul,
        "conv": shapes,
        "conv_flop_coverage": sum(s["share_of_conv_flops"] for s in shapes),
        "conv_gflop_per_frame": sum(r["gflop"] * r["count"] for r in calls),
        "conv_gflops": weighted_flops / weighted_time,
        "conv_best_gflops": max(s["gflops"] for s in shapes),
        "conv2d_best_gflops": max((s["gflops"] for s in shapes if s["kind"] == "conv2d"), default=None),
        "conv3d_best_gflops": max((s["gflops"] for s in shapes if s["kind"] == "conv3d"), default=None),
        "wall_s": time.perf_counter() - start,
    }
