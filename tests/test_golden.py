"""The conformance script on the reference golden set (needs ../shared), and that it can fail."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import golden_check  # noqa: E402


@pytest.mark.shared
def test_every_stage_passes_on_the_reference_set(golden_dir, capsys):
    code = golden_check.main([str(golden_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    for stage in "abcdef":
        assert f"\n{stage}:" in out
    assert "FAIL" not in out


@pytest.mark.shared
def test_a_wrong_reference_output_fails(golden_dir, tmp_path, capsys):
    broken = tmp_path / "golden"
    shutil.copytree(golden_dir, broken)
    with np.load(broken / "b_audio2exp.npz") as data:
        arrays = {key: data[key] for key in data.files}
    arrays["exp_coeff_pred"] = arrays["exp_coeff_pred"] + 1e-3
    np.savez(broken / "b_audio2exp.npz", **arrays)
    assert golden_check.main([str(broken), "--stages", "ab"]) == 1
    out = capsys.readouterr().out
    assert "b:exp_coeff_pred" in out and "FAIL" in out
    assert "a:mel" in out and "1 failed" in out


def test_not_a_golden_directory(tmp_path):
    with pytest.raises(SystemExit):
        golden_check.main([str(tmp_path)])
