"""Face renderer: layouts, spectral norm, keypoint maths, windows, free-view angles, networks, engine.

Fast on 2 CPU cores: the full-size networks run once at S=128; the engine tests use small configs at S=64.
The conformance against the official outputs (S=256) is stage f of ``tests/golden_check.py``.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sadtalker.errors import WeightsError
from sadtalker.face.crop import CropRecord
from sadtalker.networks import load_network, load_renderer, module_layout, synthetic_network_state
from sadtalker.options import RenderOptions
from sadtalker.qc import FrameStats
from sadtalker.records import Coefficients, FaceRecord
from sadtalker.render.animate import FaceAnimator, SourceNotSetError, frames_to_uint8, source_image_array
from sadtalker.render.dense_motion import DenseMotionConfig
from sadtalker.render.generator import GeneratorConfig, OcclusionAwareSPADEGenerator, cpp_compiler_problem
from sadtalker.render.he_estimator import HEEstimator
from sadtalker.render.keypoint_detector import KPDetector, KPDetectorConfig
from sadtalker.render.keypoint_transform import headpose_bins_to_degrees, rotation_matrix, transform_keypoints
from sadtalker.render.mapping import MappingConfig, MappingNet, MappingOutput
from sadtalker.render.spade import SPADE, SPADEResnetBlock, SpectralNormConv2d, conv3x3_of_upsampled
from sadtalker.render.windows import (
    WINDOW,
    camera_angle_sequence,
    from_reference_layout,
    semantic_windows,
    source_semantics,
    target_coefficients,
    to_reference_layout,
)
from sadtalker.video.postprocess import output_size, resize_frames

SEED = 0

# Small networks with the official structure (S = 64 works with these).
TINY_KP = KPDetectorConfig(
    block_expansion=4, max_features=32, reshape_channel=128, reshape_depth=4, num_blocks=3
)
TINY_GEN = GeneratorConfig(
    block_expansion=8,
    max_features=64,
    reshape_channel=4,
    reshape_depth=16,
    num_resblocks=1,
    decoder_channels=8,
    spade_hidden=8,
    dense_motion=DenseMotionConfig(
        block_expansion=8, max_features=32, num_blocks=2, reshape_depth=16, compress=2, feature_channel=4
    ),
)
TINY_MAP = MappingConfig(coeff_nc=70, descriptor_nc=32)


def _synthetic(make, prefix: str):
    """``make()`` loaded strictly with the synthetic state of its own layout."""
    with torch.device("meta"):
        layout_module = make()
    return load_network(make, synthetic_network_state(layout_module, prefix, SEED), prefix)


def _flat(module_factory, prefix: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        module = module_factory()
    return {prefix + k: v for k, v in synthetic_network_state(module, prefix, SEED).items()}


def _image(size: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return source_image_array(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _coeffs(num_frames: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.5, (num_frames, 70)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- layouts


def _tsv_rows(path: Path, prefix: str) -> list[tuple[str, str, tuple[int, ...]]]:
    rows = []
    for line in path.read_text().splitlines()[1:]:
        key, dtype, shape = line.split("\t")
        if key.startswith(prefix):
            rows.append((key, dtype, tuple(int(s) for s in shape.split(",")) if shape else ()))
    return rows


@pytest.mark.parametrize(
    ("make", "prefix", "tsv"),
    [
        (KPDetector, "kp_extractor.", "SadTalker_V0.0.2_256.safetensors.tsv"),
        (OcclusionAwareSPADEGenerator, "generator.", "SadTalker_V0.0.2_256.safetensors.tsv"),
        (KPDetector, "kp_extractor.", "SadTalker_V0.0.2_512.safetensors.tsv"),
        (OcclusionAwareSPADEGenerator, "generator.", "SadTalker_V0.0.2_512.safetensors.tsv"),
        (lambda: MappingNet(MappingConfig(coeff_nc=70)), "mapping/", "mapping_00229-model.pth.tar.tsv"),
        (lambda: MappingNet(MappingConfig(coeff_nc=73)), "mapping/", "mapping_00109-model.pth.tar.tsv"),
        (KPDetector, "kp_detector/", "facevid2vid_00189-model.pth.tar.tsv"),
        (OcclusionAwareSPADEGenerator, "generator/", "facevid2vid_00189-model.pth.tar.tsv"),
        (HEEstimator, "he_estimator/", "facevid2vid_00189-model.pth.tar.tsv"),
    ],
    ids=[
        "kp",
        "generator",
        "kp-512",
        "generator-512",
        "mapping70",
        "mapping73",
        "kp-legacy",
        "gen-legacy",
        "he",
    ],
)
def test_layout_equals_official_tsv(shared_dir: Path, make, prefix: str, tsv: str) -> None:
    with torch.device("meta"):
        module = make()
    expected = _tsv_rows(shared_dir / "reference" / "checkpoints" / tsv, prefix)
    assert expected, f"no {prefix} rows in {tsv}"
    assert module_layout(module, prefix) == expected  # keys, dtypes, shapes and order


# ---------------------------------------------------------------------------------------- spectral norm


@pytest.mark.parametrize("bias", [True, False])
def test_spectral_norm_weight_is_the_formula_and_matches_torch(bias: bool) -> None:
    torch.manual_seed(0)
    ours = SpectralNormConv2d(5, 6, kernel_size=3, padding=1, bias=bias)
    reference = nn.utils.spectral_norm(nn.Conv2d(5, 6, 3, padding=1, bias=bias)).eval()
    state = {"weight_orig": torch.randn(6, 5, 3, 3), "weight_u": torch.randn(6), "weight_v": torch.randn(45)}
    if bias:
        state["bias"] = torch.randn(6)
    ours.load_state_dict(state, strict=True)
    reference.load_state_dict(state, strict=True)
    assert list(ours.state_dict()) == list(reference.state_dict())  # no cached weight in the state

    w = state["weight_orig"]
    sigma = state["weight_u"] @ (w.reshape(6, -1) @ state["weight_v"])
    torch.testing.assert_close(ours.weight, w / sigma, rtol=1e-6, atol=0)
    x = torch.randn(2, 5, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-6, atol=1e-6)

    ours64 = ours.to(torch.float64)  # the cache follows .to(dtype)
    assert ours64.weight.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(ours64(x.double()).float(), reference(x), rtol=1e-5, atol=1e-5)


def test_spectral_norm_refresh_after_in_place_change() -> None:
    conv = SpectralNormConv2d(2, 2, kernel_size=1)
    with torch.no_grad():
        conv.weight_orig.mul_(2)
    conv.refresh_weight()
    w = conv.weight_orig.detach()
    torch.testing.assert_close(conv.weight, w / (conv.weight_u @ (w.reshape(2, -1) @ conv.weight_v)))


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("bias", [True, False])
def test_conv3x3_of_upsampled_is_the_conv_of_the_upsampled_map(factor: int, bias: bool) -> None:
    """Every phase of every border: a non-square map, batch 2, float64 (the sums differ only in order)."""
    g = torch.Generator().manual_seed(factor)
    x = torch.randn(2, 5, 4, 7, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 5, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64) if bias else None
    direct = torch.nn.functional.conv2d(
        torch.nn.functional.interpolate(x, scale_factor=factor, mode="nearest"), weight, b, padding=1
    )
    ours = conv3x3_of_upsampled(x, weight, b, factor)
    assert ours.shape == direct.shape == (2, 6, 4 * factor, 7 * factor)
    torch.testing.assert_close(ours, direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (12, 12)])
def test_spade_equals_resize_then_conv(size: tuple[int, int]) -> None:
    """SPADE's shared MLP on the small map (integer multiples) or on the resized map (12 = 1.5 × 8)."""
    torch.manual_seed(0)
    spade = SPADE(norm_nc=3, label_nc=4, hidden=5).double().eval()
    x = torch.randn(1, 3, *size, dtype=torch.float64)
    seg = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    resized = torch.nn.functional.interpolate(seg, size=size, mode="nearest")
    actv = spade.mlp_shared(resized)
    expected = spade.param_free_norm(x) * (1 + spade.mlp_gamma(actv)) + spade.mlp_beta(actv)
    with torch.no_grad():
        torch.testing.assert_close(spade(x, seg), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("fin, fout", [(4, 2), (3, 3)])
def test_spade_block_upsampling_inside_equals_upsampling_first(fin: int, fout: int) -> None:
    """``block(x, seg, upsample=2)`` (each SPADE normalises the small x) = ``block(upsample(x), seg)``, with
    and without the learned shortcut; statistics of an upsampled map differ only in summation order."""
    torch.manual_seed(1)
    block = SPADEResnetBlock(fin, fout, label_nc=3, hidden=4).double().eval()
    x = torch.randn(2, fin, 5, 6, dtype=torch.float64)
    seg = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    with torch.no_grad():
        first = block(torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"), seg)
        inside = block(x, seg, upsample=2)
    assert inside.shape == (2, fout, 10, 12)
    torch.testing.assert_close(inside, first, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------- keypoint maths


def _one_hot_logits(degrees: list[float]) -> torch.Tensor:
    """Logits whose softmax is (numerically) one-hot on the bin of ``degree = 3·bin − 99``."""
    logits = torch.full((len(degrees), 66), -1e4)
    for row, deg in enumerate(degrees):
        logits[row, int((deg + 99) / 3)] = 0.0
    return logits


def test_headpose_bins_to_degrees() -> None:
    torch.testing.assert_close(
        headpose_bins_to_degrees(_one_hot_logits([0, 90, -99])), torch.tensor([0.0, 90, -99])
    )
    uniform = headpose_bins_to_degrees(torch.zeros(1, 66))
    torch.testing.assert_close(uniform, torch.tensor([3 * 32.5 - 99]))


def test_rotation_matrix_uses_3_14() -> None:
    yaw = torch.tensor([90.0])
    rot = rotation_matrix(yaw, torch.zeros(1), torch.zeros(1))[0]
    c, s = math.cos(90 / 180 * 3.14), math.sin(90 / 180 * 3.14)
    expected = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    torch.testing.assert_close(rot, expected)
    assert abs(rot[0, 0].item()) > 1e-4  # cos(1.57) != cos(pi/2): the 3.14 constant is kept
    angles = torch.tensor([10.0]), torch.tensor([-20.0]), torch.tensor([30.0])
    m = rotation_matrix(*angles)[0]
    torch.testing.assert_close(m @ m.T, torch.eye(3), atol=1e-6, rtol=0)


def test_transform_keypoints_hand_computed() -> None:
    kp = torch.tensor([[[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]])  # (1, 2, 3)
    he = MappingOutput(
        yaw=_one_hot_logits([90, 0]),
        pitch=_one_hot_logits([0, 0]),
        roll=_one_hot_logits([0, 0]),
        t=torch.tensor([[5.0, 0.25, 7.0], [1.0, -0.5, 1.0]]),
        exp=torch.arange(12, dtype=torch.float32).view(2, 6) / 100,
    )
    t_before = he.t.clone()
    out = transform_keypoints(kp, he)
    c, s = math.cos(90 / 180 * 3.14), math.sin(90 / 180 * 3.14)
    # frame 0: yaw 90 (3.14 convention): (x, y, z) -> (c·x + s·z, y, -s·x + c·z); + (0, t_y, 0) + exp
    k0 = [[c * 1 + s * 3, 2.0, -s * 1 + c * 3], [s * 0.5, -1.0, c * 0.5]]
    expected0 = torch.tensor(k0) + torch.tensor([0, 0.25, 0]) + he.exp[0].view(2, 3)
    expected1 = kp[0] + torch.tensor([0, -0.5, 0]) + he.exp[1].view(2, 3)  # identity rotation
    torch.testing.assert_close(out, torch.stack([expected0, expected1]), atol=1e-5, rtol=1e-5)
    assert torch.equal(he.t, t_before)  # input not modified

    # A free-view override replaces the predicted angle.
    overridden = transform_keypoints(
        kp, he._replace(yaw=_one_hot_logits([0, 0])), yaw_override=torch.tensor([90.0, 0])
    )
    torch.testing.assert_close(overridden, out, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------- windows


def test_windows_clamp_at_both_ends() -> None:
    coeffs = np.arange(3, dtype=np.float32)[:, None] * np.ones((1, 70), np.float32)  # frame f holds f
    windows = semantic_windows(coeffs)
    assert windows.shape == (3, 70, WINDOW)
    np.testing.assert_array_equal(windows[0, 0], [0] * 14 + [1] + [2] * 12)
    np.testing.assert_array_equal(windows[1, 0], [0] * 13 + [1] + [2] * 13)
    np.testing.assert_array_equal(windows[2, 0], [0] * 12 + [1] + [2] * 14)
    np.testing.assert_array_equal(semantic_windows(coeffs, np.array([2])), windows[2:])
    long = np.arange(40, dtype=np.float32)[:, None].repeat(70, axis=1)
    np.testing.assert_array_equal(semantic_windows(long)[20, 5], np.arange(7, 34))


def test_reference_layout_pads_with_the_last_window() -> None:
    per_frame = np.arange(3)[:, None] * np.ones((1, 4))
    batched = to_reference_layout(per_frame, 2)
    assert batched.shape == (2, 2, 4)
    np.testing.assert_array_equal(batched[:, :, 0], [[0, 1], [2, 2]])  # slot b, step j = frame b·n + j
    np.testing.assert_array_equal(from_reference_layout(batched, 3), per_frame)
    assert to_reference_layout(per_frame, 3).shape == (3, 1, 4)
    assert to_reference_layout(np.arange(5), 2).tolist() == [[0, 1, 2], [3, 4, 4]]


def test_source_and_target_coefficients() -> None:
    source = np.arange(73, dtype=np.float32) / 100
    sem = source_semantics(source, 70)
    assert sem.shape == (70, WINDOW) and np.all(sem == source[:70, None])
    assert source_semantics(source, 73).shape == (73, WINDOW)

    coeffs = _coeffs(4)
    scaled = target_coefficients(coeffs, source, expression_scale=2.0)
    np.testing.assert_allclose(scaled[:, :64], coeffs[:, :64] * 2)
    np.testing.assert_array_equal(scaled[:, 64:], coeffs[:, 64:70])
    full = target_coefficients(coeffs, source, full=True)
    assert full.shape == (4, 73)
    np.testing.assert_array_equal(full[:, 70:], np.repeat(source[None, 70:], 4, axis=0))
    still = target_coefficients(coeffs, source, still=True)
    np.testing.assert_array_equal(still[:, 64:], np.repeat(source[None, 64:70], 4, axis=0))
    np.testing.assert_array_equal(still[:, :64], coeffs[:, :64])
    still_full = target_coefficients(coeffs, source, still=True, full=True)
    np.testing.assert_array_equal(still_full[:, 64:], np.repeat(source[None, 64:73], 4, axis=0))
    with pytest.raises(ValueError):
        target_coefficients(coeffs, source[:70], full=True)


def test_source_image_array_is_img_as_float32() -> None:
    image = np.array([[[0, 128, 255]]], dtype=np.uint8)
    out = source_image_array(image)
    assert out.shape == (1, 3, 1, 1) and out.dtype == np.float32
    np.testing.assert_array_equal(out.ravel(), np.multiply([0, 128, 255], 1 / 255, dtype=np.float32))
    with pytest.raises(ValueError):
        source_image_array(np.zeros((4, 5, 3), np.uint8))


def test_golden_target_windows(golden_dir: Path) -> None:
    data = np.load(golden_dir / "f_render.npz")
    stored = data["target_semantics"]
    target = target_coefficients(data["coeffs_3frames"], data["source_semantics"][0, :, 0])
    np.testing.assert_array_equal(to_reference_layout(semantic_windows(target), stored.shape[0]), stored)


# -------------------------------------------------------------------------------------- free view


def _reference_camera_sequence(angles: list[int], num_frames: int) -> list[float]:
    """The reference algorithm as it runs when it does not divide by zero."""
    if len(angles) == 1:
        return [angles[0]] * num_frames
    total = sum(abs(b - a) for a, b in pairwise(angles))
    per_frame = total / (num_frames - 1)
    seq: list[float] = []
    for a, b in pairwise(angles):
        seq += list(np.arange(a, b, per_frame * abs(b - a) / (b - a)))
    seq = seq[:num_frames]
    return seq + [seq[-1]] * (num_frames - len(seq))


@pytest.mark.parametrize(
    ("angles", "num_frames"), [([15], 5), ([0, 20], 5), ([0, 20, -10], 10), ([-30, 30], 7)]
)
def test_camera_sequence_equals_reference(angles: list[int], num_frames: int) -> None:
    seq = camera_angle_sequence(angles, num_frames)
    assert seq.shape == (num_frames,)
    np.testing.assert_array_equal(seq, _reference_camera_sequence(angles, num_frames))


def test_camera_sequence_fixes_divisions_by_zero() -> None:
    np.testing.assert_array_equal(camera_angle_sequence([10, 20], 1), [10])  # T = 1
    np.testing.assert_array_equal(camera_angle_sequence([5, 5, 5], 4), [5, 5, 5, 5])  # nothing moves
    seq = camera_angle_sequence([0, 0, 10], 6)  # equal consecutive angles: that leg adds no frames
    np.testing.assert_allclose(seq, [0, 2, 4, 6, 8, 8])
    assert np.all(np.isfinite(seq))
    with pytest.raises(ValueError):
        camera_angle_sequence([], 3)


# ----------------------------------------------------------------------- uint8 frames and output size


def test_frames_to_uint8_and_output_size() -> None:
    frames = torch.tensor([0.0, 1.0, 0.5, 0.2]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    out = frames_to_uint8(frames)
    assert out.shape == (1, 2, 2, 3) and out.dtype == np.uint8
    assert out[0, :, :, 0].tolist() == [[0, 255], [128, 51]]  # 127.5 rounds half to even
    resized = resize_frames(np.zeros((2, 64, 64, 3), np.uint8), *output_size(64, (621, 581)))
    assert resized.shape == (2, int(64 * 581 / 621), 64, 3)


def _pixels_to_uint8(values: np.ndarray) -> np.ndarray:
    """A 1-D float array through :func:`frames_to_uint8` as one row of one-channel pixels."""
    return frames_to_uint8(torch.from_numpy(values).view(1, 1, 1, -1)).reshape(-1)


def test_frames_to_uint8_rounds_half_to_even_in_float32_and_clips() -> None:
    rng = np.random.default_rng(1)
    x = rng.random((2, 3, 8, 8), dtype=np.float32)
    expected = np.clip(np.rint(x * np.float32(255)), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.array_equal(frames_to_uint8(torch.from_numpy(x)), expected)
    halves = np.array([0.5, 1.5, 2.5, 253.5], np.float32) / np.float32(255)
    assert (np.array([0.5, 1.5, 2.5, 253.5], np.float32) == halves * np.float32(255)).all()  # exact halves
    assert _pixels_to_uint8(halves).tolist() == [0, 2, 2, 254]
    assert _pixels_to_uint8(np.array([-0.2, 0.0, 1.0, 1.3], np.float32)).tolist() == [0, 0, 255, 255]
    with pytest.raises(ValueError, match="NaN"):
        _pixels_to_uint8(np.array([np.nan], np.float32))


def test_uint8_then_resize_keeps_the_frames() -> None:
    rendered = np.random.default_rng(3).random((5, 3, 32, 32), dtype=np.float32)
    out = resize_frames(frames_to_uint8(torch.from_numpy(rendered)), *output_size(32, (100, 150)))
    assert out.shape == (5, 48, 32, 3) and out.dtype == np.uint8


# ------------------------------------------------------------------------------------------ networks


@pytest.fixture(scope="module")
def full_renderer():
    """The official-size networks loaded strictly from synthetic checkpoint states, via the builder."""
    sadtalker = {**_flat(KPDetector, "kp_extractor."), **_flat(OcclusionAwareSPADEGenerator, "generator.")}
    mapping = _flat(lambda: MappingNet(MappingConfig(coeff_nc=70)), "mapping/")
    return load_renderer(sadtalker, mapping)


def test_full_size_networks_at_128(full_renderer) -> None:
    kp_detector, generator, mapping = full_renderer
    assert not kp_detector.training and not next(generator.parameters()).requires_grad
    image = torch.from_numpy(_image(128))
    with torch.no_grad():
        kp = kp_detector(image)
        assert kp.shape == (1, 15, 3) and torch.isfinite(kp).all() and kp.abs().max() <= 1
        windows = torch.from_numpy(semantic_windows(_coeffs(2)))
        he = mapping(windows)
        assert [tuple(t.shape) for t in he] == [(2, 66), (2, 66), (2, 66), (2, 3), (2, 45)]
        kp_driving = transform_keypoints(kp, he)
        features = generator.encode_source(image)
        assert features.feature_3d.shape == (1, 32, 16, 32, 32)
        assert features.compressed.shape == (1, 4, 16, 32, 32)
        frames = generator.forward_from_features(features, kp_driving[:1], kp_driving[1:])  # one frame
    assert frames.shape == (1, 3, 128, 128) and torch.isfinite(frames).all()
    assert frames.min() > 0 and frames.max() < 1


def test_builder_rejects_a_wrong_coeff_nc() -> None:
    mapping73 = _flat(lambda: MappingNet(MappingConfig(coeff_nc=73)), "mapping/")
    with torch.device("meta"):
        kp = KPDetector(TINY_KP)
    tiny = _flat(lambda: OcclusionAwareSPADEGenerator(TINY_GEN), "generator.")
    tiny.update(
        {"kp_extractor." + k: v for k, v in synthetic_network_state(kp, "kp_extractor.", SEED).items()}
    )
    with pytest.raises(WeightsError, match="mapping"):
        load_renderer(tiny, mapping73, coeff_nc=70, kp_config=TINY_KP, generator_config=TINY_GEN)
    renderer = load_renderer(tiny, mapping73, kp_config=TINY_KP, generator_config=TINY_GEN)
    assert renderer.mapping.config.coeff_nc == 73
    with pytest.raises(WeightsError):  # a full-size generator does not take the tiny state
        load_renderer(tiny, mapping73, kp_config=TINY_KP)


def test_he_estimator_forward() -> None:
    torch.manual_seed(0)
    net = HEEstimator().eval()
    with torch.no_grad():
        out = net(torch.rand(1, 3, 64, 64))
    assert [tuple(t.shape) for t in out] == [(1, 66), (1, 66), (1, 66), (1, 3), (1, 45)]
    assert all(torch.isfinite(t).all() for t in out)


# ---------------------------------------------------------------------------------------------- engine


def tiny_engine(compile: bool = False) -> FaceAnimator:
    """A render engine of the tiny networks on their synthetic weights (64 px frames)."""
    return FaceAnimator(
        _synthetic(lambda: KPDetector(TINY_KP), "kp_extractor."),
        _synthetic(lambda: OcclusionAwareSPADEGenerator(TINY_GEN), "generator."),
        _synthetic(lambda: MappingNet(TINY_MAP), "mapping/"),
        compile=compile,
    )


@pytest.fixture(scope="module")
def tiny_animator() -> FaceAnimator:
    return tiny_engine()


def test_animate_before_set_source_raises(tiny_animator: FaceAnimator) -> None:
    engine = FaceAnimator(tiny_animator.kp_detector, tiny_animator.generator, tiny_animator.mapping)
    with pytest.raises(SourceNotSetError, match="set_source"):
        engine.animate(_coeffs(3), batch_size=2)  # raised at the call, not at the first frame


def test_chunked_animation_equals_one_shot_and_reference_layout(tiny_animator: FaceAnimator) -> None:
    engine, num_frames, batch_size = tiny_animator, 5, 2
    image, coeffs = _image(64), _coeffs(num_frames)
    source_row = np.random.default_rng(3).normal(0, 0.5, 73).astype(np.float32)
    source = engine.set_source(image, source_semantics(source_row, 70))
    target = target_coefficients(coeffs, source_row)

    chunks = list(engine.animate(target, batch_size=batch_size))
    assert [c.shape[0] for c in chunks] == [2, 2, 1]
    chunked = torch.cat(chunks)
    one_shot = torch.cat(list(engine.animate(target, batch_size=num_frames)))
    assert chunked.shape == (num_frames, 3, 64, 64) and torch.isfinite(chunked).all()
    torch.testing.assert_close(chunked, one_shot, atol=1e-5, rtol=0)

    # The reference's way: windows in (batch_size, steps) layout, source repeated per batch row, the whole
    # generator per step, outputs stacked back in frame order.
    windows = torch.from_numpy(to_reference_layout(semantic_windows(target), batch_size))
    image_b = torch.from_numpy(image).repeat(batch_size, 1, 1, 1)
    with torch.no_grad():
        kp_canonical = engine.kp_detector(image_b)
        semantics = torch.from_numpy(source_semantics(source_row, 70))[None].repeat(batch_size, 1, 1)
        kp_source = transform_keypoints(kp_canonical, engine.mapping(semantics))
        steps = [
            engine.generator(
                image_b, kp_source, transform_keypoints(kp_canonical, engine.mapping(windows[:, j]))
            )
            for j in range(windows.shape[1])
        ]
    reference = torch.stack(steps, dim=1).reshape(-1, 3, 64, 64)[:num_frames]
    # Not bit-identical: batch 1 vs batch 2 changes the BLAS summation order (~1e-6 in the keypoints).
    torch.testing.assert_close(chunked, reference, atol=1e-4, rtol=0)
    torch.testing.assert_close(source.kp_source, kp_source[:1], atol=1e-5, rtol=0)


def test_free_view_angles_change_only_the_driving_pose(tiny_animator: FaceAnimator) -> None:
    engine, num_frames = tiny_animator, 3
    source_row = np.zeros(73, np.float32)
    engine.set_source(_image(64, seed=4), source_semantics(source_row, 70))
    target = target_coefficients(_coeffs(num_frames, seed=5), source_row)
    windows = semantic_windows(target)
    yaw = camera_angle_sequence([0, 30], num_frames)
    he, kp_plain = engine.driving_keypoints(windows)
    _, kp_yaw = engine.driving_keypoints(windows, yaw=yaw)
    expected = transform_keypoints(engine.source.kp_canonical, he, yaw_override=torch.from_numpy(yaw).float())
    torch.testing.assert_close(kp_yaw, expected)
    assert not torch.allclose(kp_yaw, kp_plain)
    frames = torch.cat(list(engine.animate(target, batch_size=2, yaw=yaw)))
    assert frames.shape == (num_frames, 3, 64, 64)
    with pytest.raises(ValueError, match="yaw"):
        engine.animate(target, yaw=yaw[:2])
    with pytest.raises(ValueError):
        engine.animate(np.zeros((3, 73), np.float32))  # a 70-input mapping net


def test_running_animation_keeps_its_source(tiny_animator: FaceAnimator) -> None:
    engine = tiny_animator
    row = np.zeros(73, np.float32)
    target = target_coefficients(_coeffs(4, seed=6), row)
    engine.set_source(_image(64, seed=7), source_semantics(row, 70))
    expected = torch.cat(list(engine.animate(target, batch_size=2)))
    stream = engine.animate(target, batch_size=2)
    first = next(stream)
    engine.set_source(_image(64, seed=8), source_semantics(row, 70))  # a new clip while streaming
    torch.testing.assert_close(torch.cat([first, *stream]), expected)
    engine.clear_source()
    with pytest.raises(SourceNotSetError):
        engine.render(torch.zeros(1, 15, 3))


def _records(size: int, num_frames: int) -> tuple[FaceRecord, Coefficients]:
    """A face record with an S x S source (a crop that is the whole square photo) and T frames of motion."""
    rng = np.random.default_rng(9)
    box = (0, 0, size, size)
    square = (size, size)
    crop = CropRecord("crop", square, square, 1, box, (0.0, 0.0, size, size), square, box, size)
    face = FaceRecord(
        source_image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        coeff_3dmm=rng.normal(0, 0.5, (1, 73)).astype(np.float32),
        full_coeff=np.zeros((1, 257), np.float32),
        landmarks=None,
        crop=crop.to_dict(),
        num_faces=1,
        backend="test",
    )
    coeffs = Coefficients(
        _coeffs(num_frames, seed=10), num_frames, num_frames / 25, np.zeros((num_frames, 1))
    )
    return face, coeffs


def test_frames_from_records_are_the_engine_steps_in_uint8(tiny_animator: FaceAnimator) -> None:
    engine, num_frames = tiny_animator, 3
    face, coeffs = _records(64, num_frames)
    options = RenderOptions(batch_size=2, expression_scale=1.5, input_yaw=(0.0, 20.0))
    stats = FrameStats()
    chunks = list(engine.frames(face, coeffs, options, stats))
    assert [c.shape for c in chunks] == [(2, 64, 64, 3), (1, 64, 64, 3)] and chunks[0].dtype == np.uint8
    assert (stats.float_frames, stats.nonfinite_frames) == (3, 0)
    with pytest.raises(SourceNotSetError):  # the clip's source is dropped once its frames are out
        engine.source  # noqa: B018

    source_row = face.coeff_3dmm[0]
    engine.set_source(source_image_array(face.source_image), source_semantics(source_row, 70))
    target = target_coefficients(coeffs.coefficients, source_row, expression_scale=1.5)
    yaw = camera_angle_sequence([0.0, 20.0], num_frames)
    expected = frames_to_uint8(torch.cat(list(engine.animate(target, batch_size=2, yaw=yaw))))
    engine.clear_source()
    np.testing.assert_array_equal(np.concatenate(chunks), expected)
    with pytest.raises(ValueError):  # inputs are checked at the call, before any frame
        engine.frames(face, coeffs, RenderOptions(input_pitch=()), stats)


class _NaNAnimator(FaceAnimator):
    """The engine's clip loop around a stand-in network whose second frame is NaN in one corner."""

    coeff_nc = 70

    def __init__(self) -> None:
        self.cleared = False

    def set_source(self, image, semantics):
        pass

    def clear_source(self) -> None:
        self.cleared = True

    def animate(self, targets, batch_size=2, **angles):
        frames = torch.full((len(targets), 3, 4, 4), 0.5)
        frames[1, :, 0, 0] = float("nan")
        frames[1, :, 0, 1] = float("inf")
        yield from frames.split(batch_size)


def test_nonfinite_frames_are_counted_then_written_black() -> None:
    engine, stats = _NaNAnimator(), FrameStats()
    face, coeffs = _records(4, 3)
    out = np.concatenate(list(engine.frames(face, coeffs, RenderOptions(batch_size=2), stats)))
    assert (stats.float_frames, stats.nonfinite_frames) == (3, 1) and engine.cleared
    assert out[1, 0, 0].tolist() == [0, 0, 0] and out[1, 0, 1].tolist() == [255, 255, 255]
    assert (out[1, 1:] == 128).all() and (out[[0, 2]] == 128).all()


def test_cpu_frames_go_through_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """On the CPU the generator splits a batch into passes of CPU_FRAMES_PER_CALL frames, one pass per
    frame, and the frames are those of one batched pass (oneDNN may pick another kernel for these tiny
    shapes at batch 1: ~1e-5; bit for bit at the official size, which golden f checks)."""
    from sadtalker.render import generator as generator_module

    generator = _synthetic(lambda: OcclusionAwareSPADEGenerator(TINY_GEN), "generator.")
    image = torch.from_numpy(_image(64))
    kp_source = torch.rand(1, 15, 3) * 0.5
    kp_driving = torch.rand(3, 15, 3) * 0.5
    passes: list[int] = []
    real = generator.render_frames
    monkeypatch.setattr(
        generator, "render_frames", lambda f, s, d: passes.append(d.shape[0]) or real(f, s, d)
    )
    with torch.inference_mode():
        features = generator.encode_source(image)
        monkeypatch.setattr(generator_module, "CPU_FRAMES_PER_CALL", 8)
        batched = generator.forward_from_features(features, kp_source, kp_driving)
        monkeypatch.setattr(generator_module, "CPU_FRAMES_PER_CALL", 1)
        split = generator.forward_from_features(features, kp_source, kp_driving)
        per_frame_sources = generator.forward_from_features(features, kp_source.expand(3, -1, -1), kp_driving)
    assert passes == [3, 1, 1, 1, 1, 1, 1] and split.shape == (3, 3, 64, 64)
    torch.testing.assert_close(split, batched, atol=1e-4, rtol=0)
    torch.testing.assert_close(per_frame_sources, batched, atol=1e-4, rtol=0)


NO_CXX = cpp_compiler_problem()  # the product's own check (compile_frames raises with it)
NO_CXX_REASON = f"no C++ compiler: torch.compile cannot build CPU kernels ({NO_CXX})"


@pytest.mark.skipif(NO_CXX is not None, reason=NO_CXX_REASON)
def test_compiled_frames_match_eager() -> None:
    """compile_frames: the inductor-compiled pass (freezing: prepacked weights, fused post-ops) renders the
    eager frames within float rounding, through forward_from_features, also when the batch size changes
    between calls (a clip's shorter last batch) and for a second clip's source."""
    from sadtalker.render.generator import compile_frames

    generator = _synthetic(lambda: OcclusionAwareSPADEGenerator(TINY_GEN), "generator.").eval()
    kp_source = torch.rand(1, 15, 3) * 0.5
    compiled = compile_frames(generator, torch.device("cpu"))
    with torch.no_grad():
        for seed, frames in ((1, 2), (2, 1)):
            features = generator.encode_source(torch.from_numpy(_image(64, seed)))
            kp_driving = torch.rand(frames, 15, 3) * 0.5
            eager = generator.render_frames(features, kp_source, kp_driving)
            out = compiled(features, kp_source, kp_driving)
            assert out.shape == (frames, 3, 64, 64)
            torch.testing.assert_close(out, eager, atol=1e-4, rtol=0)
            passes = generator.forward_from_features(features, kp_source, kp_driving, frames_fn=compiled)
            torch.testing.assert_close(passes, eager, atol=1e-4, rtol=0)


def test_compile_needs_a_cxx_compiler_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a C++ compiler, compiling for the CPU fails at once with what to install, not at the first
    frame deep inside inductor."""
    from torch._inductor import cpp_builder

    from sadtalker.errors import CompilerMissingError
    from sadtalker.render.generator import compile_frames

    def missing():
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    generator = OcclusionAwareSPADEGenerator(TINY_GEN)
    with pytest.raises(CompilerMissingError, match="C\\+\\+ compiler"):
        compile_frames(generator, torch.device("cpu"))


def test_gpu_passes_fit_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA the pass holds what GPU_MEMORY_SHARE of the free memory allows at FRAME_BYTES_256 per
    256 px float32 frame, scaled by pixels and element size; never 0, never more than the batch."""
    from sadtalker.render import generator as g

    cuda = torch.device("cuda", 0)
    ten_frames = 10 * g.FRAME_BYTES_256 / g.GPU_MEMORY_SHARE
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (ten_frames + 1, 2 * ten_frames))
    assert g.frames_per_pass(cuda, 64, 256, torch.float32) == 10
    assert g.frames_per_pass(cuda, 4, 256, torch.float32) == 4
    assert g.frames_per_pass(cuda, 64, 512, torch.float32) == 2
    assert g.frames_per_pass(cuda, 64, 512, torch.float16) == 5
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1, 2))
    assert g.frames_per_pass(cuda, 64, 256, torch.float32) == 1
    assert g.frames_per_pass(torch.device("cpu"), 64, 256, torch.float32) == g.CPU_FRAMES_PER_CALL


def test_out_of_memory_halves_the_passes_then_gives_up() -> None:
    """A pass that runs out of memory restarts the batch in passes half as long; one frame that does not
    fit is raised."""
    from sadtalker.render.generator import render_in_passes

    calls: list[tuple[int, int]] = []

    def render(i: int, j: int, fits: int = 2) -> torch.Tensor:
        calls.append((i, j))
        if j - i > fits:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return torch.arange(i, j, dtype=torch.float32)

    out = render_in_passes(render, batch=7, step=8, device=torch.device("cpu"))
    torch.testing.assert_close(out, torch.arange(7, dtype=torch.float32))
    assert calls == [(0, 7), (0, 4), (0, 2), (2, 4), (4, 6), (6, 7)]
    with pytest.raises(torch.OutOfMemoryError):
        render_in_passes(lambda i, j: render(i, j, fits=0), batch=3, step=2, device=torch.device("cpu"))
