"""Shared fixtures. Tests that need the reference material in ../shared skip with a reason without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SADTALKER_SHARED", REPO.parent / "shared"))
TEST_DATA = REPO / "tests" / "data"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Tests always run on synthetic weights in a project-local cache (kept between runs: the 725 MB file takes
# ~10 s to write), never on whatever official weights the user has in ~/.cache.
os.environ["SADTALKER_HOME"] = str(REPO / ".cache" / "sadtalker-tests")
os.environ.pop("SADTALKER_WEIGHTS", None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow (minutes each)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow (minutes of CPU rendering): run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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


@pytest.fixture
def fake_pipeline(monkeypatch: pytest.MonkeyPatch):
    """The fake pipeline (tests/pipeline_fakes.py) as ``sadtalker.pipeline`` / ``sadtalker.loader`` for one
    test, with fresh call counters and no retry delays."""
    import pipeline_fakes

    yield from pipeline_fakes.use_in_test(monkeypatch)


@pytest.fixture(scope="session")
def models():
    """One model holder for the whole session (networks load once, as in a worker process)."""
    from sadtalker.loader import Models

    return Models(landmarker="dlib")


def write_speech_prefix(path: Path, seconds: float) -> Path:
    """Write the first ``seconds`` of tests/data/speech.wav (16 kHz PCM-16, 1.176 s in all) to ``path``."""
    import soundfile

    data, rate = soundfile.read(TEST_DATA / "speech.wav", dtype="int16")
    soundfile.write(path, data[: int(seconds * rate)], rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def speech_prefix():
    """``speech_prefix(path, seconds)``: writes the first ``seconds`` of the test speech to ``path``."""
    return write_speech_prefix


@pytest.fixture(scope="session")
def short_speech(tmp_path_factory) -> Path:
    """The first 0.28 s (7 frames) of tests/data/speech.wav: renders cost ~12 s per frame on 2 CPU cores."""
    return write_speech_prefix(tmp_path_factory.mktemp("speech") / "short.wav", 0.28)
