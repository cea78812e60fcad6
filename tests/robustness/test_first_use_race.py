"""Finding 1: the first use of the audio libraries is safe when many threads make it at once.

librosa loads resampy through ``lazy_loader.load``: ``sys.modules["resampy"]`` is an
``importlib.util._LazyModule`` whose first attribute access turns it into a plain module *before* running
its code (Python < 3.12.3, CPython gh-114763). A second thread that reads ``resampy.resample`` meanwhile
(resampy's import takes ~1 s: numba) sees the half-initialised module:
``AttributeError: module 'resampy' has no attribute 'resample'``. Only a fresh process shows it, so the
test runs one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import soundfile

REPO = Path(__file__).resolve().parents[2]
THREADS = 16

# Every thread waits at a barrier, then decodes + resamples + computes the mel of its own file: the first
# resample of the process happens in all threads at once. Without the slowed import the race shows on most
# runs (measured: 15, 15, 1 and 0 of 16 threads failed in four fresh processes); with it, on every run.
SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time

    class SlowImport:
        # resampy's import is slow on a loaded worker (numba); make it slow here too, so that the race
        # window is always wide and the test fails every time on unguarded code.

        def find_spec(self, name, path=None, target=None):
            if name == "resampy.core":
                time.sleep(1.0)
            return None

    sys.meta_path.insert(0, SlowImport())
    from sadtalker.audio import load_audio, mel_spectrogram

    paths = sys.argv[2:]
    threads = int(sys.argv[1])
    barrier = threading.Barrier(threads)
    errors = []

    def work(i):
        barrier.wait()
        try:
            mel_spectrogram(load_audio(paths[i % len(paths)]))
        except BaseException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    print(json.dumps(errors))
    """
)


def _tone(path: Path, rate: int, seconds: float = 0.3) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_concurrent_first_resample_in_a_fresh_process(tmp_path: Path) -> None:
    files = [_tone(tmp_path / "a.wav", 44_100), _tone(tmp_path / "b.wav", 8_000)]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(THREADS), *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert errors == [], f"{len(errors)}/{THREADS} first calls failed: {sorted(set(errors))}"


def test_materialize_lazy_modules_loads_every_proxy(tmp_path: Path, monkeypatch) -> None:
    """The mechanism: a lazy proxy in sys.modules is a ``_LazyModule`` until loaded under our lock."""
    import importlib.util

    from sadtalker.audio.libs import materialize_lazy_modules

    (tmp_path / "lazy_probe_mod.py").write_text("import time\ntime.sleep(0.01)\nVALUE = 42\n")
    spec = importlib.util.spec_from_file_location("lazy_probe_mod", tmp_path / "lazy_probe_mod.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "lazy_probe_mod", module)
    importlib.util.LazyLoader(spec.loader).exec_module(module)
    assert type(module) is not type(sys)  # still a proxy: the code has not run
    assert "lazy_probe_mod" in materialize_lazy_modules()
    assert type(module) is type(sys) and module.__dict__["VALUE"] == 42
    assert "lazy_probe_mod" not in materialize_lazy_modules()


def test_models_build_each_entry_once_under_concurrent_first_use() -> None:
    """16 threads ask for the same network at once: built once, one instance for all; another entry's build
    is not held up by it (per-entry locks)."""
    import threading
    import time

    from sadtalker.loader import Models

    models = Models(landmarker="dlib")
    calls: list[int] = []
    slow_started = threading.Event()

    def slow_build() -> object:
        calls.append(1)
        slow_started.set()
        time.sleep(0.5)
        return object()

    barrier = threading.Barrier(16)
    results: list[object] = []

    def first_use() -> None:
        barrier.wait()
        results.append(models._get(("networks", "x"), slow_build))

    threads = [threading.Thread(target=first_use) for _ in range(16)]
    for thread in threads:
        thread.start()
    assert slow_started.wait(5)
    started = time.perf_counter()
    assert models._get(("landmarker", "y"), lambda: "fast") == "fast"
    assert time.perf_counter() - started < 0.3  # not queued behind the slow build
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 16 and len({id(r) for r in results}) == 1


def test_concurrent_writers_of_one_synthetic_file(tmp_path: Path) -> None:
    """Threads (or worker processes sharing a cache) writing the same synthetic checkpoint at once each
    rename a complete copy into place; the file loads and no temporary file is left."""
    import threading

    from sadtalker.weights.loading import load_checkpoint
    from sadtalker.weights.synthetic import synthetic_state, write_checkpoint

    rows = [(f"mapping/layer{i}.weight", "float32", (64, 64)) for i in range(16)]
    state = synthetic_state(rows, 0)
    path = tmp_path / "mapping_00229-model.pth.tar"
    barrier = threading.Barrier(8)
    errors: list[str] = []

    def write() -> None:
        barrier.wait()
        try:
            write_checkpoint(state, path)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(load_checkpoint(path)) == sorted(key for key, _, _ in rows)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
