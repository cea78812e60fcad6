"""A fresh clone, as a new user meets it: the first README command (`make demo`) runs before anything
else has created `.prefect/` or `~/.prefect` (issue 9: Prefect only makes the last level of its home, warns,
then times out waiting for its ephemeral server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.settings import ensure_prefect_home, use_prefect_home

REPO = Path(__file__).resolve().parents[1]

# A flow run in a fresh process, after `import flows` (what the demo, the CLI and the tests do first).
_FLOW = """
import flows
from prefect import flow

@flow
def hello() -> int:
    return 7

assert hello() == 7
print("flow ran")
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "PYTEST_VERSION"}
    env.update(PYTHONPATH=str(REPO), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="40", **extra)
    return env


def test_ensure_prefect_home_creates_the_folder_with_its_parents(tmp_path: Path) -> None:
    home = tmp_path / "not" / "yet" / "there"
    assert ensure_prefect_home({"PREFECT_HOME": str(home)}) == home and home.is_dir()


def test_use_prefect_home_keeps_the_users_choice_and_creates_it(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path / "mine" / "home")}
    use_prefect_home(tmp_path / "demo" / "home", env)
    assert env["PREFECT_HOME"] == str(tmp_path / "mine" / "home") and (tmp_path / "mine" / "home").is_dir()
    assert not (tmp_path / "demo").exists()
    env = {}
    assert use_prefect_home(tmp_path / "demo" / "home", env).is_dir()
    assert env["PREFECT_HOME"] == str(tmp_path / "demo" / "home")


def test_an_unwritable_prefect_home_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(OSError, match="cannot create the Prefect home folder .*file/home"):
        ensure_prefect_home({"PREFECT_HOME": str(tmp_path / "file" / "home")})


@pytest.mark.timeout(120)
def test_a_flow_runs_in_a_fresh_process_whose_prefect_home_does_not_exist(tmp_path: Path) -> None:
    """Failed before the fix: 'Failed to create the Prefect home directory', then 'Timed out while
    attempting to connect to ephemeral Prefect API server'."""
    home = tmp_path / "clone" / ".prefect" / "demo"  # two missing levels, as in a fresh clone
    done = subprocess.run(
        [sys.executable, "-c", _FLOW],
        env=_env(PREFECT_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0 and "flow ran" in done.stdout, done.stderr[-3000:]
    assert home.is_dir()
    assert "Failed to create the Prefect home directory" not in done.stderr


def test_importing_flows_with_a_new_home_folder_creates_the_default_prefect_home(tmp_path: Path) -> None:
    """`sadtalker-batch run` for a user who never ran Prefect: no ~/.prefect yet."""
    home = tmp_path / "user"
    home.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "import flows"],
        env=_env(HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (home / ".prefect").is_dir()
