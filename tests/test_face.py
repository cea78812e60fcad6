"""sadtalker.face: photo loading (bad inputs included), landmark backends, face choice, crop modes."""

from __future__ import annotations

import json
import socket
import urllib.request
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from sadtalker.errors import ImageError, NoFaceError, WeightsError
from sadtalker.face.crop import (
    CropRecord,
    apply_crop,
    crop_source,
    face_box,
    landmarks_to_source,
    normalise_mode,
    plan_crop,
    source_to_original,
)
from sadtalker.face.image import decode_image, load_image
from sadtalker.face.landmarks import (
    DetectedFace,
    DlibBackend,
    FaceAlignmentBackend,
    FaceLandmarker,
    find_face,
    make_landmarker,
)
from sadtalker.recon.standard_face import STANDARD_FACE_LM3D
from sadtalker.weights.face_models import FACE_ALIGNMENT_FILES, FETCH_HINT, sha256_prefix

SAMPLES = ("art_0.png", "full_body_1.png", "happy.png", "sad1.png")


@pytest.fixture(scope="module")
def dlib_backend() -> DlibBackend:
    return DlibBackend()


def synthetic_landmarks(cx: float, cy: float, scale: float, angle_deg: float = 0.0) -> np.ndarray:
    """(68, 2) upright (or rotated) frontal landmarks from the standard face: ``scale`` px per unit."""
    xy = STANDARD_FACE_LM3D[:, :2].astype(np.float64) * np.array([1.0, -1.0])  # y down
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (xy @ rot.T * scale + np.array([cx, cy])).astype(np.float32)


def check_anatomy(face: DetectedFace, image_size: tuple[int, int]) -> None:
    """Box in the image; landmarks near the box; eyes above nose above mouth; left/right in order."""
    width, height = image_size
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
    lm = face.landmarks
    assert lm.shape == (68, 2) and lm.dtype == np.float32
    margin = 0.25 * max(x2 - x1, y2 - y1)  # the chin and brows may poke out of a detector's box
    assert np.all(lm[:, 0] >= x1 - margin) and np.all(lm[:, 0] <= x2 + margin)
    assert np.all(lm[:, 1] >= y1 - margin) and np.all(lm[:, 1] <= y2 + margin)
    eyes_y = lm[36:48, 1].mean()
    nose_tip_y = lm[30, 1]
    mouth_y = lm[48:68, 1].mean()
    chin_y = lm[8, 1]
    assert eyes_y < nose_tip_y < mouth_y < chin_y
    assert (
        lm[36:42, 0].mean() < lm[27:36, 0].mean() < lm[42:48, 0].mean()
    )  # image-left eye, nose, image-right eye
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]  # jaw runs left to right
    assert lm[48, 0] < lm[54, 0]  # mouth corners


# --------------------------------------------------------------------------------------------- detection


@pytest.mark.parametrize("name", SAMPLES)
def test_dlib_finds_the_face_in_each_sample(shared_dir: Path, dlib_backend: DlibBackend, name: str) -> None:
    photo = load_image(shared_dir / "samples" / name)
    selection = find_face(dlib_backend, photo.pixels, path=photo.path)
    assert selection.num_faces >= 1 and selection.backend == "dlib"
    check_anatomy(selection.face, photo.size)
    # The whole stage A -> crop -> stage B chain works on it.
    record, source = crop_source(photo.pixels, "crop", selection.face.landmarks, 256, path=photo.path)
    assert source.shape == (256, 256, 3)
    stage_b = find_face(dlib_backend, source)
    check_anatomy(stage_b.face, (256, 256))


def test_dlib_on_project_portrait(test_data: Path, dlib_backend: DlibBackend) -> None:
    photo = load_image(test_data / "portrait.png")
    assert photo.size == (256, 256) and photo.format == "PNG"
    selection = find_face(dlib_backend, photo.pixels, path=photo.path)
    assert selection.num_faces == 1
    check_anatomy(selection.face, photo.size)
    x1, y1, x2, y2 = selection.face.box
    assert 100 < x2 - x1 < 220 and 100 < y2 - y1 < 220
    assert selection.face.score > 0.5


def _landscape(width: int = 320, height: int = 240) -> np.ndarray:
    """Sky gradient, a sun, green hills with texture: no face."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.float64)
    image[..., 0] = 90 + 80 * y / height
    image[..., 1] = 150 + 60 * y / height
    image[..., 2] = 235 - 30 * y / height
    sun = (x - 250) ** 2 + (y - 50) ** 2 < 20**2
    image[sun] = (255, 230, 120)
    hills = y > 150 + 25 * np.sin(x / 37.0) + 10 * np.sin(x / 11.0)
    image[hills] = np.stack([40 + 0 * x[hills], 120 + 0 * x[hills], 50 + 0 * x[hills]], -1)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "image",
    [np.full((200, 300, 3), (200, 120, 40), np.uint8), _landscape()],
    ids=["flat-colour", "landscape"],
)
def test_no_face_raises(dlib_backend: DlibBackend, image: np.ndarray) -> None:
    with pytest.raises(NoFaceError, match="no face found") as info:
        find_face(dlib_backend, image, path="scene.png")
    assert info.value.path == "scene.png"


def test_face_too_small_raises(test_data: Path, dlib_backend: DlibBackend) -> None:
    photo = load_image(test_data / "portrait.png")
    with pytest.raises(NoFaceError, match="face too small"):
        find_face(dlib_backend, photo.pixels, path="p.png", min_face_size=400)


class FakeLandmarker:
    """Returns fixed faces (in the coordinates of the image it is given) and records the image shapes."""

    name = "fake"

    def __init__(self, faces: list[DetectedFace]):
        self.faces = faces
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        self.shapes.append(image.shape)
        return list(self.faces)


def _face(box: tuple[float, float, float, float], score: float) -> DetectedFace:
    x1, y1, x2, y2 = box
    lm = synthetic_landmarks((x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 1.6)
    return DetectedFace(box=box, score=score, landmarks=lm)


def test_find_face_selection_rules() -> None:
    image = np.zeros((400, 600, 3), np.uint8)
    small_good = _face((10, 10, 90, 90), 2.5)
    big_weak = _face((200, 100, 400, 300), 0.3)
    tiny = _face((500, 10, 520, 30), 3.0)
    fake = FakeLandmarker([small_good, big_weak, tiny])
    assert isinstance(fake, FaceLandmarker)
    largest = find_face(fake, image)
    assert largest.face is big_weak and largest.num_faces == 3 and largest.num_usable == 2
    best = find_face(fake, image, select="best")
    assert best.face is small_good  # the tiny face scores higher but is below min_face_size
    with pytest.raises(ValueError):
        find_face(fake, image, select="first")  # type: ignore[arg-type]
    with pytest.raises(NoFaceError, match="no face found"):
        find_face(FakeLandmarker([]), image, path="x.png")


def test_find_face_downscales_very_large_photos() -> None:
    image = np.zeros((3000, 9000, 3), np.uint8)
    fake = FakeLandmarker([_face((100.0, 200.0, 300.0, 400.0), 1.0)])
    selection = find_face(fake, image, max_detect_side=4096)
    assert fake.shapes == [(1365, 4096, 3)]
    assert selection.detect_scale == pytest.approx(4096 / 9000)
    sx, sy = 4096 / 9000, 1365 / 3000
    assert selection.face.box[0] == pytest.approx(100 / sx) and selection.face.box[3] == pytest.approx(
        400 / sy
    )
    expected = (fake.faces[0].landmarks[:, 0] + 0.5) / sx - 0.5
    np.testing.assert_allclose(selection.face.landmarks[:, 0], expected, rtol=1e-6)


def test_make_landmarker_names() -> None:
    assert isinstance(make_landmarker("dlib"), DlibBackend)
    with pytest.raises(ValueError, match="unknown landmark backend"):
        make_landmarker("retinaface")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- face-alignment weights


@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection fails the test loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_face_alignment_without_weights_raises_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as info:
        FaceAlignmentBackend()
    message = str(info.value)
    assert (
        FETCH_HINT in message and "s3fd-619a316812.pth" in message and "2DFAN4-11f355bf06.pth.tar" in message
    )
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "s3fd-619a316812.pth").exists()
    # auto falls back to the offline backend
    assert isinstance(make_landmarker("auto"), DlibBackend)


def test_face_alignment_rejects_a_corrupt_weight_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for weight in FACE_ALIGNMENT_FILES:
        (folder / weight.name).write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="does not match 619a316812"):
        FaceAlignmentBackend()


def test_face_alignment_backend_wiring_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """Random-init weights in place of the real files (hash check bypassed): the backend builds without
    any download and turns face-alignment's output into DetectedFace records."""
    import face_alignment.utils as fa_utils
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    import sadtalker.weights.face_models as face_models

    # Skip numba's 5-10 s JIT compilation of the heatmap decoding: run its plain-Python body instead.
    for name in ("_get_preds_fromhm", "transform_np"):
        monkeypatch.setattr(fa_utils, name, getattr(fa_utils, name).py_func)

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), folder / "s3fd-619a316812.pth")
    torch.save(FAN(4).state_dict(), folder / "2DFAN4-11f355bf06.pth.tar")
    monkeypatch.setattr(face_models, "verify_file", lambda path, weight: None)
    backend = FaceAlignmentBackend()
    assert isinstance(backend, FaceLandmarker) and backend.name == "face-alignment"
    # random detector weights find nonsense: feed one fixed box instead
    box = np.array([-10.0, 12.0, 90.0, 100.0, 0.93])
    monkeypatch.setattr(backend._model.face_detector, "detect_from_image", lambda image: [box])
    torch.set_flush_denormal(True)  # random-init FAN activations decay into slow subnormal floats
    try:
        faces = backend.detect(np.zeros((96, 128, 3), np.uint8))
    finally:
        torch.set_flush_denormal(False)
    assert len(faces) == 1
    assert faces[0].box == (0.0, 12.0, 90.0, 96.0)  # clamped to the image
    assert faces[0].score == pytest.approx(0.93)
    assert faces[0].landmarks.shape == (68, 2) and faces[0].landmarks.dtype == np.float32
    monkeypatch.setattr(backend._model.face_detector, "detect_from_image", lambda image: [])
    assert backend.detect(np.zeros((96, 128, 3), np.uint8)) == []


def test_face_alignment_registry_entries() -> None:
    names = {w.name: w for w in FACE_ALIGNMENT_FILES}
    assert set(names) == {"s3fd-619a316812.pth", "2DFAN4-11f355bf06.pth.tar"}
    assert sha256_prefix(names["s3fd-619a316812.pth"]) == "619a316812"
    assert names["2DFAN4-11f355bf06.pth.tar"].urls == (
        "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    )
    assert all(w.sha256 is None for w in FACE_ALIGNMENT_FILES)


# ---------------------------------------------------------------------------------------- image loading


def _png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG") if mode else Image.fromarray(array).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _colour_image(height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_load_rgb_png_and_uppercase_extension(tmp_path: Path) -> None:
    array = _colour_image()
    path = tmp_path / "Photo.PNG"
    path.write_bytes(_png_bytes(array))
    photo = load_image(path)
    assert photo.size == (64, 48) and photo.format == "PNG" and photo.mode == "RGB"
    np.testing.assert_array_equal(photo.pixels, array)
    assert photo.pixels.flags["C_CONTIGUOUS"] and photo.pixels.dtype == np.uint8


def test_rgba_alpha_dropped_like_opencv(tmp_path: Path) -> None:
    rgba = np.concatenate([_colour_image(), np.zeros((48, 64, 1), np.uint8)], axis=2)
    rgba[:, :32, 3] = 255
    path = tmp_path / "rgba.png"
    path.write_bytes(_png_bytes(rgba))
    photo = load_image(path)
    assert photo.mode == "RGBA"
    np.testing.assert_array_equal(photo.pixels, rgba[:, :, :3])  # RGB kept even where alpha is 0
    np.testing.assert_array_equal(photo.pixels, cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_rgba_sample_matches_opencv(shared_dir: Path) -> None:
    path = shared_dir / "samples" / "sad1.png"
    photo = load_image(path)
    assert photo.mode == "RGBA" and photo.size == (211, 226)
    np.testing.assert_array_equal(photo.pixels, cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


@pytest.mark.parametrize("kind", ["grey8", "grey16", "rgb16", "palette", "palette-transparent", "grey-alpha"])
def test_modes_match_opencv(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / f"{kind}.png"
    if kind == "grey8":
        Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(path)
    elif kind == "grey16":
        Image.fromarray(rng.integers(0, 65536, (40, 50), dtype=np.uint16)).save(path)
    elif kind == "rgb16":
        cv2.imwrite(str(path), rng.integers(0, 65536, (40, 50, 3), dtype=np.uint16))
    elif kind.startswith("palette"):
        image = Image.fromarray(_colour_image(40, 50)).quantize(16)
        if kind == "palette-transparent":
            image.info["transparency"] = 3
        image.save(path, transparency=3) if kind == "palette-transparent" else image.save(path)
    else:
        la = np.stack([rng.integers(0, 256, (40, 50)), rng.integers(0, 256, (40, 50))], -1).astype(np.uint8)
        Image.fromarray(la, mode="LA").save(path)
    photo = load_image(path)
    assert photo.pixels.shape == (40, 50, 3) and photo.pixels.dtype == np.uint8
    np.testing.assert_array_equal(photo.pixels, cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    photo = load_image(path)
    assert photo.mode == "CMYK" and photo.format == "JPEG" and photo.pixels.shape == (48, 64, 3)
    assert np.abs(photo.pixels.astype(int) - [255, 0, 0]).max() <= 8


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(tmp_path: Path, fmt: str) -> None:
    array = np.zeros((40, 60, 3), np.uint8)
    array[:, :30] = (255, 0, 0)  # left half red
    array[:, 30:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / f"rotated.{fmt.lower()}"
    Image.fromarray(array).save(path, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    photo = load_image(path)
    assert photo.exif_transposed and photo.size == (40, 60)
    expected = np.rot90(array, k=-1)  # clockwise: the red half ends on top
    if fmt == "PNG":
        np.testing.assert_array_equal(photo.pixels, expected)
    else:  # lossy: compare away from the colour edge
        assert np.abs(photo.pixels[:20].astype(int) - expected[:20]).max() <= 8
        assert np.abs(photo.pixels[40:].astype(int) - expected[40:]).max() <= 8


def test_webp_and_bmp(tmp_path: Path) -> None:
    array = _colour_image()
    for fmt, name in (("WEBP", "WebP"), ("BMP", "BMP")):
        path = tmp_path / f"x.{fmt.lower()}"
        Image.fromarray(array).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        photo = load_image(path)
        assert photo.format == name
        np.testing.assert_array_equal(photo.pixels, array)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "empty file"),
        (b"hello, I am a text file\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "cannot decode|corrupt|not an image"),
    ],
    ids=["zero-byte", "text-named-png", "corrupt-bytes"],
)
def test_bad_files_raise_image_error(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=match) as info:
        load_image(path)
    assert str(path) in str(info.value) and info.value.path == str(path)


def test_truncated_png_raises(tmp_path: Path) -> None:
    data = _png_bytes(_colour_image(200, 200))
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


def test_missing_file_and_unsupported_format(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "nope.png")
    gif = tmp_path / "anim.gif"
    Image.fromarray(_colour_image()).save(gif)
    with pytest.raises(ImageError, match="unsupported image format GIF"):
        load_image(gif)


def test_tiny_image_raises(tmp_path: Path) -> None:
    path = tmp_path / "tiny.png"
    path.write_bytes(_png_bytes(_colour_image(20, 20)))
    with pytest.raises(ImageError, match="too small: 20×20"):
        load_image(path)


def test_pixel_limit(tmp_path: Path) -> None:
    data = _png_bytes(_colour_image(100, 100))
    with pytest.raises(ImageError, match="too large"):
        decode_image(data, "big.png", max_pixels=5000)


def _solid_png(path: Path, width: int, height: int, rgb: tuple[int, int, int], patch=None) -> None:
    """Write a large RGB PNG row by row (never holding the whole image): solid colour, optional patch
    ``(x, y, array)`` pasted in."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return len(payload).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    plain = b"\x00" + bytes(rgb) * width
    compressor = zlib.compressobj(6)
    parts = []
    for row in range(height):
        line = plain
        if patch is not None and patch[1] <= row < patch[1] + patch[2].shape[0]:
            x, y, array = patch
            buffer = bytearray(plain)
            buffer[1 + 3 * x : 1 + 3 * (x + array.shape[1])] = array[row - y].tobytes()
            line = bytes(buffer)
        parts.append(compressor.compress(line))
    parts.append(compressor.flush())
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )


def test_very_large_photo_is_detected_on_a_downscaled_copy(
    tmp_path: Path, test_data: Path, dlib_backend: DlibBackend
) -> None:
    portrait = np.asarray(Image.open(test_data / "portrait.png").convert("RGB").resize((768, 768)))
    path = tmp_path / "huge.png"
    _solid_png(path, 10000, 10000, (90, 120, 160), patch=(6000, 3000, portrait))
    assert path.stat().st_size < 5_000_000
    photo = load_image(path)
    assert photo.size == (10000, 10000)
    selection = find_face(dlib_backend, photo.pixels, path=photo.path)
    assert selection.detect_scale == pytest.approx(0.4096)
    x1, y1, x2, y2 = selection.face.box
    # dlib's box on the 256 px portrait is about (67, 67, 197, 197): ×3 and shifted by (6000, 3000)
    assert 6000 + 3 * 20 < x1 < 6000 + 3 * 80 and 3000 + 3 * 50 < y1 < 3000 + 3 * 110
    assert 6000 + 3 * 170 < x2 < 6000 + 3 * 230
    check_anatomy(selection.face, photo.size)
    del photo


# ------------------------------------------------------------------------------------------------- crop


def test_face_box_upright_face_is_square_and_contains_the_face() -> None:
    lm = synthetic_landmarks(300, 260, 150)
    box = face_box(lm, (640, 600))
    assert box.shrink == 1 and box.rsize == (640, 600)
    clx, cly, crx, cry = box.crop
    lx, ly, rx, ry = box.quad
    assert 0 <= clx < crx <= 640 and 0 <= cly < cry <= 600
    assert rx - lx == pytest.approx(ry - ly, rel=1e-6)  # upright: a square quad
    # every landmark lies inside the quad box (relative to the crop origin)
    rel = lm - np.array([clx, cly])
    assert np.all((rel[:, 0] > lx) & (rel[:, 0] < rx) & (rel[:, 1] > ly) & (rel[:, 1] < ry))


def test_crop_modes_regions_and_crop_info() -> None:
    size = (640, 600)
    lm = synthetic_landmarks(300, 260, 120)
    image = np.random.default_rng(0).integers(0, 256, (600, 640, 3), dtype=np.uint8)
    crop = plan_crop("crop", size, lm)
    ext = plan_crop("extcrop", size, lm)
    full = plan_crop("full", size, lm)
    assert (
        crop.crop_box == ext.crop_box and crop.quad == ext.quad and crop.crop_info_size == ext.crop_info_size
    )
    assert crop.region == full.region and full.is_full and not crop.is_full
    lx, ly, rx, ry = (int(v) for v in crop.quad)
    assert crop.crop_info_size == (rx - lx, ry - ly)
    assert ext.region == crop.crop_box
    cropped = apply_crop(image, crop)
    x1, y1, x2, y2 = crop.region
    np.testing.assert_array_equal(cropped, image[y1:y2, x1:x2])
    assert apply_crop(image, ext).shape == (
        ext.crop_box[3] - ext.crop_box[1],
        ext.crop_box[2] - ext.crop_box[0],
        3,
    )
    assert full.paste_box == (
        crop.crop_box[0] + lx,
        crop.crop_box[1] + ly,
        crop.crop_box[0] + rx,
        crop.crop_box[1] + ry,
    )
    assert plan_crop("extfull", size, lm).paste_box == crop.crop_box

    resize = plan_crop("resize", size, None, 512)
    assert resize.crop_box is None and resize.quad is None and resize.crop_info_size == size
    record, source = crop_source(image, "resize", None, 512)
    assert source.shape == (512, 512, 3) and record.region == (0, 0, 640, 600)
    np.testing.assert_array_equal(source, cv2.resize(image, (512, 512)))


def test_ry_is_clipped_by_the_image_width() -> None:
    # quirk 10 (reproduced): a face low in a portrait-format photo gets ry <= W.
    lm = synthetic_landmarks(150, 420, 80)
    box = face_box(lm, (300, 600))
    assert box.quad[3] <= 300
    assert box.crop[3] > 300  # the crop rectangle itself is not affected


def test_very_large_face_shrinks_and_paste_box_maps_back() -> None:
    size = (9000, 7000)
    lm = synthetic_landmarks(4500, 3500, 2200)
    record = plan_crop("full", size, lm)
    assert record.shrink >= 2
    assert record.rsize == (round(9000 / record.shrink), round(7000 / record.shrink))
    # quirk 13 fixed: paste_box is in original pixels, about shrink × the rsize box
    x1, y1, x2, y2 = record.paste_box
    rx1, ry1, rx2, ry2 = record.paste_box_rsize
    assert abs(x1 - rx1 * record.shrink) <= record.shrink and abs(y2 - ry2 * record.shrink) <= record.shrink
    # landmarks map into the source and back
    src = landmarks_to_source(lm, record)
    np.testing.assert_allclose(source_to_original(src, record), lm, atol=0.05)
    assert np.all((src > 0) & (src < 256))


def test_record_round_trips_through_json() -> None:
    record = plan_crop("extcrop", (640, 600), synthetic_landmarks(300, 260, 120), 512)
    again = CropRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record and again.crop_info == record.crop_info


def test_mode_names_and_face_outside_image() -> None:
    assert normalise_mode(" Crop ") == "crop"
    with pytest.raises(ValueError, match="unknown crop mode"):
        normalise_mode("crap")
    with pytest.raises(ValueError, match="needs the 68"):
        plan_crop("crop", (100, 100), None)
    with pytest.raises(NoFaceError, match="outside"):
        plan_crop("crop", (640, 480), synthetic_landmarks(-400, 200, 60), path="off.png")
