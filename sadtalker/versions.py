"""Versions of what produces a result: this project, Python and the libraries that shape its numbers.

Read from the installed packages' metadata (nothing is imported), for ``batch.json`` and ``--version``. The
memory allocator is named too: a preloaded tcmalloc makes the CPU renderer about 15 % faster than glibc's
malloc here (README, "Benchmarks"), so a timing means little without it.
"""

from __future__ import annotations

import platform
from importlib import metadata
from pathlib import Path

__all__ = ["PROJECT", "memory_allocator", "version_text", "versions"]

PROJECT = "sadtalker-batch"
_LIBRARIES = ("torch", "numpy", "opencv-python", "librosa", "dlib-bin", "face-alignment", "prefect")
_ALLOCATORS = ("libtcmalloc", "libjemalloc", "libmimalloc")


def memory_allocator(maps: str | Path = "/proc/self/maps") -> str:
    """The malloc this process runs on: the file name of a loaded tcmalloc / jemalloc / mimalloc (usually
    through ``LD_PRELOAD``), else ``"glibc"`` on Linux, or ``"unknown"`` where ``maps`` cannot be read."""
    try:
        text = Path(maps).read_text()
    except OSError:
        return "unknown"
    for line in text.splitlines():
        name = line.rsplit("/", 1)[-1] if "/" in line else ""
        if name.startswith(_ALLOCATORS):
            return name
    return "glibc"


def versions() -> dict[str, str]:
    """``{"sadtalker-batch": ..., "python": ..., "torch": ..., ..., "allocator": ...}`` ("not installed" for a
    missing library; :func:`memory_allocator`)."""
    found = {PROJECT: _version(PROJECT), "python": platform.python_version()}
    for package in _LIBRARIES:
        found[package] = _version(package)
    found["allocator"] = memory_allocator()
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
