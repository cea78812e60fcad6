"""Finding 4: each (device, dtype) animator has its own modules; building one never moves another's.

No CUDA here: ``meta`` is the "other" device (``Module.to("meta")`` moves parameters exactly as
``.to("cuda")`` would). The size's networks are tiny stand-ins; the mapping net is the real (small)
synthetic mapping_00229 file.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import sadtalker.loader as loader
from sadtalker.networks import file_layout
from sadtalker.weights.synthetic import ensure_synthetic_checkpoints

M229 = "mapping_00229-model.pth.tar"


def _devices(module: nn.Module) -> set[str]:
    return {t.device.type for t in [*module.parameters(), *module.buffers()]}


def _models_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, generator: nn.Module) -> tuple:
    """A ``Models`` whose size networks are tiny stand-ins (this ``generator``) and whose mapping net is
    the real synthetic mapping_00229 file; returns ``(models, networks)``."""
    mapping = ensure_synthetic_checkpoints(0, [M229], root=tmp_path, layout=file_layout) / M229
    networks = loader._SizeNetworks(
        audio2exp=nn.Linear(2, 2), audio2pose=nn.Linear(2, 2), face_3drecon=nn.Linear(2, 2),
        kp_extractor=nn.Conv2d(3, 4, 3), generator=generator,
    )  # fmt: skip
    monkeypatch.setattr(loader.Models, "_networks", lambda self, size: networks)
    weight_set = SimpleNamespace(sadtalker=tmp_path / "x", mapping=mapping, synthetic=True, sha256={})
    monkeypatch.setattr(loader.Models, "weights", lambda self, size, preprocess: weight_set)
    return loader.Models(landmarker="dlib"), networks


def test_second_animator_on_another_device_leaves_the_first_one_in_place(tmp_path: Path, monkeypatch):
    models, networks = _models_with(
        tmp_path, monkeypatch, nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    )
    cpu = models.animator(256, "crop", "cpu", "float32")
    other = models.animator(256, "crop", "meta", "float32")

    for name in ("kp_detector", "generator", "mapping"):
        assert _devices(getattr(cpu, name)) == {"cpu"}, f"the CPU animator's {name} was moved"
        assert _devices(getattr(other, name)) == {"meta"}
    assert _devices(networks.generator) == {"cpu"} and _devices(networks.kp_extractor) == {"cpu"}
    assert cpu.generator is networks.generator  # the CPU animator shares the loaded networks (no copy)
    assert models.animator(256, "crop", "meta", "float32") is other  # built once per (device, dtype)
    assert next(cpu.generator.parameters()).dtype == torch.float32


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_animators_of_other_dtypes_on_the_cpu_share_nothing_mutable(tmp_path: Path, monkeypatch, dtype):
    """CPU animators of another dtype (autocast) may share the CPU modules: those are never modified."""
    models, _ = _models_with(tmp_path, monkeypatch, nn.Conv2d(3, 4, 3))
    first = models.animator(256, "crop", "cpu", "float32")
    second = models.animator(256, "crop", "cpu", dtype)
    assert second is not first and second.autocast_dtype == getattr(torch, dtype)
    assert next(first.generator.parameters()).dtype == torch.float32
    assert first.autocast_dtype is None


def test_a_compiled_engine_is_its_own_and_renders_through_its_compiled_pass(tmp_path: Path, monkeypatch):
    """``compile=True`` builds another engine (its own compiled pass over the shared CPU generator; the
    plain engine stays eager) once, and its frames go through that pass."""
    import sadtalker.render.animate as animate

    compiled_for: list[torch.device] = []

    def fake_compile(generator, device):
        compiled_for.append(device)
        return lambda features, kp_source, kp_driving: torch.full((kp_driving.shape[0], 3, 4, 4), 0.5)

    monkeypatch.setattr(animate, "compile_frames", fake_compile)
    models, networks = _models_with(tmp_path, monkeypatch, nn.Conv2d(3, 4, 3))
    plain = models.animator(256, "crop", "cpu", "float32")
    compiled = models.animator(256, "crop", "cpu", "float32", True)
    assert compiled is not plain and models.animator(256, "crop", "cpu", "float32", True) is compiled
    assert plain.frames_fn is None and compiled_for == [torch.device("cpu")]
    assert compiled.generator is networks.generator is plain.generator  # nothing copied or changed

    calls = []
    monkeypatch.setattr(
        compiled.generator,
        "forward_from_features",
        lambda f, s, d, frames_fn=None: calls.append(frames_fn) or frames_fn(f, s, d),
        raising=False,
    )
    source = SimpleNamespace(features=None, kp_source=None)
    assert compiled._render(source, torch.zeros(2, 15, 3)).shape == (2, 3, 4, 4)
    assert calls == [compiled.frames_fn]
