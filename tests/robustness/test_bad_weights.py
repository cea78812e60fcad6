"""Issue 11, weights: a checkpoint that is not what it should be is refused with a WeightsError naming the
file and saying why, and nothing in it runs.

Covered elsewhere: a tampered file refused by its SHA-256 (tests/robustness/test_weights_policy.py
``test_tampered_official_file_is_refused_not_replaced``, tests/test_download.py
``test_wrong_hash_is_refused_and_deleted``), a partial official set (test_weights_policy.py: ``official``
refuses naming the missing files, ``auto`` falls back to one consistent synthetic set).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sadtalker.errors import WeightsError
from sadtalker.weights.loading import load_checkpoint


class _Payload:
    """Pickled as a call to ``os.system`` with a command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_pickle_with_a_code_payload_is_refused_and_does_not_run(tmp_path: Path, zipfile: bool) -> None:
    """A mapping file whose pickle calls ``os.system`` on load, in torch.save's two formats."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "mapping_00229-model.pth.tar"
    state = {"mapping": {"fc.weight": torch.zeros(2, 2), "fc.bias": _Payload(marker)}}
    torch.save(state, path, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert not marker.exists(), "the pickle's payload ran"
    assert str(path) in message and "weights_only=True" in message
    assert "system" in message  # what the pickle tried to call
    assert "\n" not in message and "weights_only` set to `False`" not in message  # one line, no unsafe advice


@pytest.mark.parametrize("ext", ["safetensors", "pth.tar"])
@pytest.mark.parametrize("cut", ["half", "empty"])
def test_truncated_checkpoint_is_a_clear_error(tmp_path: Path, ext: str, cut: str) -> None:
    """A cut download or copy: "corrupt or truncated" (or "empty"), never "refused" as if it held code."""
    path = tmp_path / f"weights.{ext}"
    state = {"generator.w": torch.randn(64, 64), "generator.b": torch.randn(64)}
    if ext == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"generator": state}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if cut == "half" else b"")
    with pytest.raises(WeightsError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    expected = "empty file (0 bytes)" if cut == "empty" else "corrupt or truncated"
    assert expected in message and "refused" not in message
