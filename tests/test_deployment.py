"""prefect.yaml end to end: a local Prefect server on 127.0.0.1, `prefect deploy` of the `render-batch`
deployment, flow runs, and `prefect worker start --run-once` running them in a process work pool.

- orchestration: the worker's processes get the fake pipeline through tests/fake_site on their PYTHONPATH
  (its sitecustomize.py installs tests/pipeline_fakes.py at interpreter start-up; see there); nothing in
  the project's code switches to fakes;
- real: the same deployment renders a 2-frame clip of tests/data with the real pipeline (official weights
  when cached, synthetic otherwise) next to a photo without a face, which fails alone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from flow_helpers import fake_site_pythonpath

REPO = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))

pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``prefect server start --host 127.0.0.1`` on a free port, with its own PREFECT_HOME; the environment
    for CLI calls against it."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT="false",
        PYTHONPATH=str(REPO),
    )
    log = (home / "server.log").open("wb")
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if server.poll() is not None:
                pytest.fail(f"prefect server exited: {(home / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("prefect server did not answer in 90 s")
            time.sleep(0.5)
        yield env
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
        log.close()


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [PREFECT, "--no-prompt", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout + done.stderr


def _worker_pass(
    env: dict[str, str], pool: str, python_path: str, worker_env: dict[str, str] | None = None
) -> None:
    """One pass of a process worker on ``pool`` (``--run-once``): it runs the flow runs scheduled now."""
    worker = {**env, **(worker_env or {}), "PYTHONPATH": python_path}
    _prefect(worker, "worker", "start", "--pool", pool, "--run-once", timeout=240)


@pytest.fixture(scope="module")
def deployed(prefect_server: dict[str, str]) -> dict[str, str]:
    """The `render-batch` deployment of prefect.yaml on the test server, and its work pool."""
    env, api = prefect_server, prefect_server["PREFECT_API_URL"]
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]
    pool = spec["work_pool"]["name"]
    _prefect(env, "work-pool", "create", pool, "--type", "process")
    _prefect(env, "deploy", "--name", spec["name"])
    deployment = httpx.get(f"{api}/deployments/name/render-batch/{spec['name']}", timeout=10).json()
    schedule = deployment["schedules"][0]["schedule"]
    assert (schedule["cron"], schedule["timezone"]) == (spec["schedules"][0]["cron"], "Europe/Berlin")
    assert deployment["work_pool_name"] == pool and deployment["parameters"]["manifest"]
    assert deployment["parameters"]["weights"] == "official"  # production never renders noise silently
    assert deployment["parameters"]["allowed_prefixes"]  # where its manifests' rows may point
    return {"name": f"render-batch/{spec['name']}", "pool": pool}


def _run_deployment(
    env: dict[str, str],
    deployed: dict[str, str],
    params: dict[str, str],
    python_path: str,
    worker_env: dict[str, str] | None = None,
) -> dict:
    """Create a flow run of the deployment, let one worker pass run it, return the flow run."""
    created = _prefect(env, "deployment", "run", deployed["name"], "--params", json.dumps(params))
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", created).group(1)  # type: ignore[union-attr]
    _worker_pass(env, deployed["pool"], python_path, worker_env)
    return httpx.get(f"{env['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=10).json()


def test_prefect_yaml_deploys_and_a_worker_runs_it(
    prefect_server: dict[str, str], deployed: dict[str, str], tmp_path: Path
) -> None:
    from manifests.build import write_manifest

    (tmp_path / "p.png").write_bytes(b"photo")
    (tmp_path / "bad.png").write_bytes(b"photo NOFACE")
    (tmp_path / "s.wav").write_bytes(b"speech FRAMES=3")
    manifest = str(tmp_path / "nightly.parquet")
    write_manifest(
        [
            {"id": "ok", "image": "p.png", "audio": "s.wav"},
            {"id": "noface", "image": "bad.png", "audio": "s.wav"},
        ],
        manifest,
    )
    output = tmp_path / "out"
    # the deployment allows only the example's folders: this manifest's tree is allowed explicitly
    params = {
        "manifest": manifest,
        "output": str(output),
        "device": "cpu",
        "allowed_prefixes": [str(tmp_path)],
    }
    fake_site = fake_site_pythonpath()
    # The worker has the official files (the fakes pretend so): the deployment's `official` policy runs.
    official = {"PIPELINE_FAKES_OFFICIAL_WEIGHTS": "1"}
    run = _run_deployment(prefect_server, deployed, params, fake_site, worker_env=official)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    results = pd.read_parquet(next(output.glob("nightly-*/results.parquet"))).set_index("id")
    assert dict(results["status"]) == {"ok": "succeeded", "noface": "failed"}
    assert Path(results.loc["ok", "video_uri"]).read_bytes().startswith(b"FAKEMP4")  # the fake rendered it
    assert results.loc["ok", "weights"].startswith("official:") and not results.loc["ok", "synthetic_weights"]


def test_nightly_deployment_refuses_a_worker_without_official_weights_before_any_row_work(
    prefect_server: dict[str, str], deployed: dict[str, str], tmp_path: Path
) -> None:
    """The deployment's `weights: official` on a worker without the files: the flow run fails at once, its
    message names what is missing and how to fetch it, and no batch output is written."""
    from manifests.build import write_manifest

    (tmp_path / "p.png").write_bytes(b"photo")
    (tmp_path / "s.wav").write_bytes(b"speech FRAMES=3")
    manifest = str(tmp_path / "nightly.parquet")
    write_manifest([{"id": "ok", "image": "p.png", "audio": "s.wav"}], manifest)
    output = tmp_path / "out"
    log = tmp_path / "calls.log"
    run = _run_deployment(
        prefect_server,
        deployed,
        {"manifest": manifest, "output": str(output), "device": "cpu", "allowed_prefixes": [str(tmp_path)]},
        fake_site_pythonpath(),
        worker_env={"PIPELINE_FAKES_CALL_LOG": str(log)},
    )
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert "official weights missing" in message, message
    assert "weights fetch SadTalker_V0.0.2_256.safetensors" in message, message
    assert not output.exists()  # refused before BatchPaths.create: nothing half-written
    assert not log.exists() or "extract_face" not in log.read_text()  # no row work


def test_deployed_flow_renders_real_clips_and_fails_the_faceless_row(
    prefect_server: dict[str, str], deployed: dict[str, str], tmp_path: Path, speech_prefix
) -> None:
    """The real pipeline in the worker's flow-run process: a 2-frame clip of tests/data (about 15 s of CPU
    rendering) and a photo without a face, which fails alone with NoFaceError."""
    import numpy as np
    from PIL import Image

    from manifests.build import write_manifest

    speech_prefix(tmp_path / "two.wav", 0.0825)  # 2 frames at 25 fps (1320 samples at 16 kHz)
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(tmp_path / "wall.png")
    portrait = str(REPO / "tests" / "data" / "portrait.png")
    manifest = str(tmp_path / "real.parquet")
    rows = [
        {"id": "real", "image": portrait, "audio": "two.wav"},
        {"id": "noface", "image": "wall.png", "audio": "two.wav"},
    ]
    write_manifest(rows, manifest)
    output = tmp_path / "out"
    # No official files on this machine: the test asks for synthetic weights explicitly.
    allowed = [str(tmp_path), str(REPO / "tests" / "data")]  # the portrait is in tests/data
    params = {
        "manifest": manifest,
        "output": str(output),
        "weights": "synthetic",
        "allowed_prefixes": allowed,
    }
    run = _run_deployment(prefect_server, deployed, params, str(REPO))
    assert run["state"]["type"] == "COMPLETED", run["state"]
    results = pd.read_parquet(next(output.glob("real-*/results.parquet"))).set_index("id")
    assert results.loc["real", "status"] == "succeeded", results.loc["real", "error"]
    assert results.loc["real", "num_frames"] == 2 and results.loc["real", "num_faces"] >= 1
    video = Path(results.loc["real", "video_uri"])
    assert video.stat().st_size > 1000 and video.read_bytes()[4:8] == b"ftyp"  # an mp4 container
    assert results.loc["real", "weights"].startswith("synthetic:seed0:")
    assert (results.loc["noface", "status"], results.loc["noface", "failed_stage"]) == ("failed", "face")
    assert results.loc["noface", "error"].startswith("NoFaceError: ")


def test_submit_validates_locally_runs_the_deployment_and_waits_for_the_report(
    prefect_server: dict[str, str], deployed: dict[str, str], tmp_path: Path
) -> None:
    """`sadtalker-batch submit`: an invalid manifest is refused before anything is sent; a valid one becomes
    a flow run of the deployment, whose UI link is printed; `--wait` follows it (a worker runs it meanwhile)
    and prints the batch's counts and where its report is."""
    from manifests.build import write_manifest

    env, api = prefect_server, prefect_server["PREFECT_API_URL"]
    (tmp_path / "p.png").write_bytes(b"photo")
    (tmp_path / "s.wav").write_bytes(b"speech FRAMES=3")
    (tmp_path / "late.wav").write_bytes(b"speech FRAMES=3 QCFAIL")
    bad = str(tmp_path / "bad.parquet")
    write_manifest([{"id": "x", "image": "p.png", "audio": "s.wav", "pose_style": 3}], bad)
    frame = pd.read_parquet(bad)
    frame.loc[0, "pose_style"] = 99
    frame.to_parquet(bad)

    def runs() -> int:
        """Runs of this test's manifests (the deployment's nightly schedule adds runs of its own at any
        moment after the deploy: the server's scheduler service)."""
        found = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json()
        return sum(str(tmp_path) in str(run.get("parameters")) for run in found)

    def cli(*args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "submit", *args, "--deployment", deployed["name"]]
            + ["--allow-prefix", str(tmp_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    before = runs()
    refused = cli(bad, "--output", str(tmp_path / "out"))
    out, _ = refused.communicate(timeout=120)
    assert refused.returncode == 1 and "pose_style" in out and "nothing was sent" in out
    assert runs() == before

    manifest = str(tmp_path / "tonight.parquet")
    write_manifest(
        [
            {"id": "ok", "image": "p.png", "audio": "s.wav"},
            {"id": "late", "image": "p.png", "audio": "late.wav"},
        ],
        manifest,
    )
    waiting = cli(
        manifest,
        "--output",
        str(tmp_path / "out"),
        "--weights",
        "auto",
        "--wait",
        "--poll",
        "0.5",
        "--wait-timeout",
        "200",
        "--timeout",
        "qc_s=900",
        "--compile",
    )
    deadline = time.monotonic() + 60
    while runs() == before and time.monotonic() < deadline:
        time.sleep(0.5)
    _worker_pass(env, deployed["pool"], fake_site_pythonpath())
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 1, out  # the run completed, with one row failing QC
    ui = api[: -len("/api")]
    assert re.search(rf"watch:\s+{re.escape(ui)}/runs/flow-run/[0-9a-f-]{{36}}", out), out
    assert "Completed" in out and "2 rows, 1 succeeded, 1 failed; QC 1 pass, 0 warn, 1 fail" in out
    report = next((tmp_path / "out").glob("tonight-*/report.html"))
    assert f"report: {report}" in out and report.is_file()
    (sent,) = [
        r for r in httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).json() if "tonight" in str(r)
    ]
    assert sent["parameters"]["timeouts"] == {"qc_s": 900.0}  # `submit --timeout NAME=S` reaches the run
    assert sent["parameters"]["compile"] is True  # and `--compile`
