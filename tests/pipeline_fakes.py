"""TEST-ONLY stand-in for ``sadtalker.pipeline`` and ``sadtalker.loader`` in the orchestration tests.

It follows their contract (``Models.shared``, ``Models.weights`` and ``Models.landmarker_identity``,
``extract_face``, ``audio_to_coefficients``, ``render_video``, ``quality_check``), returns the real records
of :mod:`sadtalker.records` (so the tasks' contract with the pipeline cannot drift unseen) and costs
nothing: no torch, no model. It is switched on only by tests, in two ways:

- in process: the ``fake_pipeline`` fixtures (tests/test_flow.py, tests/test_s3.py) call :func:`install`
  through pytest's ``monkeypatch``, which puts this module in ``sys.modules`` as ``sadtalker.pipeline`` and
  ``sadtalker.loader`` for one test (the stage tasks import both when they run, so they find it there);
- in subprocesses (the Prefect worker and its flow-run processes, a run killed midway): the folder
  ``tests/fake_site`` is put on ``PYTHONPATH``; its ``sitecustomize.py`` (Python's own start-up hook)
  calls :func:`install`. Production never has that folder on its path; there is no switch in the
  project's code.

Behaviour is steered by markers in the input files' bytes, so a test manifest says what each row does:

- photo containing ``NOFACE``: ``NoFaceError`` (bad input: never retried);
- photo containing ``FLAKY<n>``: the first ``n`` calls for that file name raise a transient ``OSError`` (by
  name: under allowed prefixes each attempt reads its own private copy, ``sadtalker.inputs``);
- audio containing ``BADAUDIO``: ``AudioError``; ``RENDERFAIL``: the render raises ``RuntimeError``;
- audio containing ``FRAMES=<n>``: ``n`` frames (default 8);
- audio containing ``QCFAIL`` / ``QCWARN``: ``quality_check`` gives verdict fail / warn (lip sync off);
- audio containing ``HANG``: the coefficient stage blocks for 10 minutes when ``PIPELINE_FAKES_HANG=1`` is
  set in the environment (to kill a run midway; not in the render, whose CPU lock would stall other rows);
- audio containing ``DECODE``: the coefficient stage decodes the speech with the real
  ``sadtalker.audio.load_audio`` (ffmpeg, for bytes soundfile cannot read): point ``$SADTALKER_FFMPEG`` at
  a script that never ends to get a hung ffmpeg;
- audio containing ``SLOWRENDER``: the render takes 0.25 s per batch of ``batch_size`` frames and, like
  the real one, checks the stage's deadline between batches (``sadtalker.timeouts.within_deadline``).

``$PIPELINE_FAKES_SLOW_WRITE=<name>`` (subprocesses): a local write of a file of that name through
``sadtalker.storage.write_bytes`` (the real atomic path) writes half its bytes to the temporary, then waits
a minute before the rest and the rename, so a test can kill the process in the middle of that write.

The landmark backend a worker's ``Models`` reports (and its faces record) is ``$PIPELINE_FAKES_LANDMARKER``
when its models are built (``face-alignment`` by default; ``dlib`` for a worker that fell back).

Every call is recorded in :data:`CALLS` as ``(function, file name)`` (building ``Models``: ``("Models",
"pid<pid>")``), and appended to the file named by ``PIPELINE_FAKES_CALL_LOG`` when set (subprocesses).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from sadtalker.errors import AudioError, NoFaceError, WeightsError
from sadtalker.records import Coefficients, FaceRecord, VideoRecord  # the real records: the tasks' contract

FPS = 25.0
QC_PROTOCOL = "sadtalker-qc/2"
CALLS: list[tuple[str, str]] = []
_LOCK = threading.RLock()
_FLAKY_SEEN: dict[str, int] = {}


def _record(function: str, path: str | Path) -> None:
    with _LOCK:
        CALLS.append((function, Path(path).name))
        log = os.environ.get("PIPELINE_FAKES_CALL_LOG")
        if log:
            with open(log, "a") as f:
                f.write(f"{function} {Path(path).name}\n")


def calls(function: str) -> list[str]:
    """File names passed to ``function`` so far (in this process)."""
    with _LOCK:
        return [name for fn, name in CALLS if fn == function]


def reset() -> None:
    """Forget calls, flaky counters and the shared models."""
    with _LOCK:
        CALLS.clear()
        _FLAKY_SEEN.clear()
    Models._shared = {}
    Models.instances = 0


@dataclass(frozen=True)
class FakeQCReport:
    """The part of ``sadtalker.qc.QCReport`` the QC task uses."""

    record: dict

    def to_dict(self) -> dict:
        return dict(self.record)

    def source_jpeg(self) -> bytes | None:
        return b"\xff\xd8FAKEJPEG-source"

    def strip_jpeg(self) -> bytes | None:
        return None


@dataclass(frozen=True)
class WeightSet:
    sha256: dict[str, str]
    synthetic: bool

    @property
    def label(self) -> str:
        digests = "+".join(v[:12] for v in self.sha256.values())
        return f"synthetic:seed0:{digests}" if self.synthetic else f"official:{digests}"


@dataclass(frozen=True)
class WeightReport:
    policy: str
    sets: dict[str, WeightSet]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"policy": self.policy, "sets": {k: ws.label for k, ws in self.sets.items()}}


#: The official files a test pretends are in the weights folder (``official`` refuses without them).
OFFICIAL_ENV = "PIPELINE_FAKES_OFFICIAL_WEIGHTS"
#: The landmark backend a fake worker uses (``face-alignment`` when unset).
LANDMARKER_ENV = "PIPELINE_FAKES_LANDMARKER"


def resolve_policy(policy: str | None = None) -> str:
    value = (policy or os.environ.get("SADTALKER_WEIGHTS_POLICY") or "auto").strip().lower()
    if value not in ("official", "synthetic", "auto"):
        raise WeightsError(f"unknown weights policy {value!r}: use one of official, synthetic, auto")
    return value


def check_weights(
    policy: str | None = None, sizes: Any = (256,), preprocesses: Any = ("crop",), enhancers: Any = ()
) -> WeightReport:
    """Like ``sadtalker.loader.check_weights``: ``official`` refuses unless
    ``$PIPELINE_FAKES_OFFICIAL_WEIGHTS`` is set; otherwise every set is synthetic."""
    policy = resolve_policy(policy)
    official = bool(os.environ.get(OFFICIAL_ENV)) and policy != "synthetic"
    if policy == "official" and not official:
        names = [f"SadTalker_V0.0.2_{s}.safetensors" for s in sorted(set(sizes))]
        raise WeightsError(
            f"weights policy 'official': official weights missing in /fake/weights: {', '.join(names)}; "
            f"fetch them with `sadtalker-batch weights fetch {' '.join(names)}`"
        )
    model = Models(weights_policy=policy)
    sets = {f"{s}/{p}": model.weights(s, p) for s in sorted(set(sizes)) for p in sorted(set(preprocesses))}
    type(model).instances -= 1  # a check builds no shared model
    warnings = () if official else (f"weights policy {policy!r}: SYNTHETIC weights",)
    return WeightReport(policy, sets, warnings)


class Models:
    """Counts how often it is built: once per process is the contract (``sadtalker.loader.Models``)."""

    _shared: dict[str, Models] = {}
    instances = 0

    def weights(self, size: int, preprocess: str) -> WeightSet:
        mapping = "mapping_00109-model.pth.tar" if "full" in preprocess else "mapping_00229-model.pth.tar"
        return WeightSet(
            {f"SadTalker_V0.0.2_{size}.safetensors": "f" * 64, mapping: "e" * 64}, self.synthetic
        )

    def __init__(self, weights_policy: str | None = None) -> None:
        self.weights_policy = resolve_policy(weights_policy)
        self.synthetic = not (os.environ.get(OFFICIAL_ENV) and self.weights_policy != "synthetic")
        self.landmark_backend = os.environ.get(LANDMARKER_ENV) or "face-alignment"
        type(self).instances += 1

    def landmarker_identity(self) -> dict[str, str]:
        """Like ``sadtalker.loader.Models.landmarker_identity``: decided when the models are built."""
        weights = hashlib.sha256(f"fake-{self.landmark_backend}-weights".encode()).hexdigest()
        return {"backend": self.landmark_backend, "weights": weights}

    @classmethod
    def shared(cls, weights_policy: str | None = None) -> Models:
        policy = resolve_policy(weights_policy)
        with _LOCK:
            if policy not in cls._shared:
                cls._shared[policy] = cls(policy)
                _record("Models", f"pid{os.getpid()}")
            return cls._shared[policy]


def extract_face(image_path: str | Path, options: Any, models: Models | None = None) -> FaceRecord:
    _record("extract_face", image_path)
    data = Path(image_path).read_bytes()
    if b"NOFACE" in data:
        raise NoFaceError(str(image_path), "no face found in the photo")
    flaky = re.search(rb"FLAKY(\d+)", data)
    if flaky:
        with _LOCK:
            seen = _FLAKY_SEEN.get(Path(image_path).name, 0)
            _FLAKY_SEEN[Path(image_path).name] = seen + 1
        if seen < int(flaky.group(1)):
            raise OSError(f"simulated storage hiccup #{seen + 1}")
    backend = (models or Models.shared()).landmarker_identity()["backend"]
    return FaceRecord(
        source_image=_photo_mark(data),
        coeff_3dmm=np.zeros((1, 73), np.float32),
        full_coeff=np.zeros((1, 257), np.float32),
        landmarks=None,
        crop={},  # no crop: nothing here reads it
        num_faces=1,
        backend=backend,
    )


def _photo_mark(photo: bytes) -> np.ndarray:
    """A 3 x 3 "source image" made of the photo's SHA-256, so that a fake video names the photo it shows."""
    return np.frombuffer(hashlib.sha256(photo).digest()[:27], np.uint8).reshape(3, 3, 3)


def audio_to_coefficients(
    audio_path: str | Path, face: FaceRecord, options: Any, models: Models | None = None
) -> Coefficients:
    _record("audio_to_coefficients", audio_path)
    data = Path(audio_path).read_bytes()
    if b"HANG" in data and os.environ.get("PIPELINE_FAKES_HANG") == "1":
        time.sleep(600)
    if b"DECODE" in data:
        from sadtalker.audio.load import load_audio

        load_audio(audio_path)
    if b"BADAUDIO" in data:
        raise AudioError(str(audio_path), "audio is empty")
    match = re.search(rb"FRAMES=(\d+)", data)
    frames = int(match.group(1)) if match else 8
    rng = np.random.default_rng(options.seed + options.pose_style)
    return Coefficients(
        coefficients=rng.standard_normal((frames, 70)).astype(np.float32),
        num_frames=frames,
        audio_seconds=frames / FPS,
        blink=np.zeros((frames, 1), np.float32),
    )


def render_video(
    face: FaceRecord,
    coeffs: Coefficients,
    image_path: str | Path,
    audio_path: str | Path,
    out_path: str | Path,
    options: Any,
    models: Models | None = None,
    progress: bool = False,
) -> VideoRecord:
    _record("render_video", audio_path)
    audio = Path(audio_path).read_bytes()
    if b"RENDERFAIL" in audio:
        raise RuntimeError("renderer exploded")
    if b"SLOWRENDER" in audio:
        from sadtalker.timeouts import within_deadline

        def batches() -> Iterator[int]:
            for start in range(0, coeffs.num_frames, options.batch_size):
                time.sleep(0.25)
                yield start

        for _ in within_deadline(batches()):
            _record("render_batch", audio_path)
    out = Path(out_path)
    face_mark = face.source_image.tobytes().hex()
    payload = {"face": face_mark, "frames": coeffs.num_frames, "still": options.still, "t": time.time()}
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(b"FAKEMP4" + json.dumps(payload).encode())
    os.replace(tmp, out)
    return VideoRecord(
        path=str(out),
        num_frames=coeffs.num_frames,
        duration=coeffs.num_frames / FPS,
        width=options.size,
        height=options.size,
        synthetic_weights=bool((models or Models.shared()).synthetic),
        seconds_per_frame=0.0,
        frame_stats={"frames": coeffs.num_frames, "float_frames": coeffs.num_frames, "nonfinite_frames": 0},
    )


def quality_check(
    video_path: str | Path,
    face: FaceRecord,
    coeffs: Coefficients,
    image_path: str | Path,
    audio_path: str | Path,
    options: Any,
    models: Models | None = None,
    synthetic_weights: bool = False,
    thresholds: dict | None = None,
    upstream: dict | None = None,
) -> FakeQCReport:
    """A QC record in the real format; the verdict follows the audio's ``QCFAIL`` / ``QCWARN`` marker and
    the ``sync_offset_frames`` thresholds (overridable like the real ones)."""
    _record("quality_check", audio_path)
    if not Path(video_path).read_bytes().startswith(b"FAKEMP4"):
        raise RuntimeError(f"{video_path} is not a video this fake rendered")
    audio = Path(audio_path).read_bytes()
    from sadtalker.qc.thresholds import resolve_thresholds

    offset = 6.0 if b"QCFAIL" in audio else 2.0 if b"QCWARN" in audio else 0.0
    threshold = resolve_thresholds(thresholds)["sync_offset_frames"]
    verdict = threshold.verdict(offset)
    limits = threshold.to_dict()
    metrics = {
        "frames": {
            "value": coeffs.num_frames,
            "verdict": "pass",
            "threshold": None,
            "unit": "frames",
            "group": "container",
            "note": None,
        },
        "sync_offset_frames": {
            "value": offset,
            "verdict": verdict,
            "unit": "frames",
            "group": "sync",
            "note": None,
            "threshold": limits,
        },
    }
    problems = (
        [] if verdict == "pass" else [f"sync_offset_frames: {offset:g} >= {limits[verdict]:g} ({verdict})"]
    )
    return FakeQCReport(
        {
            "protocol": QC_PROTOCOL,
            "verdict": verdict,
            "problems": problems,
            "weights": "synthetic" if synthetic_weights else "official",
            "metrics": metrics,
            "series": {"fps": FPS, "mouth_opening": [], "speech_envelope": [], "best_lag_frames": None},
            "video": {"path": str(video_path), "frames": coeffs.num_frames},
            "models": {"landmarker": "fake", "face_descriptor": "fake", "syncnet": None},
            "seconds": 0.0,
        }
    )


def install(monkeypatch: Any = None) -> None:
    """Make this module ``sadtalker.pipeline`` and ``sadtalker.loader`` (through ``monkeypatch`` when given:
    undone after the test)."""
    import sadtalker

    module = sys.modules[__name__]
    for name in ("pipeline", "loader"):
        if monkeypatch is not None:
            monkeypatch.setitem(sys.modules, f"sadtalker.{name}", module)
            monkeypatch.setattr(sadtalker, name, module, raising=False)
        else:
            sys.modules[f"sadtalker.{name}"] = module
            setattr(sadtalker, name, module)
    if monkeypatch is None and os.environ.get("PIPELINE_FAKES_SLOW_WRITE"):
        _slow_writes(os.environ["PIPELINE_FAKES_SLOW_WRITE"])


def _slow_writes(name: str) -> None:
    """See the module docstring (``$PIPELINE_FAKES_SLOW_WRITE``)."""
    from sadtalker import storage, uris

    write_bytes = storage.write_bytes

    def slow(uri: str, data: bytes) -> str:
        if not uri.endswith("/" + name) or not uris.is_local(uri):
            return write_bytes(uri, data)

        def write_local(tmp: str) -> None:
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(60)
                f.write(data[len(data) // 2 :])

        return storage._write_atomic(uri, write_local, lambda fs, path: fs.pipe_file(path, data))

    storage.write_bytes = slow


def use_in_test(monkeypatch: Any) -> Iterator[ModuleType]:
    """Body of the tests' ``fake_pipeline`` fixtures: install the fakes for one test, with fresh counters and
    no retry delays (the stage tasks' backoff would only slow the tests down)."""
    from tasks.coeffs import coefficients_task
    from tasks.face import extract_face_task
    from tasks.load import load_manifest
    from tasks.qc import qc_task
    from tasks.render import render_task

    install(monkeypatch)
    reset()
    for t in (load_manifest, extract_face_task, coefficients_task, render_task, qc_task):
        monkeypatch.setattr(t, "retry_delay_seconds", [0.0, 0.0, 0.0])
    yield sys.modules[__name__]
    reset()
    quiet_prefect_exit()


def _console_to_real_stderr() -> None:
    import logging

    names = ["", *(n for n in logging.root.manager.loggerDict if n.startswith("prefect"))]
    for handler in [h for n in names for h in getattr(logging.getLogger(n), "handlers", [])]:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.stream = sys.__stderr__  # not setStream(): it flushes the closed stream
            console = getattr(handler, "console", None)
            if console is not None:
                console.file = sys.__stderr__


def quiet_prefect_exit() -> None:
    """At interpreter exit, point Prefect's console handlers at the real stderr before Prefect's own exit
    hook logs 'Stopping temporary server' (pytest has closed its capture streams by then, and the line
    would print a 'Logging error' traceback). Re-registered on every call so that it stays the last hook
    registered, which runs first."""
    import atexit

    atexit.unregister(_console_to_real_stderr)
    atexit.register(_console_to_real_stderr)
