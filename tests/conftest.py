"""Shared fixtures. Tests that need the reference material in ../shared skip with a reason without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SADTALKER_SHARED", REPO.parent / "shared"))
TEST_DATA = REPO / "tests" / "data"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (reference SPEC, golden sets, sample media); skips the test when it is not there."""
    if not (SHARED / "reference").is_dir():
        pytest.skip(f"needs the reference material in {SHARED} (present in CI, not in a user's clone)")
    return SHARED


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return shared_dir / "reference" / "golden"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The project's own small test media (tests/data; licences in tests/data/README.md)."""
    return TEST_DATA
