"""Versions of what produces a result: this project, Python and the libraries that shape its numbers.

Read from the installed packages' metadata (nothing is imported), for ``batch.json`` and ``--version``.
"""

from __future__ import annotations

import platform
from importlib import metadata

__all__ = ["PROJECT", "version_text", "versions"]

PROJECT = "sadtalker-batch"
_LIBRARIES = ("torch", "numpy", "opencv-python", "librosa", "dlib-bin", "face-alignment", "prefect")


def versions() -> dict[str, str]:
    """``{"sadtalker-batch": ..., "python": ..., "torch": ..., ...}`` ("not installed" for a missing one)."""
    found = {PROJECT: _version(PROJECT), "python": platform.python_version()}
    for package in _LIBRARIES:
        found[package] = _version(package)
    return found


def version_text() -> str:
    """Two lines for ``--version``: the project's version, then Python's and the libraries'."""
    found = versions()
    project = found.pop(PROJECT)
    return f"{PROJECT} {project}\n" + ", ".join(f"{name} {version}" for name, version in found.items())


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
