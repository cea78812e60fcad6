"""Prefect settings the project sets for offline use (no internet: loopback only).

Prefect reads its settings from the environment when it is first imported, so :func:`apply_offline_defaults`
runs when the ``tasks`` package is imported (``flows`` imports it first), before Prefect. It lives with the
tasks because a worker process may import a task without any flow (a Dask worker unpickling one). Every
value is a default: a variable the user has set wins.

- ``PREFECT_SERVER_ANALYTICS_ENABLED=false``: otherwise every server start logs a telemetry error offline
  (and a fresh database can log ``database is locked``).
- ``PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY=false``, ``PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS=false``,
  ``PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false``: nothing that phones home.
- ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120``: a cold ephemeral server (new database) takes
  10-15 s on 2 CPU cores, more under load; Prefect's default is 20 s.
- Under pytest (``PYTEST_VERSION`` is set by pytest >= 8.2) and when ``PREFECT_HOME`` is not set: a fresh
  project-local ``PREFECT_HOME`` under ``<repo>/.prefect/`` (git-ignored), one per test session so that
  sessions running side by side never share a SQLite database; it is removed when the session ends.

Prefect's home folder is created, with its parents, before Prefect starts (:func:`ensure_prefect_home`):
Prefect itself only makes the last level, and when that fails it warns and then times out waiting for its
ephemeral server (a fresh clone has no ``.prefect/``: issue 9).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

__all__ = [
    "OFFLINE_DEFAULTS",
    "PROJECT_PREFECT_DIR",
    "apply_offline_defaults",
    "ensure_prefect_home",
    "use_prefect_home",
]

REPO = Path(__file__).resolve().parents[1]
#: Project-local Prefect state (tests, demo): git-ignored.
PROJECT_PREFECT_DIR = REPO / ".prefect"

OFFLINE_DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_offline_defaults(environ: MutableMapping[str, str] | None = None) -> None:
    """Set :data:`OFFLINE_DEFAULTS` (and a per-session test ``PREFECT_HOME`` under pytest) where unset."""
    env = os.environ if environ is None else environ
    for name, value in OFFLINE_DEFAULTS.items():
        env.setdefault(name, value)
    if "PYTEST_VERSION" in env and "PREFECT_HOME" not in env:
        PROJECT_PREFECT_DIR.mkdir(parents=True, exist_ok=True)
        home = tempfile.mkdtemp(prefix="pytest-", dir=PROJECT_PREFECT_DIR)
        env["PREFECT_HOME"] = home
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    ensure_prefect_home(env)


def ensure_prefect_home(environ: MutableMapping[str, str] | None = None) -> Path:
    """Create Prefect's home folder (``$PREFECT_HOME``, default ``~/.prefect``) with its parents.

    Returns the folder. Raises ``OSError`` with the path when it cannot be made (read-only disk, a file in
    the way), which is clearer than Prefect's warning followed by a server start-up timeout.
    """
    env = os.environ if environ is None else environ
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the Prefect home folder {home} (PREFECT_HOME): {exc}") from exc
    return home


def use_prefect_home(path: str | Path, environ: MutableMapping[str, str] | None = None) -> Path:
    """Point ``PREFECT_HOME`` at ``path`` unless the user set one, and create it; call before Prefect is
    imported (the demo keeps its state in the project's ``.prefect/demo``)."""
    env = os.environ if environ is None else environ
    env.setdefault("PREFECT_HOME", str(path))
    return ensure_prefect_home(env)
