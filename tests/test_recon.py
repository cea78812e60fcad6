"""sadtalker.recon: standard face, 5 points, POS, 224 alignment, ReconNet layout and forward, coefficient
rows, and the whole extraction on the project portrait with the dlib backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sadtalker.errors import NoFaceError, WeightsError
from sadtalker.face.crop import crop_source, landmarks_to_source
from sadtalker.face.image import load_image
from sadtalker.face.landmarks import DlibBackend, find_face
from sadtalker.networks import load_network, module_layout, synthetic_network_state
from sadtalker.recon.align import STANDARD_FIVE_POINTS, align_face_224, crop_offsets, five_points, pos_fit
from sadtalker.recon.coefficients import COEFF_SLICES, semantic_row, split_coeffs
from sadtalker.recon.extract import extract_3dmm, extract_3dmm_frames, image_tensor
from sadtalker.recon.resnet_recon import ReconNet
from sadtalker.recon.standard_face import STANDARD_FACE_LM3D
from sadtalker.weights.loading import sub_state_dict


@pytest.fixture(scope="module")
def landmarker() -> DlibBackend:
    return DlibBackend()


@pytest.fixture(scope="module")
def recon_net() -> ReconNet:
    """ReconNet on the synthetic weights of seed 0 (the golden set's)."""
    net = ReconNet()
    net.load_state_dict(synthetic_network_state(net, "face_3drecon.", 0), strict=True)
    return net.eval()


def test_standard_face_five_points_match_spec() -> None:
    # SPEC §1.7 table
    expected = np.array(
        [
            [-0.3114866, 0.2903608, 0.1337795],
            [0.3097989, 0.2897204, 0.1317953],
            [0.0032535, -0.0461793, 0.5524424],
            [-0.2521693, -0.3813392, 0.2240573],
            [0.2484662, -0.3812824, 0.2223577],
        ]
    )
    assert STANDARD_FACE_LM3D.shape == (68, 3) and STANDARD_FACE_LM3D.dtype == np.float32
    assert not STANDARD_FACE_LM3D.flags.writeable
    np.testing.assert_allclose(STANDARD_FIVE_POINTS, expected, atol=1e-7)


def test_standard_face_equals_the_reference_mat(shared_dir: Path) -> None:
    from scipy.io import loadmat

    lm = loadmat(str(shared_dir / "reference" / "similarity_Lm3D_all.mat"))["lm"]
    np.testing.assert_array_equal(STANDARD_FACE_LM3D, lm)


def test_five_points_order() -> None:
    lm = np.arange(68 * 2, dtype=np.float32).reshape(68, 2)
    five = five_points(lm)
    np.testing.assert_array_equal(five[0], (lm[36] + lm[39]) / 2)
    np.testing.assert_array_equal(five[1], (lm[42] + lm[45]) / 2)
    np.testing.assert_array_equal(five[2:], lm[[30, 48, 54]])
    assert five.dtype == np.float32


def test_pos_recovers_a_weak_perspective_projection() -> None:
    scale, t = 87.5, np.array([120.25, 131.5])
    points_2d = STANDARD_FIVE_POINTS[:, :2].astype(np.float64) * scale + t  # no rotation
    t_fit, s_fit = pos_fit(points_2d, STANDARD_FIVE_POINTS)
    np.testing.assert_allclose(t_fit, t, atol=1e-9)
    assert s_fit == pytest.approx(scale, rel=1e-12)


def test_crop_offsets_truncate_toward_zero() -> None:
    # quirk 30: negative offsets are truncated toward zero, not floored
    w, h, left, up = crop_offsets(256, 256, np.array([60.0, 200.0]), 1.0)
    assert (w, h) == (256, 256)
    assert left == int(128 - 112 + (60 - 128)) == -52
    assert up == int(128 - 112 + (128 - 200)) == -56
    w, h, left, _ = crop_offsets(256, 256, np.array([127.7, 128.0]), 1.0)
    assert left == int(16 - 0.3) == 15


def test_align_face_224_puts_the_face_in_the_canonical_place() -> None:
    height = width = 256
    image = np.full((height, width, 3), 128, np.uint8)
    image[100:160, 90:170] = 200
    # upright face, 80 px per standard-face unit, centred at (128, 140), y down
    lm = (STANDARD_FACE_LM3D[:, :2] * np.array([80.0, -80.0]) + np.array([128.0, 140.0])).astype(np.float32)
    aligned = align_face_224(image, lm)
    assert aligned.image.shape == (224, 224, 3) and aligned.image.dtype == np.uint8
    w0, h0, s, tx, ty = aligned.trans_params
    assert (w0, h0) == (256, 256) and aligned.trans_params.dtype == np.float32
    assert s == pytest.approx(102 / 80, rel=1e-5)
    assert tx == pytest.approx(128, abs=1e-3) and ty == pytest.approx(height - 1 - 140, abs=1e-3)
    # in the 224 image (y up) the five points sit at 102 px per unit around the centre
    five = five_points(aligned.landmarks)
    np.testing.assert_allclose(five[:, :2], STANDARD_FIVE_POINTS[:, :2] * 102 + 112, atol=1.5)


def test_align_face_224_pads_black_outside_the_image() -> None:
    image = np.full((256, 256, 3), 200, np.uint8)
    lm = (STANDARD_FACE_LM3D[:, :2] * np.array([30.0, -30.0]) + np.array([20.0, 30.0])).astype(np.float32)
    aligned = align_face_224(image, lm)
    assert aligned.image[0, 0].tolist() == [0, 0, 0]  # corner lies outside the resized photo
    assert aligned.image[112, 112].tolist() == [200, 200, 200]


def test_coefficient_layout() -> None:
    full = np.arange(2 * 257, dtype=np.float32).reshape(2, 257)
    parts = split_coeffs(full)
    assert sum(b - a for a, b in COEFF_SLICES.values()) == 257
    assert parts.exp.shape == (2, 64) and parts.gamma.shape == (2, 27) and parts.trans[0, 0] == 254
    trans_params = np.array([256, 256, 1.25, 130.5, 120.25], dtype=np.float32)
    row = semantic_row(full, trans_params)
    assert row.shape == (2, 73) and row.dtype == np.float32
    np.testing.assert_array_equal(row[:, :64], full[:, 80:144])
    np.testing.assert_array_equal(row[:, 64:67], full[:, 224:227])
    np.testing.assert_array_equal(row[:, 67:70], full[:, 254:257])
    np.testing.assert_array_equal(row[:, 70:], np.broadcast_to(trans_params[2:], (2, 3)))
    with pytest.raises(ValueError):
        split_coeffs(full[:, :256])


def test_recon_net_layout_and_meta_construction(shared_dir: Path) -> None:
    with torch.device("meta"):
        net = ReconNet()
    rows = module_layout(net, "face_3drecon.")
    assert len(rows) == 332
    tsv = shared_dir / "reference" / "checkpoints" / "SadTalker_V0.0.2_256.safetensors.tsv"
    reference = []
    for line in tsv.read_text().splitlines():
        key, dtype, shape = line.split("\t")
        if key.startswith("face_3drecon."):
            reference.append((key, dtype, tuple(int(v) for v in shape.split(",")) if shape else ()))
    assert rows == reference


def test_recon_net_shapes_without_reference() -> None:
    with torch.device("meta"):
        state = ReconNet().state_dict()
    assert tuple(state["backbone.conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(state["final_layers.0.weight"].shape) == (80, 2048, 1, 1)
    assert tuple(state["final_layers.6.weight"].shape) == (1, 2048, 1, 1)
    assert "backbone.fc.weight" not in state and "backbone.layer4.0.downsample.1.running_var" in state


def test_recon_net_loads_strictly_from_its_prefix(recon_net: ReconNet) -> None:
    state = {"face_3drecon." + k: v for k, v in recon_net.state_dict().items()}
    state["audio2exp.mapping1.weight"] = torch.zeros(64, 577)  # other networks in the same file are ignored
    built = load_network("face_3drecon", sub_state_dict(state, "face_3drecon."))
    assert not built.training
    del state["face_3drecon.final_layers.6.bias"]
    with pytest.raises(WeightsError, match="missing"):
        load_network("face_3drecon", sub_state_dict(state, "face_3drecon."))


def test_recon_net_forward(recon_net: ReconNet) -> None:
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = recon_net(x)
    assert out.shape == (2, 257) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert float(out.std()) > 0.05
    with torch.no_grad():
        single = recon_net(x[1:])
    torch.testing.assert_close(single, out[1:], atol=1e-5, rtol=1e-5)  # eval mode: batch-independent


def test_image_tensor() -> None:
    aligned = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    tensor = image_tensor(aligned)
    assert tensor.shape == (1, 3, 224, 224) and tensor.dtype == torch.float32
    assert float(tensor[0, 1, 5, 7]) == np.float32(aligned[5, 7, 1] / 255.0)


def test_extract_3dmm_on_the_portrait(test_data: Path, recon_net: ReconNet, landmarker: DlibBackend) -> None:
    photo = load_image(test_data / "portrait.png")
    stage_a = find_face(landmarker, photo.pixels, path=photo.path)
    record, source = crop_source(photo.pixels, "crop", stage_a.face.landmarks, 256)
    result = extract_3dmm(recon_net, source, landmarker=landmarker, path=photo.path)
    assert result.coeff_3dmm.shape == (1, 73) and result.full_coeff.shape == (1, 257)
    assert result.landmarks_from == "detected"
    assert result.coeff_3dmm.dtype == np.float32 and np.isfinite(result.coeff_3dmm).all()
    np.testing.assert_array_equal(result.coeff_3dmm[0, :64], result.full_coeff[0, 80:144])
    np.testing.assert_array_equal(result.coeff_3dmm[0, 70:], result.trans_params[2:])
    assert result.aligned_224.shape == (224, 224, 3)
    # a face filling a 256 px source is scaled to the standard size: s of order 1
    assert 0.3 < result.trans_params[2] < 3.0
    # explicit landmarks give the same result as detecting them
    again = extract_3dmm(recon_net, source, result.landmarks)
    np.testing.assert_array_equal(again.coeff_3dmm, result.coeff_3dmm)
    assert record.crop_info_size[0] > 0


def test_extract_3dmm_errors(recon_net: ReconNet, landmarker: DlibBackend) -> None:
    flat = np.full((256, 256, 3), 90, np.uint8)
    with pytest.raises(ValueError, match="landmarker"):
        extract_3dmm(recon_net, flat)
    with pytest.raises(NoFaceError, match="no face"):
        extract_3dmm(recon_net, flat, landmarker=landmarker, path="flat.png")


def test_extract_3dmm_frames(test_data: Path, recon_net: ReconNet, landmarker: DlibBackend) -> None:
    photo = load_image(test_data / "portrait.png")
    stage_a = find_face(landmarker, photo.pixels)
    _, source = crop_source(photo.pixels, "crop", stage_a.face.landmarks, 256)
    flat = np.full_like(source, 90)
    single = extract_3dmm(recon_net, source, landmarker=landmarker)
    frames = extract_3dmm_frames(
        recon_net, [source, flat, source], landmarker, reuse_previous=True, batch_size=2
    )
    assert (
        frames.coeff_3dmm.shape == (3, 73) and frames.full_coeff.shape == (3, 257) and frames.reused == (1,)
    )
    np.testing.assert_array_equal(frames.landmarks[1], frames.landmarks[0])
    for row in (0, 2):
        np.testing.assert_allclose(frames.coeff_3dmm[row], single.coeff_3dmm[0], atol=1e-5)
    with pytest.raises(NoFaceError, match="frame 1"):
        extract_3dmm_frames(recon_net, [source, flat], landmarker)


def test_extract_3dmm_falls_back_to_mapped_stage_a_landmarks(
    shared_dir: Path, recon_net: ReconNet, landmarker: DlibBackend
) -> None:
    # resize mode squashes the small face of a full-body photo: dlib misses it on the 256 source
    photo = load_image(shared_dir / "samples" / "full_body_1.png")
    stage_a = find_face(landmarker, photo.pixels)
    record, source = crop_source(photo.pixels, "resize", None, 256)
    with pytest.raises(NoFaceError):
        extract_3dmm(recon_net, source, landmarker=landmarker)
    mapped = landmarks_to_source(stage_a.face.landmarks, record)
    result = extract_3dmm(recon_net, source, landmarker=landmarker, fallback_landmarks=mapped)
    assert result.landmarks_from == "fallback" and np.isfinite(result.coeff_3dmm).all()
    np.testing.assert_array_equal(result.landmarks, mapped)
