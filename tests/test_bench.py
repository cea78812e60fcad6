"""bench/run.py (the one benchmark command): the CPU-testable parts run and write the documented record.
Figures are never asserted (they belong in notes and the README), only the record's shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "bench" / "run.py"


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(RUN), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_quick_peak_section_writes_the_record_and_prints_a_table(tmp_path: Path):
    out = tmp_path / "record.json"
    proc = _run("--quick", "--only", "peak", "--tiny", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())

    assert record["schema"] == "sadtalker-bench/1"
    assert {"date", "machine", "git", "settings", "sections", "targets", "errors", "wall_s"} <= set(record)
    machine = record["machine"]
    assert {"host", "cpu", "cpu_count", "torch", "torch_threads", "gpu"} <= set(machine)
    assert machine["torch"] == torch.__version__
    assert record["git"]["commit"] is None or len(record["git"]["commit"]) == 40
    assert record["settings"]["quick"] is True and record["settings"]["sections"] == ["peak"]
    assert record["errors"] == {}
    assert record["official_reference"]["s_per_frame"] == [8.82, 9.31]

    peak = record["sections"]["peak"]
    assert peak["matmul"]["gflops"] > 0
    kinds = {shape["kind"] for shape in peak["conv"]}
    assert kinds == {"conv2d", "conv3d"}, "the renderer's own conv2d and conv3d shapes are timed"
    for shape in peak["conv"]:
        assert shape["gflops"] > 0 and shape["per_frame_count"] >= 1
    assert peak["conv_gflops"] > 0
    # the traced per-frame FLOPs of the 256 px generator (about 1.14 TFLOP) are counted, tiny or not
    assert 1000 < peak["conv_gflop_per_frame"] < 1300

    assert "## Machine peak" in proc.stdout and "## Targets" in proc.stdout
    assert str(out) in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_suite_refuses_clearly_without_cuda(tmp_path: Path):
    out = tmp_path / "gpu.json"
    proc = _run("--gpu-suite", "--out", str(out), timeout=120)
    assert proc.returncode == 2
    assert "needs a CUDA device" in proc.stderr
    assert not out.exists()


def test_settings_defaults_full_quick_and_gpu():
    sys.path.insert(0, str(REPO))
    from bench.run import parse_args, settings

    full = settings(parse_args([]))
    assert full["sizes"] == [256, 512] and full["batch_sizes"] == [1, 2, 4, 8, 16]
    assert (full["one_pair_seconds"], full["short_seconds"], full["long_seconds"]) == (1.0, 10.0, 600.0)
    quick = settings(parse_args(["--quick"]))
    assert quick["sizes"] == [256] and quick["batch_sizes"] == [1, 2] and quick["batches"] == 1
    assert quick["short_seconds"] is None and quick["long_seconds"] == 20.0
    gpu = settings(parse_args(["--device", "cuda", "--sizes", "512"]))
    assert gpu["sizes"] == [512] and gpu["batch_sizes"][-1] == 32 and gpu["batches"] == 3
    with pytest.raises(SystemExit):
        parse_args(["--only", "peak,nonsense"])


@pytest.mark.slow
def test_gpu_suite_code_paths_run_on_the_cpu(tmp_path: Path):
    """The suite's every part, tiny, on the CPU (about a minute): the GPU run should not die of a typo."""
    out = tmp_path / "gpu.json"
    proc = _run("--gpu-suite-on-cpu", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    suite = json.loads(out.read_text())["gpu_suite"]
    assert suite["errors"] == {}
    assert {"peak", "render", "psnr", "encode", "render_stage", "compiled"} <= set(suite)
    assert suite["compiled"][0]["compile"] and suite["compiled"][0]["first_batch_s"] > 0
    assert suite["psnr"]["256"]["bfloat16"]["frames"] == 1
    assert "## GPU suite" in proc.stdout


@pytest.mark.slow
def test_quick_run_of_every_section(tmp_path: Path):
    """``bench/run.py --quick``: every section runs (minutes on 2 cores) and each target has a value."""
    out = tmp_path / "quick.json"
    proc = _run("--quick", "--out", str(out), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert set(record["sections"]) == {"peak", "render", "stages", "memory", "flow"}
    assert record["weights_synthetic"] in (True, False)
    names = " ".join(t["name"] for t in record["targets"])
    for needle in ("conv throughput", "one-pair s/frame", "peak RSS", "full-mode", "orchestration"):
        assert needle in names
    assert all(t["value"] is not None for t in record["targets"])
    clips = {c["name"]: c for c in record["sections"]["memory"]["clips"]}
    assert clips["long"]["real_generator_batches"] == 2  # the first and last batches, a stand-in between


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_operator_split_of_a_generator_batch(compile: bool):
    """bench/render.op_split: the convolutions' share and in-place rate, the heaviest other operators;
    compiled, inductor's fused oneDNN convolutions count as convolutions."""
    from test_render import NO_CXX, NO_CXX_REASON, tiny_engine

    if compile and NO_CXX is not None:
        pytest.skip(NO_CXX_REASON)

    from bench.common import set_random_source
    from bench.render import op_split

    animator = tiny_engine(compile)
    windows = set_random_source(animator, 64)
    ops = op_split(animator, windows, batch=2, flops_per_frame=1.0)
    assert ops["batch_size"] == 2 and ops["profiled_s"] > 0
    assert 0 < ops["conv_share"] < 1 and ops["conv_gflops_in_place"] > 0
    names = [o["op"] for o in ops["top_other_ops"]]
    conv_kernels = ("aten::mkldnn_convolution", "mkldnn::_convolution_pointwise")  # eager, inductor's
    assert names and not any(name.startswith(conv_kernels) for name in names)
    assert all(0 <= o["share"] < 1 for o in ops["top_other_ops"])


def test_generator_stand_in_runs_the_real_batches_and_fakes_the_rest():
    """bench/common.GeneratorStandIn (the long clip's memory run): the listed batches go through the real
    generator (and the engine's pass function), the others return the shifted source image; remove()
    restores the engine."""
    import torch
    from test_render import tiny_engine

    from bench.common import GeneratorStandIn, set_random_source

    animator = tiny_engine()
    passes = []
    animator.frames_fn = lambda f, s, d: passes.append(len(d)) or animator.generator.render_frames(f, s, d)
    stand_in = GeneratorStandIn(animator, total=3, real=(-1,))
    windows = set_random_source(animator, 64)
    image = stand_in._image
    with animator.inference_context():
        outs = [
            animator.render(animator.driving_keypoints(windows(range(2 * i, 2 * i + 2)))[1]) for i in range(3)
        ]
    assert [o.shape for o in outs] == [(2, 3, 64, 64)] * 3
    torch.testing.assert_close(outs[0][1], image[0].roll(1, dims=-1))  # frame 1: shifted by one pixel
    assert passes and stand_in.real_batches == 1 and stand_in.real_frames == 2 and stand_in.frames == 6
    stand_in.remove()
    assert "forward_from_features" not in vars(animator.generator)
