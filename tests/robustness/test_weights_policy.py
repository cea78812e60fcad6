"""Findings 2 and 3: the weights policy (official | synthetic | auto) and one verified set per configuration.

Small fake files stand in for the official checkpoints (the registry's hashes are patched to theirs) and
for the synthetic ones (``ensure_synthetic_checkpoints`` is patched), so nothing here hashes or writes
725 MB. Which file a network is loaded from is observed by patching ``load_checkpoint``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

import sadtalker.loader as loader
import sadtalker.networks as networks_mod
from sadtalker.errors import WeightsError
from sadtalker.weights import registry

S256 = "SadTalker_V0.0.2_256.safetensors"
S512 = "SadTalker_V0.0.2_512.safetensors"
M229 = "mapping_00229-model.pth.tar"  # crop, extcrop, resize
M109 = "mapping_00109-model.pth.tar"  # full, extfull


class Loaded(Exception):
    """Raised by the patched load_checkpoint once it has recorded the path (no network is built)."""


@pytest.fixture
def weights_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A tmp official folder (files written with ``official(...)``) and a fake synthetic folder."""
    folder = tmp_path / "official"
    folder.mkdir()
    synthetic = tmp_path / "home" / "synthetic" / "seed-0"
    monkeypatch.setenv("SADTALKER_WEIGHTS", str(folder))
    monkeypatch.setenv("SADTALKER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SADTALKER_WEIGHTS_POLICY", raising=False)

    def fake_synthetic(seed, names=None, root=None, layout=None):
        synthetic.mkdir(parents=True, exist_ok=True)
        for name in names or (S256, S512, M229, M109):
            (synthetic / name).write_bytes(f"synthetic {seed} {name}".encode())
        (synthetic / "SYNTHETIC.json").write_text("{}")
        return synthetic

    monkeypatch.setattr(loader, "ensure_synthetic_checkpoints", fake_synthetic)

    def official(*names: str, tamper: str | None = None) -> None:
        for name in names:
            data = f"official {name}".encode()
            (folder / name).write_bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            if name == tamper:
                sha = "0" * 64
            monkeypatch.setitem(
                registry.REGISTRY, name, dataclasses.replace(registry.REGISTRY[name], sha256=sha)
            )

    loaded: list[Path] = []

    def fake_load(path):
        loaded.append(Path(path))
        raise Loaded(str(path))

    monkeypatch.setattr(networks_mod, "load_checkpoint", fake_load)  # every network file is read there
    return folder, synthetic, official, loaded


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- finding 2: the policy ---------------------------------------------------------------------------


def test_official_policy_refuses_missing_files_naming_them_and_the_fetch_command(weights_env, monkeypatch):
    folder, _, official, _ = weights_env
    official(S256, M109)  # the partial set of the issue: mapping_00229 missing
    monkeypatch.setenv("SADTALKER_WEIGHTS_POLICY", "official")
    with pytest.raises(WeightsError) as err:
        loader.Models().weights(256, "crop")
    message = str(err.value)
    assert M229 in message and "weights fetch" in message and str(folder) in message


def test_check_weights_refuses_before_any_row_work_listing_every_missing_file(weights_env):
    folder, synthetic, official, loaded = weights_env
    official(S256, M109)
    with pytest.raises(WeightsError) as err:
        loader.check_weights("official", sizes=[256, 512], preprocesses=["crop", "full"])
    message = str(err.value)
    for name in (M229, S512):
        assert name in message
    assert f"weights fetch {S512} {M229}" in message or f"weights fetch {M229} {S512}" in message
    assert f"--dest {folder}" in message
    assert not loaded and not synthetic.exists()  # no network loaded, no synthetic file written


def test_official_policy_accepts_a_set_that_covers_the_configuration(weights_env):
    folder, _, official, _ = weights_env
    official(S256, M109)
    models = loader.Models(weights_policy="official")
    full = models.weights(256, "full")
    assert not full.synthetic and full.sadtalker == folder / S256 and full.mapping == folder / M109
    report = loader.check_weights("official", sizes=[256], preprocesses=["full", "extfull"])
    assert report.kind == "official" and not report.missing


def test_synthetic_policy_ignores_official_files(weights_env):
    _, synthetic, official, _ = weights_env
    official(S256, M229, M109)
    ws = loader.Models(weights_policy="synthetic").weights(256, "crop")
    assert ws.synthetic and ws.sadtalker.parent == synthetic and ws.label.startswith("synthetic:seed0")


def test_policy_comes_from_the_environment_and_bad_values_are_refused(weights_env, monkeypatch):
    monkeypatch.setenv("SADTALKER_WEIGHTS_POLICY", "synthetic")
    assert loader.Models().weights_policy == "synthetic"
    assert loader.Models(weights_policy="auto").weights_policy == "auto"  # the argument wins
    assert loader.Models(allow_synthetic=False).weights_policy == "official"
    monkeypatch.setenv("SADTALKER_WEIGHTS_POLICY", "offical")
    with pytest.raises(WeightsError, match="official, synthetic or auto"):
        loader.Models()


def test_tampered_official_file_is_refused_not_replaced(weights_env):
    _, _, official, _ = weights_env
    official(S256, M229, M109, tamper=M229)
    for policy in ("auto", "official"):
        with pytest.raises(WeightsError, match="does not match the official"):
            loader.Models(weights_policy=policy).weights(256, "crop")


# ---- finding 3: one resolved set per configuration, labelled exactly ------------------------------------


@pytest.mark.parametrize("first", ["weights", "networks"])
def test_auto_with_a_partial_set_never_records_synthetic_networks_as_official(weights_env, first):
    """256 + mapping_00109 present, mapping_00229 missing: the issue's case. Whatever is resolved first,
    a full-mode row's networks and its recorded weights are the same files."""
    folder, synthetic, official, loaded = weights_env
    official(S256, M109)
    models = loader.Models()  # the default policy: auto
    if first == "networks":
        with pytest.raises(Loaded):
            models.recon_network(256)
    crop, full = models.weights(256, "crop"), models.weights(256, "full")
    loaded.clear()
    with pytest.raises(Loaded):
        models.recon_network(256)  # the 3DMM regressor (the ExpNet/PoseVAE/renderer come from this file)
    networks_file = loaded[-1]
    for ws in (full, crop):
        assert ws.sadtalker == networks_file, f"recorded {ws.sadtalker}, networks loaded from {networks_file}"
        assert ws.synthetic == (networks_file.parent == synthetic)
        assert ws.sha256 == {ws.sadtalker.name: _sha(ws.sadtalker), ws.mapping.name: _sha(ws.mapping)}
        assert ws.synthetic and ws.label.startswith("synthetic:seed0")  # one consistent set: synthetic
        assert M229 in ws.missing
    assert full.mapping.parent == full.sadtalker.parent  # never official mapping + synthetic networks


def test_auto_with_the_complete_set_is_official_and_labels_the_exact_files(weights_env):
    folder, _, official, loaded = weights_env
    official(S256, M229, M109)
    models = loader.Models(weights_policy="auto")
    ws = models.weights(256, "extfull")
    sha_s, sha_m = _sha(folder / S256), _sha(folder / M109)
    assert not ws.synthetic and ws.label == f"official:{sha_s[:12]}+{sha_m[:12]}"
    assert [(f["name"], f["sha256"]) for f in ws.files] == [(S256, sha_s), (M109, sha_m)]
    with pytest.raises(Loaded):
        models.recon_network(256)
    assert loaded[-1] == folder / S256


def test_check_weights_report_under_auto(weights_env):
    folder, _, official, loaded = weights_env
    official(S256, M229, M109)  # 512 missing
    report = loader.check_weights("auto", sizes=[256, 512], preprocesses=["crop", "full"])
    assert report.kind == "mixed" and report.missing == (S512,)
    assert report.sets["256/crop"].label.startswith("official:")
    assert report.sets["512/full"].label.startswith("synthetic:seed0")
    assert report.to_dict()["sets"]["256/full"]["files"][1]["name"] == M109
    assert not loaded  # checking loads no network


def test_check_weights_of_no_configuration(weights_env):
    report = loader.check_weights("official", sizes=[], preprocesses=[])
    assert report.kind == "none" and report.sets == {} and not report.synthetic


def test_render_command_refuses_under_official_before_any_work(weights_env, tmp_path: Path, capsys):
    """`sadtalker render --weights official` with mapping_00229 missing: exit 2 naming the file and the
    fetch command, and no output (no face was even looked for)."""
    from sadtalker.cli import main

    folder, _, official, loaded = weights_env
    official(S256, M109)
    out = tmp_path / "out.mp4"
    repo = Path(__file__).resolve().parents[2]
    argv = [
        "render",
        "--image",
        str(repo / "tests/data/portrait.png"),
        "--audio",
        str(repo / "tests/data/speech.wav"),
    ]
    assert main([*argv, "--out", str(out), "--weights", "official"]) == 2
    err = capsys.readouterr().err
    assert f"weights fetch {M229}" in err and str(folder) in err
    assert not out.exists() and loaded == []


def test_check_weights_under_official_names_a_missing_enhancer_file(weights_env):
    """A batch with `enhancer: gfpgan` rows is refused up front when GFPGANv1.4.pth is missing (it would
    otherwise fail row by row at the render stage)."""
    folder, _, official, _ = weights_env
    official(S256, M229, M109)
    with pytest.raises(WeightsError) as err:
        loader.check_weights("official", (256,), ("crop",), enhancers=("none", "gfpgan"))
    assert "GFPGANv1.4.pth" in str(err.value) and "weights fetch" in str(err.value)
    report = loader.check_weights("official", (256,), ("crop",), enhancers=("none",))
    assert report.kind == "official"
