"""Weights: layouts equal the official TSVs, the synthetic rule equals the reference, safe strict loading."""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from sadtalker.errors import WeightsError
from sadtalker.networks import file_layout
from sadtalker.weights.loading import load_checkpoint, load_strict, sub_state_dict
from sadtalker.weights.registry import SADTALKER_FILES
from sadtalker.weights.synthetic import (
    ensure_synthetic_checkpoints,
    is_synthetic,
    synthetic_state,
    write_checkpoint,
)


def read_tsv(path):
    rows = []
    for line in path.read_text().splitlines()[1:]:
        if line:
            key, dtype, shape = line.split("\t")
            rows.append((key, dtype, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return rows


@pytest.mark.shared
@pytest.mark.parametrize("name", SADTALKER_FILES)
def test_layout_equals_official_tsv(shared_dir, name):
    tsv = shared_dir / "reference" / "checkpoints" / f"{name}.tsv"
    expected = read_tsv(tsv)
    ours = file_layout(name)
    if {k: (d, s) for k, d, s in ours} != {k: (d, s) for k, d, s in expected}:
        _diff(ours, expected)
    assert [k for k, _, _ in ours] == [k for k, _, _ in expected], "state_dict order differs"


def _diff(ours, expected) -> None:
    a = {k: (d, s) for k, d, s in ours}
    b = {k: (d, s) for k, d, s in expected}
    missing = sorted(set(b) - set(a))[:5]
    extra = sorted(set(a) - set(b))[:5]
    shapes = [(k, a[k], b[k]) for k in a if k in b and a[k] != b[k]][:5]
    pytest.fail(f"missing {missing} extra {extra} different {shapes}")


@pytest.mark.shared
def test_synthetic_rule_equals_reference_script(shared_dir):
    script = shared_dir / "reference" / "make_weights.py"
    spec = importlib.util.spec_from_file_location("make_weights", script)
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    rows = [
        ("generator.decoder.up_0.conv_s.weight_orig", "float32", (8, 4, 1, 1)),
        ("generator.decoder.up_0.conv_s.weight_u", "float32", (8,)),
        ("generator.decoder.up_0.conv_s.weight_v", "float32", (4,)),
        ("kp_extractor.down.weight", "float32", (3, 1, 13, 13)),
        ("mapping/first.0.weight", "float32", (16, 70, 7)),
        ("x.bn.running_var", "float32", (5,)),
        ("x.bn.running_mean", "float32", (5,)),
        ("x.bn.weight", "float32", (5,)),
        ("x.bn.bias", "float32", (5,)),
        ("x.bn.num_batches_tracked", "int64", ()),
    ]
    for seed in (0, 20261124):
        ours = synthetic_state(rows, seed)
        theirs = make_weights.make_state(rows, seed)
        for key in theirs:
            assert ours[key].dtype == theirs[key].dtype, key
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_synthetic_state_depends_on_seed_and_key_only():
    rows = [("a.weight", "float32", (4, 3)), ("b.weight", "float32", (4, 3))]
    one = synthetic_state(rows, 0)
    assert not np.array_equal(one["a.weight"], one["b.weight"])
    np.testing.assert_array_equal(synthetic_state(rows[:1], 0)["a.weight"], one["a.weight"])
    assert not np.array_equal(synthetic_state(rows, 1)["a.weight"], one["a.weight"])
    prefixed = synthetic_state(rows, 0, prefixes=("b.",))
    assert list(prefixed) == ["b.weight"]


def test_pickle_round_trip_and_prefix_split(tmp_path):
    state = {"mapping/fc.weight": np.ones((2, 3), np.float32), "mapping/fc.bias": np.zeros(2, np.float32)}
    path = tmp_path / "m.pth.tar"
    write_checkpoint(state, path)
    flat = load_checkpoint(path)
    assert set(flat) == set(state)
    sub = sub_state_dict(flat, "mapping/")
    module = load_strict(nn.Linear(3, 2), {"weight": sub["fc.weight"], "bias": sub["fc.bias"]})
    assert torch.equal(module.weight, torch.ones(2, 3))
    with pytest.raises(WeightsError, match="no tensor under prefix"):
        sub_state_dict(flat, "generator.")


def test_safetensors_round_trip(tmp_path):
    path = tmp_path / "w.safetensors"
    write_checkpoint({"generator.w": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    flat = load_checkpoint(path)
    assert flat["generator.w"].shape == (2, 3)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"model": {"w": _Evil()}}, handle)
    with pytest.raises(WeightsError, match="weights_only"):
        load_checkpoint(path)


def test_corrupt_safetensors_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="safetensors"):
        load_checkpoint(path)


def test_strict_load_names_the_mismatch():
    with pytest.raises(WeightsError, match=r"1 missing \['bias'\].*1 unexpected \['extra'\]"):
        load_strict(nn.Linear(3, 2), {"weight": torch.zeros(2, 3), "extra": torch.zeros(1)})
    with pytest.raises(WeightsError, match="wrong shapes"):
        load_strict(nn.Linear(3, 2), {"weight": torch.zeros(3, 3), "bias": torch.zeros(2)})


def test_synthetic_mapping_file_is_marked(tmp_path):
    folder = ensure_synthetic_checkpoints(
        0, ["mapping_00229-model.pth.tar"], root=tmp_path, layout=file_layout
    )
    assert is_synthetic(folder)
    flat = load_checkpoint(folder / "mapping_00229-model.pth.tar")
    assert flat["mapping/first.0.weight"].shape == (1024, 70, 7)
    raw = torch.load(folder / "mapping_00229-model.pth.tar", weights_only=True)
    assert raw["epoch"] == 0  # the official loaders read it
