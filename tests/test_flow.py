"""ORCHESTRATION tests of render_batch and its tasks, with the fake pipeline (tests/pipeline_fakes.py).

The model functions are replaced by instant fakes (no torch, no weights), so these tests check what the
batch layer does: fan-out, failure isolation, strict mode, resume after a kill, --force, retries, caching,
results, artifacts, redaction, the Dask runner and the GPU concurrency slot. The real one-pair pipeline
is covered by its own end-to-end test. Flows run on Prefect's ephemeral server (one per test session).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flow_helpers import fake_site_pythonpath, flow_run_record, make_manifest, start_run

import flows  # noqa: F401  (offline Prefect settings first)
from flows.cli import main as cli_main
from flows.render_batch import StrictModeError, render_batch
from manifests.build import write_manifest
from manifests.schema import ManifestRow
from sadtalker import storage
from sadtalker.errors import NoFaceError
from sadtalker.paths import BatchPaths
from tasks.coeffs import coefficients_task
from tasks.devices import render_slot
from tasks.face import extract_face_task
from tasks.keys import coeffs_key, face_key, render_key
from tasks.qc import qc_task
from tasks.records import StageContext
from tasks.render import render_task
from tasks.retry import is_transient, retry_if_transient

REPO = Path(__file__).resolve().parents[1]
SECRET = "Zk9-secret-VALUE-4471-do-not-leak"


def results_of(summary: Any) -> pd.DataFrame:
    return pd.read_parquet(summary.results_uri).set_index("id")


# --- task bodies and helpers, without a flow run ----------------------------------------------------------


def test_transient_classification() -> None:
    assert not is_transient(NoFaceError("x.png", "no face"))
    assert not is_transient(FileNotFoundError("x")) and not is_transient(PermissionError("x"))
    assert not is_transient(RuntimeError("model bug")) and not is_transient(ValueError("x"))
    assert (
        is_transient(OSError("I/O error"))
        and is_transient(ConnectionError())
        and is_transient(TimeoutError())
    )

    class State:
        def __init__(self, exc: BaseException | None):
            self.exc = exc

        def result(self) -> None:
            if self.exc:
                raise self.exc

    assert retry_if_transient(None, None, State(ConnectionResetError())) is True
    assert retry_if_transient(None, None, State(NoFaceError("x", "y"))) is False
    assert retry_if_transient(None, None, State(None)) is False


def test_cache_keys_depend_on_what_matters() -> None:
    weights = {"sha256": {"a": "1" * 64}, "synthetic": False}
    landmarks = {"backend": "face-alignment", "weights": "2" * 64}
    refs = {"ref_eyeblink": None, "ref_pose": None}

    def keys(**values: Any) -> tuple[str, str, str]:
        options = ManifestRow(**{"id": "a", "image": "x", "audio": "y", **values}).to_options()
        face = face_key("p" * 64, options, weights, landmarks)
        coeffs = coeffs_key(face, "a" * 64, options, refs, weights)
        return face, coeffs, render_key(face, coeffs, "p" * 64, options, weights)

    base = keys()
    assert keys(batch_size=16, id="other", image="elsewhere.png") == base  # not on chunking or names
    for changed, same_until in [
        ({"size": 512}, 0),
        ({"preprocess": "full"}, 0),
        ({"pose_style": 5}, 1),
        ({"seed": 3}, 1),
        ({"still": True}, 2),
        ({"expression_scale": 1.5}, 2),
        ({"input_yaw": [10.0]}, 2),
    ]:
        other = keys(**changed)
        assert other[:same_until] == base[:same_until] and other[same_until] != base[same_until], changed
        assert other[2] != base[2], changed  # the video always changes
    options = ManifestRow(id="a", image="x", audio="y").to_options()
    assert face_key("p" * 64, options, weights, landmarks) != face_key("q" * 64, options, weights, landmarks)
    assert face_key("p" * 64, options, weights, landmarks) != face_key(
        "p" * 64, options, {**weights, "synthetic": True}, landmarks
    )
    face = face_key("p" * 64, options, weights, landmarks)
    assert coeffs_key(face, "a" * 64, options, refs, weights) != coeffs_key(
        face, "a" * 64, options, {**refs, "ref_pose": "b" * 64}, weights
    )
    fp16 = ManifestRow(id="a", image="x", audio="y").to_options(dtype="float16", device="cuda")
    coeffs = coeffs_key(face, "a" * 64, options, refs, weights)
    assert coeffs == coeffs_key(face, "a" * 64, fp16, refs, weights)
    assert render_key(face, coeffs, "p" * 64, options, weights) != render_key(
        face, coeffs, "p" * 64, fp16, weights
    )


def test_render_slot_on_cpu_serialises_renders_without_prefect() -> None:
    with render_slot("cpu") as slot:
        assert slot["wait"] >= 0.0
    with render_slot("cpu"):
        pass


def test_stage_task_bodies_cache_by_content(tmp_path: Path, fake_pipeline: Any) -> None:
    """``task.fn``: no flow run; the second call of each stage reuses the content-addressed artefact."""
    (tmp_path / "p.png").write_bytes(b"photo")
    (tmp_path / "s.wav").write_bytes(b"speech FRAMES=6")
    row = ManifestRow(id="r1", image=str(tmp_path / "p.png"), audio=str(tmp_path / "s.wav"))
    ctx = StageContext(paths=BatchPaths.create(str(tmp_path / "out"), "b1"), device="cpu")
    face = extract_face_task.fn(row, ctx)
    assert face.image_sha256 == hashlib.sha256(b"photo").hexdigest() and not face.reused
    assert Path(face.cache_uri).exists() and Path(face.uri).exists()
    coeffs = coefficients_task.fn(row, face, ctx)
    assert (coeffs.num_frames, coeffs.reused) == (6, False)
    render = render_task.fn(row, face, coeffs, ctx)
    assert Path(render.video_uri).read_bytes().startswith(b"FAKEMP4") and render.num_frames == 6
    qc = qc_task.fn(row, face, render, coeffs, ctx)
    stored = storage.read_json(qc.uri)
    assert (qc.verdict, stored["verdict"], stored["render_key"]) == ("pass", "pass", render.key)
    assert qc.metrics["frames"] == 6.0 and qc.metrics["frames__verdict"] == "pass"
    assert Path(ctx.paths.item("r1").qc_source).read_bytes().startswith(b"\xff\xd8")
    again = [
        extract_face_task.fn(row, ctx),
        coefficients_task.fn(row, face, ctx),
        render_task.fn(row, face, coeffs, ctx),
        qc_task.fn(row, face, render, coeffs, ctx),
    ]
    assert [r.reused for r in again] == [True, True, True, True]
    assert fake_pipeline.calls("quality_check") == ["s.wav"]  # the stored QC record was reused
    assert fake_pipeline.calls("extract_face") == ["p.png"] and fake_pipeline.calls("render_video") == [
        "s.wav"
    ]
    assert fake_pipeline.Models.instances == 1


# --- the flow ---------------------------------------------------------------------------------------------


def test_bad_rows_fail_alone_and_results_say_why(tmp_path: Path, fake_pipeline: Any) -> None:
    manifest = make_manifest(
        tmp_path / "in",
        {
            "a": (b"photo-1", b"speech FRAMES=5"),
            "b": (b"photo NOFACE", b"speech"),
            "c": (b"photo-1", b"speech FRAMES=7"),  # same photo as a: its face is reused
            "d": (b"photo-2", b"BADAUDIO"),
            "e": (b"photo-3", b"speech RENDERFAIL"),
            "f": (b"photo-4", b"speech"),
            "g": (b"photo-5", b"speech"),
        },
        f={"pose_style": 3},
    )
    records = pd.read_parquet(manifest)
    records.loc[records["id"] == "f", "pose_style"] = 99  # out of range
    records.loc[records["id"] == "g", "audio"] = "missing.wav"
    records.to_parquet(manifest)

    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), workers=1, device="cpu")

    assert (summary.total, summary.succeeded, summary.failed, summary.invalid) == (7, 2, 5, 2)
    results = results_of(summary)
    assert list(results.index) == list("abcdefg") and list(results["row"]) == list(range(7))
    failed = results[results["status"] == "failed"]
    assert dict(failed["failed_stage"]) == {
        "b": "face",
        "d": "coeffs",
        "e": "render",
        "f": "validate",
        "g": "validate",
    }
    assert failed.loc["b", "error"].startswith("NoFaceError: ") and "no face" in failed.loc["b", "error"]
    assert failed.loc["d", "error"].startswith("AudioError: ")
    assert failed.loc["e", "error"] == "RuntimeError: renderer exploded"
    assert "pose_style" in failed.loc["f", "error"] and "file not found" in failed.loc["g", "error"]
    assert {t for t, _, _ in summary.failures} == set("bdefg")

    ok = results.loc[["a", "c"]]
    assert (ok["status"] == "succeeded").all() and list(ok["num_frames"]) == [5, 7]
    assert (
        ok.loc["a", "image_sha256"] == hashlib.sha256(b"photo-1").hexdigest() == ok.loc["c", "image_sha256"]
    )
    assert ok.loc["a", "face_key"] == ok.loc["c", "face_key"] and bool(ok.loc["c", "face_reused"])
    assert ok.loc["a", "audio_sha256"] == hashlib.sha256(b"speech FRAMES=5").hexdigest()
    for column in ("video_uri", "face_uri", "coeffs_uri", "qc_uri"):
        assert all(Path(u).is_file() for u in ok[column]), column
    assert (ok["duration_s"] == ok["num_frames"] / 25).all() and (ok["width"] == 256).all()
    for column in ("face_s", "coeffs_s", "render_s", "qc_s", "total_s"):
        assert (ok[column] >= 0).all()
    qc = pd.read_parquet(Path(summary.batch_uri) / "qc.parquet")
    assert list(qc["id"]) == ["a", "c"]
    assert fake_pipeline.Models.instances == 1  # models loaded once for the process
    assert sorted(fake_pipeline.calls("extract_face")) == ["a.png", "b.png", "d.png", "e.png"]  # c: cached


def test_strict_mode_fails_before_any_work(tmp_path: Path, fake_pipeline: Any) -> None:
    manifest = make_manifest(tmp_path / "in", {"a": (b"p", b"s"), "b": (b"p", b"s")}, b={"pose_style": 3})
    records = pd.read_parquet(manifest)
    records.loc[1, "pose_style"] = 77
    records.to_parquet(manifest)
    with pytest.raises(StrictModeError, match="pose_style"):
        render_batch(manifest=manifest, output=str(tmp_path / "out"), strict=True, device="cpu")
    assert fake_pipeline.CALLS == [] and not (tmp_path / "out").exists()
    assert cli_main(["run", manifest, "--output", str(tmp_path / "out"), "--strict", "--device", "cpu"]) == 2


def test_retries_for_transient_faults_only(tmp_path: Path, fake_pipeline: Any) -> None:
    manifest = make_manifest(
        tmp_path / "in", {"flaky": (b"photo FLAKY2", b"speech"), "noface": (b"photo NOFACE", b"speech")}
    )
    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cpu")
    results = results_of(summary)
    assert results.loc["flaky", "status"] == "succeeded" and results.loc["noface", "status"] == "failed"
    assert Counter(fake_pipeline.calls("extract_face")) == {"flaky.png": 3, "noface.png": 1}


def test_rerun_reuses_force_recomputes_and_failures_keep_good_outputs(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = make_manifest(tmp_path / "in", {"a": (b"pa", b"sa"), "b": (b"pb", b"sb")})
    out = str(tmp_path / "out")
    assert cli_main(["run", manifest, "--output", out, "--device", "cpu"]) == 0
    first = pd.read_parquet(next((tmp_path / "out").glob("*/results.parquet")))
    video = Path(first.loc[0, "video_uri"])
    good = video.read_bytes()
    record = Path(video.parent / "render.json").read_bytes()

    fake_pipeline.reset()
    again = render_batch(manifest=manifest, output=out, device="cpu")
    assert [("Models", f"pid{os.getpid()}")] == fake_pipeline.CALLS and again.reused == 2
    assert results_of(again)[["face_reused", "coeffs_reused", "render_reused"]].all(axis=None)

    fake_pipeline.reset()
    forced = render_batch(manifest=manifest, output=out, force=True, device="cpu")
    assert forced.reused == 0 and sorted(fake_pipeline.calls("render_video")) == ["a.wav", "b.wav"]
    assert sorted(fake_pipeline.calls("extract_face")) == ["a.png", "b.png"]
    good, record = video.read_bytes(), Path(video.parent / "render.json").read_bytes()

    def broken_render(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("GPU fell off the bus")

    monkeypatch.setattr(fake_pipeline, "render_video", broken_render)
    assert cli_main(["run", manifest, "--output", out, "--force", "--device", "cpu"]) == 1
    assert "FAILED a at render: RuntimeError: GPU fell off the bus" in capsys.readouterr().out
    assert video.read_bytes() == good and (video.parent / "render.json").read_bytes() == record
    assert cli_main(["results", str(video.parents[2]), "--failed"]) == 0
    assert "GPU fell off the bus" in capsys.readouterr().out


def test_resume_after_kill_does_only_the_missing_rows(tmp_path: Path, fake_pipeline: Any) -> None:
    """A real run (subprocess, fakes through tests/fake_site) is SIGKILLed while row c is in its coefficient
    stage, after rows a and b are done; the rerun computes only c's coefficients and video."""
    manifest = make_manifest(
        tmp_path / "in",
        {"a": (b"pa", b"sa FRAMES=3"), "b": (b"pb", b"sb FRAMES=4"), "c": (b"pc", b"HANG FRAMES=6")},
    )
    out, log = tmp_path / "out", tmp_path / "calls.log"
    proc = start_run(tmp_path, manifest, out, "--workers", "3", PIPELINE_FAKES_HANG="1")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = {p.parent.name for p in out.glob("*/items/*/render.json")}
            if done == {"a", "b"} and log.exists() and "audio_to_coefficients c.wav" in log.read_text():
                break
            time.sleep(0.2)
        else:
            tail = (tmp_path / "run.log").read_text()[-3000:]
            pytest.fail(f"the run did not reach row c's coefficients: {tail}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert not list(out.glob("*/results.parquet"))  # killed before the end

    summary = render_batch(manifest=manifest, output=str(out), device="cpu")
    assert summary.ok and summary.reused == 2
    assert fake_pipeline.calls("audio_to_coefficients") == ["c.wav"] == fake_pipeline.calls("render_video")
    assert fake_pipeline.calls("extract_face") == []
    results = results_of(summary)
    assert list(results["render_reused"]) == [True, True, False] and list(results["num_frames"]) == [3, 4, 6]


def test_secrets_never_reach_results_logs_or_artifacts(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    folder = tmp_path / f"media-{SECRET}"
    folder.mkdir()
    (folder / "leak.png").write_bytes(b"photo NOFACE")
    (folder / "ok.png").write_bytes(b"photo")
    (tmp_path / "s.wav").write_bytes(b"speech")
    manifest = str(tmp_path / "m.parquet")
    write_manifest(
        [
            {"id": i, "image": str(folder / f"{i}.png"), "audio": str(tmp_path / "s.wav")}
            for i in ("leak", "ok")
        ],
        manifest,
    )
    console = io.StringIO()
    handler = logging.StreamHandler(console)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logging.getLogger("prefect").addHandler(handler)  # what Prefect's console handler sees
    try:
        state = render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cpu", return_state=True)
    finally:
        logging.getLogger("prefect").removeHandler(handler)
    summary = state.result()
    run = flow_run_record(state.state_details.flow_run_id)

    assert summary.failed == 1 and "***" in results_of(summary).loc["leak", "error"]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in console.getvalue() and "media-***/leak.png: no face" in console.getvalue()
    artifacts, task_runs, logs = run.artifacts, run.task_runs, run.logs
    assert {a.type for a in artifacts} >= {"table", "markdown", "progress"}
    assert all(SECRET not in str(a.data) for a in artifacts) and any("***" in str(a.data) for a in artifacts)
    assert all(SECRET not in str(t.state.message) for t in task_runs if t.state)
    assert any("***" in str(t.state.message) for t in task_runs if t.state and t.state.is_failed())
    assert logs and all(SECRET not in log.message for log in logs)
    progress = [a for a in artifacts if a.type == "progress"]
    assert progress and float(progress[0].data) == 100.0


def test_cuda_renders_hold_the_gpu_concurrency_slot(tmp_path: Path, fake_pipeline: Any) -> None:
    """device=cuda (the fake renders anywhere): the render creates and holds ``gpu:<host>:<index>``."""
    from prefect.client.orchestration import get_client

    from tasks.devices import gpu_limit_name

    manifest = make_manifest(tmp_path / "in", {"a": (b"pa", b"sa")})
    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cuda")
    assert summary.ok and results_of(summary).loc["a", "device"] == "cuda"
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(gpu_limit_name("cuda"))
    assert limit.limit == 1 and limit.active_slots == 0


def test_compile_reaches_the_renderer_and_labels_the_rows(tmp_path: Path, fake_pipeline: Any) -> None:
    """compile=True: the render options ask for the compiled renderer, and render.json and the results
    say so; the render key is the same (a rerun without compile reuses the video and keeps its label)."""
    manifest = make_manifest(tmp_path / "in", {"a": (b"pa", b"sa")})
    summary = render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cpu", compile=True)
    results = results_of(summary)
    record = json.loads(Path(results.loc["a", "video_uri"]).with_name("render.json").read_text())
    assert summary.ok and bool(results.loc["a", "compiled"]) and record["compiled"] is True
    again = results_of(render_batch(manifest=manifest, output=str(tmp_path / "out"), device="cpu"))
    assert bool(again.loc["a", "render_reused"]) and bool(again.loc["a", "compiled"])
    assert again.loc["a", "render_key"] == results.loc["a", "render_key"]


def test_dask_runner_loads_models_once_per_worker_process(
    tmp_path: Path, fake_pipeline: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--runner dask: a LocalCluster of 2 processes (fakes through tests/fake_site on their PYTHONPATH)."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PYTHONPATH", fake_site_pythonpath())
    monkeypatch.setenv("PIPELINE_FAKES_CALL_LOG", str(log))
    rows = {f"r{i}": (f"photo{i}".encode(), b"speech") for i in range(4)}
    rows["bad"] = (b"NOFACE", b"speech")
    manifest = make_manifest(tmp_path / "in", rows)
    summary = render_batch(
        manifest=manifest, output=str(tmp_path / "out"), runner="dask", workers=2, device="cpu"
    )
    assert (summary.succeeded, summary.failed) == (4, 1)
    lines = [line.split() for line in log.read_text().splitlines()]
    models = Counter(arg for fn, arg in lines if fn == "Models")
    assert 1 <= len(models) <= 2 and set(models.values()) == {1}  # one load per worker process
    assert f"pid{os.getpid()}" not in models  # the work ran in the Dask workers, not here
    assert sorted(arg for fn, arg in lines if fn == "render_video") == [
        "r0.wav",
        "r1.wav",
        "r2.wav",
        "r3.wav",
    ]


def test_dask_runner_on_an_existing_scheduler(tmp_path: Path, fake_pipeline: Any) -> None:
    """--dask-address: the flow submits to a running cluster (here in this process, so the fakes apply)."""
    from distributed import LocalCluster

    manifest = make_manifest(tmp_path / "in", {"a": (b"pa", b"sa"), "b": (b"NOFACE", b"sb")})
    with LocalCluster(
        n_workers=1, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=None
    ) as cluster:
        assert (
            cli_main(
                [
                    "run",
                    manifest,
                    "-o",
                    str(tmp_path / "out"),
                    "--dask-address",
                    cluster.scheduler_address,
                    "--device",
                    "cpu",
                ]
            )
            == 1
        )
    results = pd.read_parquet(next((tmp_path / "out").glob("*/results.parquet"))).set_index("id")
    assert dict(results["status"]) == {"a": "succeeded", "b": "failed"}
