#!/usr/bin/env python3
"""One command that measures everything, side by side, in one run (issue #12), and writes JSON plus a
printed markdown table.

    python bench/run.py --quick                       # minutes on 2 CPU cores: tiny settings, schema check
    python bench/run.py                               # everything (hours on a CPU: 512 px, batch 16, 10 min)
    python bench/run.py --only peak,render --sizes 256 --batch-sizes 1,2,4
    python bench/run.py --device cuda --dtype float16 # on a GPU worker (the 10-min clip runs every frame)
    python bench/run.py --gpu-suite                   # = bench/gpu.sh: every GPU figure, < 5 min

Sections (``--only``; each heavy one in a fresh Python process, so that its peak RSS is its own):

- ``peak`` (bench/peak.py): the machine's matmul and conv2d/conv3d throughput at the renderer's own layer
  shapes, in this same run.
- ``render`` (bench/render.py; a process per size): the renderer at each ``--sizes`` over
  ``--batch-sizes``: s/frame, frames/s, achieved GFLOP/s (FLOPs from ``torch.utils.flop_counter``) as a
  fraction of the measured conv throughput, the split mapping / dense motion / decoder / rest.
- ``stages`` (bench/stages.py): model load, photo -> 3DMM, audio -> coefficients, the render stage without
  the generator (crop, ``full``), paste-back, encode, QC.
- ``memory`` (bench/memory.py; a process per clip): the one-pair path through a 1 s clip per size, a 10 s
  and a 10-minute clip: peak RSS, per-stage RSS, the renderer's share, s/frame end to end.
- ``flow`` (bench/flow.py): the example batch through ``render_batch`` (clips per hour, orchestration
  share of wall time) and Prefect's per-row cost on instant fake stages (the projected share of a 100-clip
  batch).

Each section's docstring says exactly what it measures and how. The record: ``bench/results/<date>-<host>-
<device>[-quick].json`` (or ``--out``): the machine (CPU model, cores, torch and its threads, GPU), the git
commit, whether the weights are synthetic, the settings, every section's figures, the targets of the issue
with the measured value next to each, and any section's error (the run goes on; exit status 1). Units:
seconds, MB = 10^6 bytes, GFLOP/s = 10^9 FLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, git_info, machine_info, peak_rss_mb, rounded, run_child, set_threads  # noqa: E402

SCHEMA = "sadtalker-bench/1"
SECTIONS = ("peak", "render", "stages", "memory", "flow")
#: The official renderer's end-to-end s/frame, measured earlier on the project's 2-core build machine (batch
#: 2, 256 px, 2 threads); we cannot run the official code here, so it is a recorded figure.
OFFICIAL_REFERENCE = {
    "s_per_frame": [8.82, 9.31],
    "conditions": "official SadTalker, one pair, 256 px, batch 2, 2 threads, the 2-core build machine",
}


# --------------------------------------------------------------------------------------------------------
# child processes
# --------------------------------------------------------------------------------------------------------


def _children() -> dict[str, Any]:
    from bench import flow, gpu, memory, peak, render, stages

    return {
        "peak": peak.run,
        "render": render.run,
        "stages": stages.run,
        "memory_clip": memory.run_clip,
        "flow_example": flow.run_example,
        "flow_overhead": flow.run_overhead,
        "gpu": gpu.run,
    }


def child_main(name: str, params: dict[str, Any], result: str) -> int:
    set_threads(params.get("threads"))
    out = _children()[name](params)
    out.setdefault("peak_rss_mb", peak_rss_mb())
    Path(result).write_text(json.dumps(rounded(out, 6)))
    return 0


# --------------------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--quick", action="store_true", help="tiny settings (batch 1-2, short clips)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated: {SECTIONS}")
    parser.add_argument("--sizes", type=_ints, help="render sizes (default 256,512; quick 256)")
    parser.add_argument("--batch-sizes", type=_ints, help="default 1,2,4,8,16 (GPU 1,2,4,8,16,32; quick 1,2)")
    parser.add_argument("--batches", type=int, help="timed batches per batch size (CPU 2, GPU 3, quick 1)")
    parser.add_argument("--warmup", type=int, help="untimed batches per batch size (CPU 1, GPU 2, quick 0)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument(
        "--compile", action="store_true", help="render section: through torch.compile (its first batch apart)"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads in every section (default: torch's)")
    parser.add_argument(
        "--weights",
        default=os.environ.get("SADTALKER_WEIGHTS_POLICY") or "auto",
        choices=("official", "synthetic", "auto"),
        help="weights policy (default auto)",
    )
    parser.add_argument("--batch-size", type=int, default=2, help="batch size of the one-pair clips (2)")
    parser.add_argument("--one-pair-seconds", type=float, help="one-pair clip per size (1; quick 0.12)")
    parser.add_argument("--short-seconds", type=float, help="short clip, every frame real (10; quick none)")
    parser.add_argument("--long-seconds", type=float, help="long clip (600; quick 20); 0: none")
    parser.add_argument(
        "--long-mode",
        default="auto",
        choices=("auto", "real", "ends"),
        help="long clip's generator: real on every frame, or on the first and last batches "
        "with a stand-in between (auto: real on a GPU, ends on a CPU)",
    )
    parser.add_argument("--stage-seconds", type=float, help="speech of the stages section (10; quick 1)")
    parser.add_argument("--flow-rows", type=int, help="rows of the fake-stage flow batch (100; quick 10)")
    parser.add_argument("--out", type=Path, help="JSON record (default bench/results/<date>-<host>-<device>)")
    parser.add_argument("--tiny", action="store_true", help="tests: tiny peak shapes (schema checks)")
    parser.add_argument("--gpu-suite", action="store_true", help="the GPU suite (bench/gpu.py) instead")
    parser.add_argument("--gpu-suite-on-cpu", action="store_true", help=argparse.SUPPRESS)  # code-path check
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {SECTIONS}")
    args.sections = sections
    return args


def settings(args: argparse.Namespace) -> dict[str, Any]:
    cuda = args.device.startswith("cuda")
    quick = args.quick

    def pick(value, quick_value, cpu_value, gpu_value=None):
        if value is not None:
            return value
        if quick:
            return quick_value
        return gpu_value if (cuda and gpu_value is not None) else cpu_value

    return {
        "quick": quick,
        "sections": args.sections,
        "device": args.device,
        "dtype": args.dtype,
        "compile": args.compile,
        "threads": args.threads,
        "weights": args.weights,
        "sizes": pick(args.sizes, [256], [256, 512]),
        "batch_sizes": pick(args.batch_sizes, [1, 2], [1, 2, 4, 8, 16], [1, 2, 4, 8, 16, 32]),
        "batches": pick(args.batches, 1, 2, 3),
        "warmup": pick(args.warmup, 0, 1, 2),
        "peak": {
            "repeats": 3 if quick else 5,
            "coverage": 0.5 if quick else 0.8,
            "max_shapes": 3 if quick else 8,
            "matmul_n": (2048 if quick else 4096) if not cuda else 8192,
            "tiny": args.tiny,
        },
        "stage_seconds": pick(args.stage_seconds, 1.0, 10.0),
        "stage_repeats": 1 if quick else 3,
        "batch_size": args.batch_size,
        "one_pair_seconds": pick(args.one_pair_seconds, 0.12, 1.0),
        "short_seconds": pick(args.short_seconds, None, 10.0) or None,
        "long_seconds": pick(args.long_seconds, 20.0, 600.0) or None,
        "long_mode": args.long_mode,
        "flow_seconds": 0.08 if quick else None,
        "flow_rows": pick(args.flow_rows, 10, 100),
        "flow_repeat": 1 if quick else 3,
    }


# --------------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------------


def run_section(name: str, s: dict[str, Any]) -> dict[str, Any]:
    common = {"device": s["device"], "dtype": s["dtype"], "threads": s["threads"], "weights": s["weights"]}
    if name == "peak":
        return run_child("peak", {**common, **s["peak"], "size": s["sizes"][0]})
    if name == "render":
        return {
            str(size): run_child(
                "render",
                {
                    **common,
                    "size": size,
                    "batch_sizes": s["batch_sizes"],
                    "batches": s["batches"],
                    "warmup": s["warmup"],
                    "compile": s.get("compile", False),
                },
            )
            for size in s["sizes"]
        }
    if name == "stages":
        params = {
            **common,
            "size": s["sizes"][0],
            "seconds": s["stage_seconds"],
            "repeats": s["stage_repeats"],
            "batch_size": s["batch_size"],
        }
        return run_child("stages", params)
    if name == "memory":
        from bench import memory

        return memory.run(
            {
                **common,
                "sizes": s["sizes"],
                "batch_size": s["batch_size"],
                "one_pair_seconds": s["one_pair_seconds"],
                "short_seconds": s["short_seconds"],
                "long_seconds": s["long_seconds"],
                "long_mode": s["long_mode"],
            }
        )
    if name == "flow":
        from bench import flow

        return flow.run(
            {**common, "seconds": s["flow_seconds"], "rows": s["flow_rows"], "repeat": s["flow_repeat"]}
        )
    raise ValueError(name)


# --------------------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------------------


def _target(name: str, value: Any, goal: str, ok: bool | None, note: str | None = None) -> dict[str, Any]:
    row = {"name": name, "value": value, "goal": goal, "ok": ok}
    if note:
        row["note"] = note
    return row


def _row_for_batch(render_size: dict[str, Any], batch: int) -> dict[str, Any]:
    rows = [r for r in render_size["batches"] if "error" not in r]
    return min(rows, key=lambda r: (abs(r["batch_size"] - batch), r["batch_size"]))


def targets(sections: dict[str, Any], s: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the value this run measured (``ok`` None: recorded, not judged)."""
    out = []
    peak, render = sections.get("peak"), sections.get("render") or {}
    stages, memory, flow = sections.get("stages"), sections.get("memory"), sections.get("flow")
    conv = peak and peak.get("conv_gflops")
    for size, r in render.items():
        if conv and not peak.get("tiny"):
            ratio = r["best"]["gflops"] / conv
            out.append(
                _target(
                    f"renderer GFLOP/s / measured conv throughput, {size} px (batch "
                    f"{r['best']['batch_size']})",
                    ratio,
                    ">= 0.9",
                    ratio >= 0.9,
                )
            )
    clips = {c["name"]: c for c in (memory or {}).get("clips", [])}
    one = clips.get("one_pair_256")
    if one:
        low, high = OFFICIAL_REFERENCE["s_per_frame"]
        out.append(
            _target(
                f"one-pair s/frame end to end, {one['seconds']:g} s clip, 256 px, batch {one['batch_size']}",
                one["s_per_frame"],
                f"official renderer {low}-{high} s/frame (reference field)",
                None,
                f"speed-up vs the official {low / one['s_per_frame']:.2f}-{high / one['s_per_frame']:.2f}x; "
                f"reference: {OFFICIAL_REFERENCE['conditions']}",
            )
        )
        out.append(
            _target(
                "peak RSS, one-pair process, 256 px (MB)",
                one["peak_rss_mb"],
                "< 2000",
                one["peak_rss_mb"] < 2000,
            )
        )
        out.append(
            _target(
                "renderer's share of it (MB)",
                one["renderer_share_mb"],
                "< 1500",
                one["renderer_share_mb"] < 1500,
            )
        )
    one512 = clips.get("one_pair_512")
    if one512:
        out.append(
            _target(
                "peak RSS, one-pair process, 512 px (MB)",
                one512["peak_rss_mb"],
                "< 3500",
                one512["peak_rss_mb"] < 3500,
            )
        )
    if "long" in clips and (memory or {}).get("long_over_short_peak_rss"):
        ratio = memory["long_over_short_peak_rss"]
        out.append(
            _target(
                f"peak RSS {clips['long']['seconds']:g} s clip / short clip", ratio, "flat (about 1)", None
            )
        )
    if stages and str(stages["size"]) in render and stages["size"] == 256:
        row = _row_for_batch(render[str(stages["size"])], stages.get("batch_size", 2))
        # everything the full-mode render stage does besides the generator (mapping net included), per
        # frame, over the generator's own time per frame
        without = stages["render_without_generator_s_per_frame"]["full"]
        generator = row["s_per_frame"] - row["split_s_per_frame"]["mapping"]
        ratio = without / generator
        out.append(
            _target(
                "full-mode clip: render-stage cost over the generator's time, 256 px",
                ratio,
                "<= 0.05",
                ratio <= 0.05,
                f"{without:.3g} s/frame beside the generator's {generator:.3g} (batch {row['batch_size']})",
            )
        )
    if flow:
        share = flow["projected_share_100"]
        out.append(
            _target(
                "orchestration share of wall, 100 short clips (projected)",
                share,
                "< 0.05",
                share < 0.05,
                flow["projection"],
            )
        )
        example = flow["example"]
        out.append(
            _target(
                f"orchestration share of the example batch ({example['rows']} rows, flow body)",
                example["orchestration_share_body"],
                "< 0.05 (at 100 clips)",
                None,
            )
        )
    if s["device"].startswith("cuda"):
        for size, goal in (("256", 200), ("512", 50)):
            if size in render:
                fps = render[size]["best"]["fps"]
                out.append(
                    _target(f"GPU frames/s at {size} px ({s['dtype']})", fps, f">= {goal}", fps >= goal)
                )
    return out


def gpu_targets(suite: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for size, goal in ((256, 200), (512, 50)):
        rows = [r for r in suite.get("render", []) + suite.get("compiled", []) if r["size"] == size]
        if rows:
            best = max(rows, key=lambda r: r["best"]["fps"])
            out.append(
                _target(
                    f"GPU frames/s at {size} px (best: {best['dtype']}"
                    + (", torch.compile" if best.get("compile") else "")
                    + f", batch {best['best']['batch_size']})",
                    best["best"]["fps"],
                    f">= {goal}",
                    best["best"]["fps"] >= goal,
                )
            )
    for size, by_dtype in suite.get("psnr", {}).items():
        for dtype, figures in by_dtype.items():
            value = figures["psnr_db"]
            ok = value is not None and value >= 40
            out.append(_target(f"PSNR {dtype} vs float32, {size} px (dB)", value, ">= 40", ok))
    for row in suite.get("render", []):
        if row["best"].get("of_conv_peak") is None:
            continue
        out.append(
            _target(
                f"renderer GFLOP/s / conv throughput, {row['size']} px {row['dtype']}",
                row["best"]["of_conv_peak"],
                ">= 0.9",
                row["best"]["of_conv_peak"] >= 0.9,
            )
        )
    for row in suite.get("compiled", []):
        batch = row["best"]["batch_size"]
        eager = [
            b
            for r in suite.get("render", [])
            if (r["size"], r["dtype"]) == (row["size"], row["dtype"])
            for b in r["batches"]
            if b["batch_size"] == batch and "error" not in b
        ]
        if eager:
            gain = row["best"]["fps"] / eager[0]["fps"]
            out.append(
                _target(
                    f"torch.compile / eager frames/s, {row['size']} px {row['dtype']} batch {batch}",
                    gain,
                    "> 1 (where it helps)",
                    None,
                    f"first batch (compile) {row['first_batch_s']:.3g} s",
                )
            )
    for row in suite.get("render_stage", []):
        keep = row["render_stage_fps"] / row["generator_fps"]
        out.append(
            _target(
                f"render stage (with encode) / generator frames/s, {row['size']} px "
                f"{row.get('preprocess', 'crop')}",
                keep,
                "about 1 (encode keeps up)",
                None,
                f"{row['render_stage_fps']:.3g} vs {row['generator_fps']:.3g} frames/s",
            )
        )
    return out


# --------------------------------------------------------------------------------------------------------
# the printed table
# --------------------------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) for v in row) + " |" for row in rows]
    return lines + [""]


def markdown(record: dict[str, Any]) -> str:
    m, sec = record["machine"], record["sections"]
    gpu = m.get("gpu") or {}
    commit = (record["git"].get("commit") or "?")[:12] + (" (dirty)" if record["git"].get("dirty") else "")
    weights = {True: "SYNTHETIC", False: "official", None: "none loaded"}[record.get("weights_synthetic")]
    lines = [
        f"# Benchmarks {record['date']} on {m['host']}",
        "",
        f"{m['cpu']}, {m['cpu_count']} cores, torch {m['torch']} ({m['torch_threads']} threads)"
        + f", malloc {m.get('allocator', '?')}"
        + (f", GPU {gpu.get('name')}" if gpu else "")
        + f"; git {commit}; weights {weights}"
        + f"; device {record['settings']['device']} {record['settings'].get('dtype', '')}".rstrip()
        + ("; quick" if record["settings"].get("quick") else ""),
        "",
    ]
    peak = sec.get("peak")
    if peak:
        lines += ["## Machine peak", ""]
        rows = [["matmul", f"{peak['matmul']['n']}^3", None, peak["matmul"]["gflops"]]]
        rows += [
            [
                f"{c['name']} ({c.get('layout', 'contiguous')})",
                c["per_frame_count"],
                c["share_of_conv_flops"],
                c["gflops"],
            ]
            for c in peak["conv"]
        ]
        rows += [
            [
                "conv, FLOP-weighted (the renderer's conv throughput)",
                None,
                peak["conv_flop_coverage"],
                peak["conv_gflops"],
            ]
        ]
        lines += _table(["what", "per frame", "share of conv FLOPs", "GFLOP/s"], rows)
    render = sec.get("render")
    if render:
        lines += ["## Renderer", ""]
        rows = []
        conv = (peak or {}).get("conv_gflops")
        for size, r in render.items():
            for b in r["batches"]:
                if "error" in b:
                    rows.append([size, b["batch_size"], b["error"], *[None] * 8])
                    continue
                split = b["split_s_per_frame"]
                rows.append(
                    [
                        size,
                        b["batch_size"],
                        b["s_per_frame"],
                        b["fps"],
                        b["gflops"],
                        b["gflops"] / conv if conv else None,
                        split["mapping"],
                        split["dense_motion"],
                        split["decoder"],
                        split["rest"],
                        b.get("gpu_peak_memory_mb"),
                    ]
                )
        lines += _table(
            [
                "size",
                "batch",
                "s/frame",
                "frames/s",
                "GFLOP/s",
                "of conv peak",
                "mapping s",
                "dense motion s",
                "decoder s",
                "rest s",
                "GPU MB",
            ],
            rows,
        )
        flops = [
            f"{size}: {r['gflop_per_frame']['generator']:.4g} GFLOP/frame (load {r['load_s']:.3g} s, "
            + (f"torch.compile, first batch {r['first_batch_s']:.3g} s, " if r.get("compile") else "")
            + f"peak RSS {r['peak_rss_mb']:.0f} MB)"
            for size, r in render.items()
        ]
        lines += ["; ".join(flops), ""]
        for size, r in render.items():
            ops = r.get("ops")
            if ops and ops.get("conv_share") is not None:
                others = ", ".join(
                    f"{o['op'].removeprefix('aten::')} {o['share']:.1%}" for o in ops["top_other_ops"]
                )
                lines += [
                    f"{size} px operators (profiled batch {ops['batch_size']}): convolutions "
                    f"{ops['conv_share']:.1%} of the time at {ops['conv_gflops_in_place']:.4g} GFLOP/s "
                    f"in place; then {others}",
                    "",
                ]
    stages = sec.get("stages")
    if stages:
        lines += [f"## Stages ({stages['size']} px, {stages['seconds']:g} s of speech)", ""]
        q, a, e = stages["qc"], stages["audio_to_coeffs"], stages["encode"]
        rows = [
            ["model load (landmarker, size networks, engines)", stages["load_s"]["total"], "s"],
            [
                "photo -> 3DMM, crop / full",
                f"{_f(stages['photo_to_3dmm_s']['crop'])} / {_f(stages['photo_to_3dmm_s']['full'])}",
                "s",
            ],
            ["audio -> coefficients", a["s"], f"s ({_f(a['frames_per_s'])} frames/s)"],
            [
                "render stage without the generator, crop / full",
                f"{_f(stages['render_without_generator_s_per_frame']['crop'])} / "
                f"{_f(stages['render_without_generator_s_per_frame']['full'])}",
                "s/frame",
            ],
            ["paste-back", stages["paste_back_s_per_frame"], "s/frame"],
            [
                f"paste-back, batches in {stages.get('paste_threads')} threads",
                stages.get("paste_back_batched_s_per_frame"),
                "s/frame",
            ],
            *[
                [f"encode {v['width']}x{v['height']}", v["s_per_frame"], f"s/frame ({_f(v['fps'])} frames/s)"]
                for v in e.values()
            ],
            [
                "QC cold / warm",
                f"{_f(q['cold_s'])} / {_f(q['warm_s'])}",
                f"s ({_f(q['fps_warm'])} frames/s warm)",
            ],
        ]
        lines += _table(["stage", "value", "unit"], rows)
    memory = sec.get("memory")
    if memory:
        lines += ["## One-pair process per clip (fresh process each)", ""]
        rows = [
            [
                c["name"],
                c["seconds"],
                c["size"],
                c["frames"],
                f"{c['real_generator_frames']}/{c['frames']}",
                c["peak_rss_mb"],
                c["renderer_share_mb"],
                c["s_per_frame"],
                c["render_s_per_frame"],
                c["stages"]["qc"]["seconds"],
                c["qc_verdict"],
            ]
            for c in memory["clips"]
        ]
        lines += _table(
            [
                "clip",
                "s",
                "px",
                "frames",
                "real generator",
                "peak RSS MB",
                "renderer MB",
                "s/frame e2e",
                "render s/frame",
                "QC s",
                "QC",
            ],
            rows,
        )
    flow = sec.get("flow")
    if flow:
        ex, ov = flow["example"], flow["overhead"]
        lines += ["## Flow", ""]
        rows = [
            [
                f"example batch ({ex['manifest']}), {ex['rows']} rows, one at a time",
                ex["wall_s"],
                ex["body_s"],
                ex["stage_s"],
                ex["orchestration_share_body"],
                ex["clips_per_hour"],
            ],
            [
                f"fake stages, {ov['rows']} rows: fixed {_f(ov['fixed_s'])} s, "
                f"{_f(ov['per_row_overhead_ms'])} ms/row",
                ov["flow_wall_s"]["1"],
                ov["flow_body_s"]["1"],
                ov["direct_s"],
                None,
                None,
            ],
        ]
        lines += _table(["batch", "wall s", "flow body s", "stage s", "orchestration share", "clips/h"], rows)
    if record.get("gpu_suite"):
        suite = record["gpu_suite"]
        lines += ["## GPU suite", ""]
        rows = [
            [
                r["size"],
                r["dtype"],
                b["batch_size"],
                b.get("fps", b.get("error")),
                b.get("gflops"),
                b["gflops"] / r["conv_peak_gflops"]
                if b.get("gflops") and r.get("conv_peak_gflops")
                else None,
                b.get("gpu_peak_memory_mb"),
            ]
            for r in suite.get("render", [])
            for b in r["batches"]
        ]
        lines += _table(["size", "dtype", "batch", "frames/s", "GFLOP/s", "of conv peak", "GPU MB"], rows)
        rows = [
            [dtype, p["matmul"]["gflops"], p["conv_gflops"]] for dtype, p in suite.get("peak", {}).items()
        ]
        lines += _table(["dtype", "matmul GFLOP/s", "conv GFLOP/s"], rows)
        rows = [
            [size, dtype, f["psnr_db"], f["worst_frame_psnr_db"], f["uint8_psnr_db"], f["max_abs_diff"]]
            for size, d in suite.get("psnr", {}).items()
            for dtype, f in d.items()
        ]
        lines += _table(["size", "dtype", "PSNR dB", "worst frame dB", "uint8 dB", "max abs diff"], rows)
        rows = [[size, v["fps"]] for size, v in suite.get("encode", {}).items()]
        rows += [
            [
                f"render stage {r['size']} px {r.get('preprocess', 'crop')} {r['dtype']} "
                f"(generator {_f(r['generator_fps'])} frames/s)",
                r["render_stage_fps"],
            ]
            for r in suite.get("render_stage", [])
        ]
        lines += _table(["encode alone, size / the render stage with encode", "frames/s"], rows)
        for part, error in suite.get("errors", {}).items():
            lines.append(f"**GPU suite part {part} failed**: {error.strip().splitlines()[-1]}")
    lines += ["## Targets", ""]
    lines += _table(
        ["target", "value", "goal", "met"],
        [[t["name"], t["value"], t["goal"], t["ok"]] for t in record["targets"]],
    )
    for name, error in record.get("errors", {}).items():
        lines.append(f"**{name} failed**: {error.strip().splitlines()[-1]}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------------------


def _default_out(device: str, suffix: str) -> Path:
    import socket

    name = f"{time.strftime('%Y-%m-%d')}-{socket.gethostname()}-{device.replace(':', '')}{suffix}.json"
    return REPO / "bench" / "results" / name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, json.loads(args.params), args.result)
    set_threads(args.threads)
    started = time.perf_counter()
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "date": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(args.device),
        "git": git_info(),
        "official_reference": OFFICIAL_REFERENCE,
    }
    errors: dict[str, str] = {}
    if args.gpu_suite or args.gpu_suite_on_cpu:
        from bench.gpu import NoCudaError, require_cuda

        device = "cuda" if args.device == "cpu" and not args.gpu_suite_on_cpu else args.device
        params = {"device": device, "weights": args.weights, "threads": args.threads}
        if args.gpu_suite_on_cpu:  # the suite's code paths, tiny, on the CPU (no figure means anything)
            params.update(
                allow_cpu=True,
                device="cpu",
                sizes=[256],
                dtypes=["float32", "bfloat16"],
                batch_sizes=[1],
                batches=1,
                warmup=0,
                psnr_frames=1,
                encode_frames=10,
                stage_seconds=0.08,
                stage_batch=2,
                compile_dtype="float32",
                compile_batch=1,
                repeats=1,
                tiny=True,
            )
        else:
            try:
                require_cuda(device)
            except NoCudaError as exc:
                print(f"bench: {exc}", file=sys.stderr)
                return 2
        record["settings"] = {"gpu_suite": True, **params}
        record["sections"] = {}
        try:
            record["gpu_suite"] = run_child("gpu", params)
        except Exception:
            errors["gpu_suite"] = traceback.format_exc()
            record["gpu_suite"] = {}
        suite = record["gpu_suite"]
        errors.update({f"gpu_suite.{part}": error for part, error in suite.get("errors", {}).items()})
        record["weights_synthetic"] = bool(suite.get("weights", {}).get("synthetic", True))
        record["weights"] = suite.get("weights")
        record["targets"] = gpu_targets(suite) if suite else []
        out = args.out or _default_out(device, "-gpu-suite")
    else:
        s = settings(args)
        record["settings"] = s
        sections: dict[str, Any] = {}
        for name in args.sections:
            t0 = time.perf_counter()
            print(f"bench: section {name} ...", file=sys.stderr, flush=True)
            try:
                sections[name] = run_section(name, s)
            except Exception:
                errors[name] = traceback.format_exc()
                print(f"bench: section {name} failed:\n{errors[name]}", file=sys.stderr, flush=True)
            print(f"bench: section {name} took {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        record["sections"] = sections
        weights = [w for w in _find(sections, "weights") if isinstance(w, dict) and "synthetic" in w]
        record["weights"] = weights[0] if weights else None
        flags = [w["synthetic"] for w in weights] + list(_find(sections, "synthetic_weights"))
        record["weights_synthetic"] = any(flags) if flags else None
        record["targets"] = targets(sections, s)
        out = args.out or _default_out(args.device, "-quick" if args.quick else "")
    record["errors"] = errors
    record["wall_s"] = time.perf_counter() - started
    record = rounded(record, 5)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(record))
    print(f"\nrecord: {out}")
    return 1 if errors else 0


def _find(value: Any, key: str):
    """Every value stored under ``key`` anywhere in ``value``."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                yield v
            yield from _find(v, key)
    elif isinstance(value, list):
        for v in value:
            yield from _find(v, key)


if __name__ == "__main__":
    sys.exit(main())
