"""What every benchmark section shares: the machine record, timers, memory probes, inputs, and the few
entry points of the project the benchmarks call (kept here, in one place, so that renames are fixed once).

Units: seconds, MB = 10^6 bytes (``ru_maxrss`` and ``VmRSS`` are KiB), GFLOP = 10^9 floating-point
operations (a multiply-add counts 2, as ``torch.utils.flop_counter`` counts).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
PORTRAIT = DATA / "portrait.png"
SPEECH = DATA / "speech.wav"
FPS = 25

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# --------------------------------------------------------------------------------------------------------
# The project's API used by the benchmarks (the highest-level entry points; fix imports here after renames)
# --------------------------------------------------------------------------------------------------------


def models_holder(weights_policy: str | None = None):
    """A fresh :class:`sadtalker.loader.Models` (networks load on first use)."""
    from sadtalker.loader import Models

    return Models(weights_policy=weights_policy)


def render_options(**kwargs):
    from sadtalker.options import RenderOptions

    return RenderOptions(**kwargs)


def pipeline():
    """The one-pair path: ``extract_face``, ``audio_to_coefficients``, ``render_video``, ``quality_check``."""
    import sadtalker.pipeline

    return sadtalker.pipeline


def generator_class():
    from sadtalker.render.generator import OcclusionAwareSPADEGenerator

    return OcclusionAwareSPADEGenerator


def set_random_source(animator, size: int, seed: int = 0, frames: int = 64):
    """Give the render engine a fixed random source image and coefficients (speed does not depend on the
    values); returns ``windows(frame_indices) -> (B, C, 27)`` tensor on the engine's device."""
    import numpy as np
    import torch

    from sadtalker.render.animate import source_image_array
    from sadtalker.render.windows import semantic_windows, source_semantics

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    source = rng.normal(size=73).astype(np.float32)
    coeffs = (source[None, : animator.coeff_nc] + 0.1 * rng.normal(size=(frames, animator.coeff_nc))).astype(
        np.float32
    )
    animator.set_source(source_image_array(image), source_semantics(source, animator.coeff_nc))

    def windows(indices) -> torch.Tensor:
        indices = np.asarray(indices) % frames
        return torch.from_numpy(semantic_windows(coeffs, indices)).to(animator.device)

    return windows


class GeneratorStandIn:
    """Replaces the render engine's generator forward (on the instance) by a stand-in that returns the
    clip's source image, shifted right by (frame index mod 32) pixels so that the encoder and QC see
    motion, for every frame except those of the batches in ``real`` (indices of ``forward_from_features``
    calls; negative ones count from ``total``), which run the real generator. ``real_seconds``: the time
    of the real batches. :meth:`remove` restores the engine."""

    def __init__(self, animator, total: int = 0, real: tuple[int, ...] = ()):
        import torch

        self.generator = animator.generator
        self.device = str(animator.device)
        self.real_forward = self.generator.forward_from_features
        self.real_encode = self.generator.encode_source
        self.real = {i % total if total else i for i in real}
        self.calls = 0
        self.frames = 0
        self.real_batches = 0
        self.real_frames = 0
        self.real_seconds = 0.0
        self._image: torch.Tensor | None = None

        def encode_source(image):
            self._image = image
            return self.real_encode(image)

        def forward_from_features(features, kp_source, kp_driving, frames_fn=None):
            index, self.calls = self.calls, self.calls + 1
            if index in self.real:
                sync(self.device)
                start = time.perf_counter()
                out = self.real_forward(features, kp_source, kp_driving, frames_fn=frames_fn)
                sync(self.device)
                self.real_seconds += time.perf_counter() - start
                self.real_batches += 1
                self.real_frames += kp_driving.shape[0]
                self.frames += kp_driving.shape[0]
                return out
            first = self.frames
            self.frames += kp_driving.shape[0]
            return torch.stack([self._image[0].roll(k % 32, dims=-1) for k in range(first, self.frames)])

        self.generator.encode_source = encode_source
        self.generator.forward_from_features = forward_from_features

    def remove(self) -> None:
        del self.generator.encode_source
        del self.generator.forward_from_features


def weights_record(models, sizes, preprocess: str = "crop") -> dict[str, Any]:
    """The weights policy and, per size, the label of the files loaded and whether they are synthetic."""
    labels, synthetic = {}, False
    for size in sizes:
        weight_set = models.weights(size, preprocess)
        labels[str(size)] = weight_set.label
        synthetic = synthetic or bool(weight_set.synthetic)
    return {"policy": models.weights_policy, "synthetic": synthetic, "labels": labels}


# --------------------------------------------------------------------------------------------------------
# Machine, git
# --------------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    import torch

    from sadtalker.versions import memory_allocator

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": _memory_gb(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        # glibc or a preloaded tcmalloc / jemalloc (LD_PRELOAD, inherited by every section's process)
        "allocator": memory_allocator(),
        "cuda_available": torch.cuda.is_available(),
        "gpu": None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        index = (torch.device(device).index or 0) if device.startswith("cuda") else 0
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = {
            "name": props.name,
            "memory_gb": round(props.total_memory / 1e9, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        }
    return info


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 1e9, 1)
    return None


def git_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


# --------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def sync(device: str | Any) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class Marks:
    """Timestamps that do not stall the device: CUDA events on a GPU (read after one final sync),
    ``perf_counter`` on the CPU."""

    def __init__(self, device: str | Any):
        import torch

        self.cuda = str(device).startswith("cuda")
        self._torch = torch

    def mark(self):
        if self.cuda:
            event = self._torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def seconds(self, start, end) -> float:
        """Seconds from ``start`` to ``end`` (call after a sync on a GPU)."""
        if self.cuda:
            return start.elapsed_time(end) / 1000.0
        return end - start


def median(values) -> float:
    values = list(values)
    return float(statistics.median(values)) if values else float("nan")


def rounded(value: Any, digits: int = 4) -> Any:
    """Round floats (recursively) to ``digits`` significant digits for the JSON record."""
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


# --------------------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (``ru_maxrss``), MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def rss_mb() -> float:
    """This process's current resident set size (``VmRSS``), MB."""
    with contextlib.suppress(OSError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


class RssSampler:
    """Samples ``VmRSS`` every ``interval`` seconds in a thread; :meth:`stage` records, per named stage, the
    RSS at its start and the highest sample during it (a peak shorter than the interval can be missed:
    ``ru_maxrss`` gives the process's true peak)."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.current_max = 0.0
        self.stages: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.current_max = max(self.current_max, rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[dict[str, float]]:
        record: dict[str, float] = {"start_rss_mb": rss_mb()}
        self.current_max = record["start_rss_mb"]
        start = time.perf_counter()
        try:
            yield record
        finally:
            record["seconds"] = time.perf_counter() - start
            record["peak_rss_mb"] = max(self.current_max, rss_mb())
            record["process_peak_rss_mb"] = peak_rss_mb()
            self.stages[name] = record


def module_mb(*modules) -> float:
    """Bytes of the parameters and buffers of ``modules`` (shared tensors counted once), MB."""
    seen, total = set(), 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            key = tensor.data_ptr()
            if key not in seen:
                seen.add(key)
                total += tensor.numel() * tensor.element_size()
    return total / 1e6


# --------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------


def speech_wav(path: Path, seconds: float) -> Path:
    """tests/data/speech.wav looped to ``seconds`` (16 kHz PCM), written to ``path``."""
    import numpy as np
    import soundfile

    data, rate = soundfile.read(SPEECH, dtype="int16")
    n = max(1, round(seconds * rate))
    soundfile.write(path, np.resize(data, n), rate, subtype="PCM_16")
    return path


def wide_photo(path: Path, width: int = 768, height: int = 1024) -> Path:
    """The test portrait (256 x 256) in the middle of a ``width`` x ``height`` photo (edges replicated), so
    that ``full`` mode pastes a face into a photo larger than the crop, as a real photo is."""
    import cv2

    image = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    top, left = (height - h) // 2, (width - w) // 2
    wide = cv2.copyMakeBorder(
        image, top, height - h - top, left, width - w - left, borderType=cv2.BORDER_REPLICATE
    )
    cv2.imwrite(str(path), wide)
    return path


# --------------------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------------------


def run_child(section: str, params: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``bench/run.py --child SECTION`` in a fresh Python process and return its JSON result (its own
    ``peak_rss_mb`` included). The child's output goes to this process's stderr."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".json", prefix=f"bench-{section}-") as result:
        command = [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--child",
            section,
            "--params",
            json.dumps(params),
            "--result",
            result.name,
        ]
        child_env = {**os.environ, **(env or {})}
        child_env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [child_env.get("PYTHONPATH")])])
        proc = subprocess.run(command, cwd=REPO, env=child_env, stdout=sys.stderr, check=False)
        text = Path(result.name).read_text()
    if proc.returncode != 0 or not text:
        raise RuntimeError(f"section {section!r} failed in its child process (exit {proc.returncode})")
    return json.loads(text)
