"""Face enhancer (sadtalker.enhance): the GFPGAN v1.4 layout against the published architecture, strict safe
loading, deterministic batch-invariant restoration, the ``enhancer`` option and its hook in render_video.

Most tests use a small network of the same structure (64 px, narrow 1/16); the full v1.4 layout is built and
strictly loaded with synthetic weights once."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sadtalker.enhance import gfpgan as gf
from sadtalker.enhance.frames import enhance_frames, from_network, resize_back, to_network
from sadtalker.errors import WeightsError
from sadtalker.options import RenderOptions
from sadtalker.render.animate import FaceAnimator
from sadtalker.weights.loading import load_strict

TSV = Path(__file__).parent / "data" / "GFPGANv1.4.pth.tsv"
SMALL = gf.GFPGANConfig(out_size=64, num_style_feat=32, narrow=1 / 16)

# Shapes worked out by hand from TencentARC/GFPGAN gfpganv1_clean_arch.py / stylegan2_clean_arch.py with
# GFPGANer's arguments (out_size 512, num_style_feat 512, channel_multiplier 2, narrow 1, different_w,
# sft_half): the U-Net's channels are 512 * narrow * 0.5 = 256 up to 64 px, then int(128 * 2 * 0.5) = 128 at
# 128 px, 64 at 256 px, 32 at 512 px; the decoder's are twice those; 16 latents of 512 at 512 px.
PUBLISHED_SHAPES = {
    "conv_body_first.weight": (32, 3, 1, 1),  # Conv2d(3, channels['512'] = 32 * 2 * 0.5, 1)
    "conv_body_down.0.conv2.weight": (64, 32, 3, 3),  # 512 -> 256 px: 32 -> 64 channels
    "conv_body_down.6.skip.weight": (256, 256, 1, 1),  # 8 -> 4 px, bias-free skip
    "final_conv.weight": (256, 256, 3, 3),
    "final_linear.weight": (8192, 4096),  # (log2(512) * 2 - 2) * 512 from 256 * 4 * 4
    "conv_body_up.6.conv2.weight": (32, 64, 3, 3),  # 256 -> 512 px
    "toRGB.6.weight": (3, 32, 1, 1),
    "condition_scale.0.2.weight": (256, 256, 3, 3),  # sft_half: out channels, not 2x
    "condition_shift.6.0.weight": (32, 32, 3, 3),
    "condition_shift.6.2.bias": (32,),
    "stylegan_decoder.style_mlp.1.weight": (512, 512),  # index 0 is NormStyleCode
    "stylegan_decoder.style_mlp.15.bias": (512,),  # 8 linear layers at 1, 3, ..., 15
    "stylegan_decoder.constant_input.weight": (1, 512, 4, 4),
    "stylegan_decoder.style_conv1.modulated_conv.weight": (1, 512, 512, 3, 3),
    "stylegan_decoder.style_conv1.weight": (1,),  # noise strength
    "stylegan_decoder.style_conv1.bias": (1, 512, 1, 1),
    "stylegan_decoder.to_rgb1.modulated_conv.modulation.weight": (512, 512),
    "stylegan_decoder.style_convs.13.modulated_conv.weight": (1, 64, 64, 3, 3),  # 512 px: 32 * 2
    "stylegan_decoder.to_rgbs.6.modulated_conv.weight": (1, 3, 64, 1, 1),  # the final to_rgb
    "stylegan_decoder.to_rgbs.6.modulated_conv.modulation.bias": (64,),
    "stylegan_decoder.to_rgbs.6.bias": (1, 3, 1, 1),
    "stylegan_decoder.noises.noise0": (1, 1, 4, 4),
    "stylegan_decoder.noises.noise14": (1, 1, 512, 512),  # num_layers = (9 - 2) * 2 + 1 = 15 maps
}
# Encoder: first 2, 7 down blocks x 5, final conv 2, 7 up blocks x 5, 7 toRGB x 2, final linear 2,
# 7 x 2 SFT branches x 4 = 146. Decoder: style MLP 16, constant 1, style_conv1 5, to_rgb1 4,
# 14 style convs x 5, 7 to_rgbs x 4, 15 noise maps = 139.
PUBLISHED_KEYS = 146 + 139


def read_tsv(path: Path) -> list[tuple[str, str, tuple[int, ...]]]:
    rows = []
    for line in path.read_text().splitlines()[1:]:
        key, dtype, shape = line.split("\t")
        rows.append((key, dtype, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return rows


@pytest.fixture(scope="module")
def small_file(tmp_path_factory) -> Path:
    return gf.write_synthetic_gfpgan(tmp_path_factory.mktemp("gfpgan") / "small.pth", seed=0, cfg=SMALL)


@pytest.fixture(scope="module")
def small_net(small_file) -> gf.GFPGANv1Clean:
    return gf.load_gfpgan(small_file, "cpu", SMALL)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, size=(1, 40, 48, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, size=(5, 40, 48, 3))
    return np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ layout


def test_layout_equals_the_tsv():
    assert gf.gfpgan_layout() == read_tsv(TSV)
    assert gf.layout_tsv() == TSV.read_text()


def test_layout_has_the_published_shapes_and_key_count():
    layout = {key: (dtype, shape) for key, dtype, shape in gf.gfpgan_layout(prefix="")}
    assert len(layout) == PUBLISHED_KEYS == 285
    for key, shape in PUBLISHED_SHAPES.items():
        assert layout[key] == ("float32", shape), key
    assert gf.parameter_count() == 87_143_276  # x 4 bytes = 348.6 MB, the size of GFPGANv1.4.pth


def test_full_size_synthetic_weights_load_strictly():
    state = gf.synthetic_gfpgan_state(gf.V14, seed=0)
    net = load_strict(gf.GFPGANv1Clean(gf.V14), state, "GFPGAN v1.4")
    assert torch.equal(net.state_dict()["final_linear.weight"], state["final_linear.weight"])
    del state["stylegan_decoder.noises.noise3"]
    with pytest.raises(WeightsError, match=r"1 missing \['stylegan_decoder.noises.noise3'\]"):
        load_strict(gf.GFPGANv1Clean(gf.V14), state)


def test_small_config_keeps_the_structure():
    small = {k for k, _, _ in gf.gfpgan_layout(SMALL)}
    # 64 px: 4 down / up blocks, 10 latents, 9 noise maps: the same key names, fewer levels
    assert len(small) == 2 + 4 * 5 + 2 + 4 * 5 + 4 * 2 + 2 + 4 * 2 * 4 + 16 + 1 + 5 + 4 + 8 * 5 + 4 * 4 + 9
    assert small < {k for k, _, _ in gf.gfpgan_layout()}
    with pytest.raises(ValueError, match="power of two"):
        gf.GFPGANConfig(out_size=96)


# ----------------------------------------------------------------------------------------------- loading


def test_file_is_params_ema_and_loads_with_weights_only(small_file, small_net):
    raw = torch.load(small_file, map_location="cpu", weights_only=True)
    assert list(raw) == ["params_ema"]
    assert [(f"params_ema/{k}", str(v.dtype)[6:], tuple(v.shape)) for k, v in raw["params_ema"].items()] == (
        gf.gfpgan_layout(SMALL)
    )
    state = small_net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in raw["params_ema"].items())
    assert not small_net.training and not any(p.requires_grad for p in small_net.parameters())
    assert gf.load_gfpgan(small_file, "cpu", SMALL) is small_net  # loaded once per process


def _edited(small_file: Path, path: Path, edit) -> Path:
    raw = torch.load(small_file, weights_only=True)
    edit(raw["params_ema"])
    torch.save(raw, path)
    return path


def test_missing_key_is_refused(small_file, tmp_path):
    path = _edited(small_file, tmp_path / "m.pth", lambda s: s.pop("condition_scale.1.2.bias"))
    with pytest.raises(WeightsError, match=r"1 missing \['condition_scale.1.2.bias'\]"):
        gf.load_gfpgan(path, "cpu", SMALL)


def test_extra_key_is_refused(small_file, tmp_path):
    def edit(state):
        state["stylegan_decoder.noises.noise99"] = torch.zeros(1, 1, 4, 4)

    path = _edited(small_file, tmp_path / "x.pth", edit)
    with pytest.raises(WeightsError, match=r"1 unexpected \['stylegan_decoder.noises.noise99'\]"):
        gf.load_gfpgan(path, "cpu", SMALL)


def test_wrong_architecture_and_code_payload_are_refused(small_file, tmp_path):
    with pytest.raises(WeightsError, match="wrong shapes"):
        gf.load_gfpgan(small_file, "cpu", gf.V14)  # the small file is not v1.4
    torch.save({"params_ema": {"x": torch.zeros(1)}, "opt": SimpleNamespace(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="weights_only"):
        gf.load_gfpgan(tmp_path / "evil.pth", "cpu", SMALL)
    with pytest.raises(WeightsError, match="no params_ema"):
        gf.gfpgan_state_from_checkpoint({"generator.x": torch.zeros(1)})


# ------------------------------------------------------------------------------------------------ network


def _grouped_modulated_conv(mod: gf.ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The published formulation: a per-sample modulated (and demodulated) weight, one grouped conv."""
    b, c = x.shape[:2]
    k = mod.weight.shape[-1]
    weight = mod.weight * mod.modulation(style).view(b, 1, c, 1, 1)
    if mod.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8).view(b, -1, 1, 1, 1)
    if mod.upsample:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    out = F.conv2d(x.reshape(1, b * c, *x.shape[2:]), weight.reshape(-1, c, k, k), padding=k // 2, groups=b)
    return out.view(b, -1, *out.shape[2:])


@pytest.mark.parametrize("demodulate, upsample, k", [(True, False, 3), (True, True, 3), (False, False, 1)])
def test_modulated_conv_equals_the_grouped_formulation(demodulate, upsample, k):
    torch.manual_seed(0)
    mod = gf.ModulatedConv2d(8, 6, k, 16, demodulate=demodulate, upsample=upsample)
    with torch.no_grad():
        mod.weight.normal_(0, 1 / math.sqrt(8 * k * k))
        mod.modulation.weight.normal_(0, 0.25)
        mod.modulation.bias.fill_(1.0)
        x, style = torch.randn(3, 8, 5, 5), torch.randn(3, 16)
        torch.testing.assert_close(
            mod(x, style), _grouped_modulated_conv(mod, x, style), atol=1e-5, rtol=1e-5
        )


def test_output_is_deterministic_and_batch_invariant(small_net, small_file, tmp_path, frames):
    x = to_network(frames, SMALL.out_size)
    with torch.inference_mode():
        batch = small_net(x)
        single = torch.cat([small_net(x[i : i + 1]) for i in range(len(x))])
        again = small_net(x)
    assert batch.shape == (5, 3, 64, 64) and torch.isfinite(batch).all()
    torch.testing.assert_close(batch, single, atol=1e-5, rtol=0)
    assert torch.equal(batch, again)  # stored noise maps: no random draw
    other = gf.load_gfpgan(gf.write_synthetic_gfpgan(tmp_path / "b.pth", seed=0, cfg=SMALL), "cpu", SMALL)
    with torch.inference_mode():
        assert torch.equal(other(x), batch)  # same seed, same tensors, same output


def test_enhance_frames_batches_and_shapes(small_net, frames):
    out = enhance_frames(frames, small_net, "cpu", batch_size=2)
    assert out.shape == frames.shape and out.dtype == np.uint8
    one_by_one = np.stack([enhance_frames(f, small_net, "cpu") for f in frames])
    diff = np.abs(out.astype(int) - one_by_one)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.999  # at most a rounding step apart
    assert np.abs(out.astype(int) - frames).mean() > 5  # it does change the picture
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    restored = enhance_frames(tensor, small_net, batch_size=3)
    assert restored.shape == tensor.shape and restored.dtype == torch.float32
    assert float(restored.min()) >= 0 and float(restored.max()) <= 1
    with pytest.raises(ValueError, match="uint8"):
        enhance_frames(frames.astype(np.float32), small_net)


def test_pre_and_post_processing():
    frame = np.zeros((2, 2, 3), np.uint8)
    frame[0, 0], frame[0, 1], frame[1, 0] = 255, 128, 1
    x = to_network(frame[None], size=2)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0] and x[0, 0, 1, 1] == -1.0
    assert float(x[0, 0, 0, 1]) == pytest.approx((128 / 255 - 0.5) / 0.5, abs=1e-6)  # float32
    assert to_network(np.zeros((1, 100, 80, 3), np.uint8)).shape == (1, 3, 512, 512)
    y = torch.tensor([-3.0, -1.0, 0.0, 0.5, 1.0, 7.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    # clamp to [-1, 1], (y + 1) / 2 * 255, round half to even: 0 -> 127.5 -> 128
    assert from_network(y)[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]
    faces = np.zeros((2, 512, 512, 3), np.uint8)
    assert resize_back(faces, 246, 256).shape == (2, 246, 256, 3)
    assert resize_back(faces, 512, 512) is faces


# -------------------------------------------------------------------------------------- option and keys


def test_option_schema_cli_and_render_key():
    import typer

    from manifests.schema import ManifestRow
    from sadtalker.cli import with_render_options
    from sadtalker.cli_base import run_app
    from tasks.keys import render_key

    assert RenderOptions().enhancer == "none"
    with pytest.raises(ValueError, match="enhancer"):
        RenderOptions(enhancer="codeformer")
    row = ManifestRow(id="a", image="x.png", audio="y.wav", enhancer="gfpgan")
    assert row.to_options().enhancer == "gfpgan"
    parsed: list[RenderOptions] = []
    probe = typer.Typer()  # a command with the render flags of `sadtalker render`
    probe.command()(with_render_options(lambda options: parsed.append(options)))
    assert run_app(probe, ["--enhancer", "gfpgan"], "probe") == 0
    assert parsed[0].enhancer == "gfpgan"

    weights = {"sha256": {"a": "1" * 64}, "synthetic": False}
    none = RenderOptions()
    key = render_key("f", "c", "p" * 64, none, weights)
    assert render_key("f", "c", "p" * 64, none, weights, enhancer={"name": "x"}) == key  # none: unchanged
    on = none.model_copy(update={"enhancer": "gfpgan"})
    official = render_key("f", "c", "p" * 64, on, weights, enhancer={"name": "gfpgan", "sha256": "a" * 64})
    other = render_key("f", "c", "p" * 64, on, weights, enhancer={"name": "gfpgan", "sha256": "b" * 64})
    assert len({key, official, other}) == 3


def test_weights_cli_knows_gfpgan(tmp_path, monkeypatch, capsys):
    from sadtalker.weights import __main__ as cli
    from sadtalker.weights.registry import REGISTRY

    entry = REGISTRY["GFPGANv1.4.pth"]
    assert entry.urls == ("https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/GFPGANv1.4.pth",)
    assert entry.sha256 == "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"
    fetched = []
    monkeypatch.setattr(cli, "fetch", lambda weight, dest, **kw: fetched.append(weight.name) or dest)
    assert cli.main(["fetch", "--no-progress"]) == 0
    assert "GFPGANv1.4.pth" not in fetched  # optional: fetched by name only
    fetched.clear()
    assert cli.main(["fetch", "gfpgan", "--dest", str(tmp_path)]) == 0
    assert fetched == ["GFPGANv1.4.pth"]
    capsys.readouterr()
    assert cli.main(["list", "--dest", str(tmp_path), "--no-hash"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("GFPGANv1.4.pth"))
    assert "(enhancer)" in line and " no " in line


def test_enhancer_weights_follow_the_render(tmp_path, monkeypatch, small_file):
    from sadtalker.enhance import weights as ew
    from sadtalker.weights import registry

    monkeypatch.setenv("SADTALKER_HOME", str(tmp_path / "home"))
    official = tmp_path / "official"
    official.mkdir()
    with pytest.raises(WeightsError, match="sadtalker weights fetch GFPGANv1.4.pth --dest"):
        ew.resolve_enhancer_weights("gfpgan", official, synthetic=False)
    (official / "GFPGANv1.4.pth").write_bytes(small_file.read_bytes())
    with pytest.raises(WeightsError, match="does not match the official e2cd4703"):
        ew.resolve_enhancer_weights("gfpgan", official, synthetic=False)
    from sadtalker.hashing import sha256_file

    sha = sha256_file(small_file)
    entry = dataclasses.replace(registry.REGISTRY["GFPGANv1.4.pth"], sha256=sha)
    monkeypatch.setitem(registry.REGISTRY, "GFPGANv1.4.pth", entry)
    found = ew.resolve_enhancer_weights("gfpgan", official, synthetic=False)
    assert (found.path, found.sha256, found.synthetic) == (official / "GFPGANv1.4.pth", sha, False)
    assert found.label == f"gfpgan:official:{sha[:12]}"
    # synthetic renders get a synthetic enhancer (small here, to keep the test fast), never the official file
    real_writer = gf.write_synthetic_gfpgan
    monkeypatch.setattr(gf, "write_synthetic_gfpgan", lambda path, seed: real_writer(path, seed, SMALL))
    fake = ew.resolve_enhancer_weights("gfpgan", official, synthetic=True)
    assert fake.synthetic and fake.path.parent == tmp_path / "home" / "synthetic" / "seed-0"
    assert (fake.path.parent / "SYNTHETIC.json").is_file()
    assert fake.fingerprint() == {"name": "gfpgan", "sha256": sha256_file(fake.path), "synthetic": True}


# ------------------------------------------------------------------------------------ render_video hook


class _FakeAnimator(FaceAnimator):
    """The engine's clip loop (:meth:`FaceAnimator.frames`) around flat grey-ramp frames (no network): what
    reaches the encoder is then easy to compare."""

    coeff_nc = 70

    def __init__(self):
        pass

    @property
    def device(self):  # the CPU: render_video post-processes in line (no prefetch thread)
        import torch

        return torch.device("cpu")

    def set_source(self, image, semantics):
        pass

    def clear_source(self):
        pass

    def animate(self, targets, batch_size, **angles):
        ramp = torch.linspace(0.2, 0.8, 256).view(1, 1, 1, 256).expand(1, 3, 256, 256)
        for start in range(0, len(targets), batch_size):
            count = min(batch_size, len(targets) - start)
            yield ramp.expand(count, -1, -1, -1).clone()


class _FakeModels:
    def __init__(self, net):
        self.net, self.calls = net, []

    def animator(self, size, preprocess, device, dtype, compile=False):
        return _FakeAnimator()

    def weights(self, size, preprocess):
        return SimpleNamespace(synthetic=True)

    def enhancer(self, name, size, preprocess, device="cpu"):
        self.calls.append((name, size, preprocess, device))
        return None if name == "none" else self.net


def test_render_video_enhances_the_face_before_resizing(tmp_path, monkeypatch, small_net, speech_prefix):
    from sadtalker.face.crop import CropRecord
    from sadtalker.pipeline import render_video
    from sadtalker.records import Coefficients, FaceRecord
    from sadtalker.video import VideoWriter

    crop = CropRecord(
        "crop",
        (256, 256),
        (256, 256),
        1,
        (0, 0, 256, 256),
        (0.0, 0.0, 256.0, 246.0),
        (256, 246),
        (0, 0, 256, 256),
        256,
    )
    rng = np.random.default_rng(0)
    face = FaceRecord(
        np.full((256, 256, 3), 128, np.uint8),
        rng.normal(size=(1, 73)).astype(np.float32),
        np.zeros((1, 257), np.float32),
        None,
        crop.to_dict(),
        1,
        "test",
    )
    coeffs = Coefficients(rng.normal(size=(3, 70)).astype(np.float32), 3, 0.12, np.zeros((3, 1), np.float32))
    audio = speech_prefix(tmp_path / "a.wav", 0.12)
    written: list[np.ndarray] = []
    real_write = VideoWriter.write
    monkeypatch.setattr(VideoWriter, "write", lambda self, f: written.append(f.copy()) or real_write(self, f))
    models = _FakeModels(small_net)
    results = {}
    for name in ("none", "gfpgan"):
        written.clear()
        options = RenderOptions(batch_size=2, enhancer=name)
        render_video(face, coeffs, tmp_path / "p.png", audio, tmp_path / f"{name}.mp4", options, models)
        results[name] = np.concatenate(written)
    plain, enhanced = results["none"], results["gfpgan"]
    assert plain.shape == enhanced.shape == (3, 246, 256, 3)  # resized to the crop's aspect after enhancing
    assert np.abs(plain.astype(int) - enhanced).mean() > 5
    assert models.calls[-1] == ("gfpgan", 256, "crop", "cpu")
    # the written frames are the enhanced S x S faces, then resized: what the hook's pieces give
    from sadtalker.render.animate import frames_to_uint8
    from sadtalker.video.postprocess import resize_frames

    rendered = frames_to_uint8(next(_FakeAnimator().animate(np.zeros((1, 70)), 1)))
    expected = resize_frames(enhance_frames(rendered, small_net, "cpu"), 256, 246)
    assert np.array_equal(enhanced[0], expected[0])


def test_models_load_the_enhancer_once_per_device(tmp_path, monkeypatch):
    from sadtalker.loader import Models

    monkeypatch.setenv("SADTALKER_HOME", str(tmp_path / "home"))
    real_writer, real_loader = gf.write_synthetic_gfpgan, gf.load_gfpgan
    monkeypatch.setattr(gf, "write_synthetic_gfpgan", lambda path, seed: real_writer(path, seed, SMALL))
    monkeypatch.setattr(gf, "load_gfpgan", lambda path, device: real_loader(path, device, SMALL))
    models = Models(tmp_path / "official", weights_policy="synthetic")
    monkeypatch.setattr(models, "weights", lambda size, preprocess: SimpleNamespace(synthetic=True))
    assert models.enhancer("none", 256, "crop") is None
    net = models.enhancer("gfpgan", 256, "crop", "cpu")
    assert isinstance(net, gf.GFPGANv1Clean) and models.enhancer("gfpgan", 512, "full", "cpu") is net
    assert models.enhancer_weights("gfpgan", 256, "crop").synthetic
    official = Models(tmp_path / "official", weights_policy="official")
    monkeypatch.setattr(official, "weights", lambda size, preprocess: SimpleNamespace(synthetic=False))
    with pytest.raises(WeightsError, match="GFPGANv1.4.pth missing"):
        official.enhancer("gfpgan", 256, "crop")
