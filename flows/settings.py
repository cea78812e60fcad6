"""Prefect settings the project sets for offline use (no internet: loopback only).

Prefect reads its settings from the environment when it is first imported, so :func:`apply_offline_defaults`
runs when the ``flows`` or ``tasks`` package is imported, before Prefect. Every value is a default: a
variable the user has set wins.

- ``PREFECT_SERVER_ANALYTICS_ENABLED=false``: otherwise every server start logs a telemetry error offline
  (and a fresh database can log ``database is locked``).
- ``PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY=false``, ``PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS=false``,
  ``PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false``: nothing that phones home.
- ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120``: a cold ephemeral server (new database) takes
  10-15 s on 2 CPU cores, more under load; Prefect's default is 20 s.
- Under pytest (``PYTEST_VERSION`` is set by pytest >= 8.2) and when ``PREFECT_HOME`` is not set: a fresh
  project-local ``PREFECT_HOME`` under ``<repo>/.prefect/`` (git-ignored), one per test session so that
  sessions running side by side never share a SQLite database; it is removed when the session ends.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["OFFLINE_DEFAULTS", "PROJECT_PREFECT_DIR", "apply_offline_defaults"]

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
