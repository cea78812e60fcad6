"""Issue 11, photos: every bad or unusual photo ends in a typed error naming the file, a warning, or a face.

Each case goes through :func:`sadtalker.pipeline.extract_face` (the batch's face stage) with the session's
dlib models. Media are made here, small, from tests/data/portrait.png (256², one face of about 130 px).

Covered elsewhere: a 10 000² photo loads and its face is found on a 4096² copy
(tests/test_face.py ``test_very_large_photo_is_detected_on_a_downscaled_copy``, a 3 MB mostly flat PNG).
"""

from __future__ import annotations

import logging
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sadtalker.errors import ImageError, NoFaceError
from sadtalker.face.image import MAX_PIXELS, load_image
from sadtalker.face.landmarks import MIN_FACE_SIZE, find_face
from sadtalker.options import RenderOptions
from sadtalker.pipeline import extract_face
from sadtalker.records import FaceRecord

PORTRAIT = Path(__file__).resolve().parents[1] / "data" / "portrait.png"
OPTIONS = RenderOptions(size=256, preprocess="crop")


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    return Image.open(PORTRAIT).convert("RGB")


@pytest.fixture(scope="module", autouse=True)
def _networks_loaded(models) -> None:
    """Load the landmarker and the 3DMM regressor once, here, so no case pays for the first use."""
    models.landmarker()
    models.recon_network(OPTIONS.size)


def _face(path: Path, models) -> FaceRecord:
    face = extract_face(path, OPTIONS, models)
    assert face.source_image.shape == (256, 256, 3) and np.isfinite(face.coeff_3dmm).all()
    return face


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ---- unreadable files: ImageError naming the file, before any model work --------------------------------


def _truncated_png(path: Path) -> None:
    data = PORTRAIT.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_truncated_png, "corrupt or truncated image data"),
        (lambda p: p.write_bytes(b""), r"empty file \(0 bytes\)"),
        (lambda p: p.write_text("id,image,audio\nthis is text, not a photo\n"), "not an image"),
    ],
    ids=["corrupt", "zero-bytes", "text-named-png"],
)
def test_unreadable_photo_is_an_image_error_naming_the_file(tmp_path: Path, models, make, problem) -> None:
    path = tmp_path / "photo.png"
    make(path)
    with pytest.raises(ImageError, match=problem) as err:
        extract_face(path, OPTIONS, models)
    assert err.value.path == str(path) and str(path) in str(err.value)


# ---- faces: none, two, tiny ---------------------------------------------------------------------------


def test_no_face_is_a_no_face_error(tmp_path: Path, models) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "wall.png")
    with pytest.raises(NoFaceError, match="no face found") as err:
        extract_face(tmp_path / "wall.png", OPTIONS, models)
    assert err.value.path == str(tmp_path / "wall.png")


@pytest.mark.parametrize("second", [0.75, 0.5], ids=["both-usable", "second-too-small"])
def test_two_faces_take_the_largest_and_say_how_many(
    tmp_path: Path, models, portrait: Image.Image, second: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A smaller copy on the left, the full-size face on the right: the right one is animated, the
    FaceRecord records 2 faces and a warning says so (also when the other face is too small to use)."""
    side = round(256 * second)
    canvas = Image.new("RGB", (512, 256), (128, 128, 128))
    canvas.paste(portrait.resize((side, side), Image.LANCZOS), ((256 - side) // 2, (256 - side) // 2))
    canvas.paste(portrait, (256, 0))
    canvas.save(tmp_path / "two.png")
    with caplog.at_level(logging.INFO, logger="sadtalker"):
        face = _face(tmp_path / "two.png", models)
    assert face.num_faces == 2
    assert face.landmarks is not None and face.landmarks[:, 0].min() > 256  # the right, larger face
    said = [r for r in caplog.records if "2 faces found" in r.getMessage() and "largest" in r.getMessage()]
    assert said and said[0].levelno == logging.WARNING and str(tmp_path / "two.png") in said[0].getMessage()


def test_tiny_face_is_a_no_face_error_giving_the_sizes(tmp_path: Path, models, portrait: Image.Image) -> None:
    canvas = Image.new("RGB", (240, 240), (128, 128, 128))
    canvas.paste(portrait.resize((102, 102), Image.LANCZOS), (60, 60))  # a face of about 53 px
    canvas.save(tmp_path / "tiny.png")
    with pytest.raises(NoFaceError, match=f"face too small: 1 found.*at least {MIN_FACE_SIZE} px"):
        extract_face(tmp_path / "tiny.png", OPTIONS, models)


# ---- sizes --------------------------------------------------------------------------------------------


def test_20x20_photo_is_too_small(tmp_path: Path, models) -> None:
    Image.new("RGB", (20, 20), (200, 150, 120)).save(tmp_path / "small.png")
    with pytest.raises(ImageError, match="image too small: 20×20 px"):
        extract_face(tmp_path / "small.png", OPTIONS, models)


def test_photo_over_the_pixel_maximum_is_refused_from_its_header(tmp_path: Path, models) -> None:
    """13 000² (169 MP > 150 MP): refused from the PNG header alone (a 100-byte file), nothing decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 13_000, 13_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    (tmp_path / "huge.png").write_bytes(data + chunk(b"IEND", b""))
    assert MAX_PIXELS < 13_000**2
    with pytest.raises(ImageError, match=r"image too large: 13000×13000 px \(169 MP > 150 MP\)"):
        extract_face(tmp_path / "huge.png", OPTIONS, models)


# ---- modes and formats: a face, with the pixels OpenCV's IMREAD_COLOR would give ----------------------


def test_rgba_photo_keeps_its_rgb_values(tmp_path: Path, models, portrait: Image.Image) -> None:
    rgba = portrait.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(portrait.size))  # alpha 0 at the top to 255 below
    rgba.save(tmp_path / "rgba.png")
    loaded = load_image(tmp_path / "rgba.png")
    assert loaded.mode == "RGBA" and np.array_equal(loaded.pixels, np.asarray(portrait))
    assert _face(tmp_path / "rgba.png", models).num_faces == 1


@pytest.mark.parametrize("channels", ["rgb", "grey"])
def test_16_bit_png_keeps_the_high_byte(tmp_path: Path, models, portrait: Image.Image, channels: str) -> None:
    import cv2

    rgb = np.asarray(portrait)
    if channels == "grey":
        rgb = np.repeat(np.asarray(portrait.convert("L"))[:, :, None], 3, axis=2)
    wide = rgb.astype(np.uint16) * 256 + 200  # a low byte that rounding would carry into the high one
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), wide[:, :, ::-1] if channels == "rgb" else wide[:, :, 0])
    assert Image.open(path).mode in ("RGB", "I;16", "I")  # Pillow's names for 16-bit RGB / grey PNGs
    assert np.array_equal(load_image(path).pixels, rgb)
    assert _face(path, models).num_faces == 1


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path, models, portrait: Image.Image) -> None:
    portrait.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    loaded = load_image(tmp_path / "cmyk.jpg")
    assert loaded.mode == "CMYK" and _mean_abs_diff(loaded.pixels, np.asarray(portrait)) < 3
    assert _face(tmp_path / "cmyk.jpg", models).num_faces == 1


def test_exif_rotated_jpeg_is_turned_upright(tmp_path: Path, models, portrait: Image.Image) -> None:
    """Stored lying on its side with orientation 6 ("rotate 90° clockwise to view"): dlib's frontal
    detector finds no face in the stored pixels, so a face at all shows the orientation was honoured."""
    sideways = portrait.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    with pytest.raises(NoFaceError):
        find_face(models.landmarker(), np.asarray(sideways))
    loaded = load_image(tmp_path / "phone.jpg")
    assert loaded.exif_transposed and _mean_abs_diff(loaded.pixels, np.asarray(portrait)) < 3
    assert _face(tmp_path / "phone.jpg", models).num_faces == 1


def test_webp_photo(tmp_path: Path, models, portrait: Image.Image) -> None:
    portrait.save(tmp_path / "photo.webp", quality=95)
    assert load_image(tmp_path / "photo.webp").format == "WebP"
    assert _face(tmp_path / "photo.webp", models).num_faces == 1


# ---- a video given as the photo ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip.mp4", "clip.png"], ids=["mp4", "mp4-named-png"])
def test_video_given_as_the_photo_is_its_first_frame(tmp_path: Path, models, name: str) -> None:
    """A video as the source (decided by content, whatever its name) is its first frame, as in the
    reference (issue 13); a broken one is still an ImageError that says it is a video."""
    from sadtalker.video.ffmpeg import ffmpeg_exe

    video = tmp_path / name
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-y", "-loop", "1", "-i", str(PORTRAIT), "-t", "0.12"]
        + ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4", str(video)],
        check=True,
        timeout=60,
    )
    face = extract_face(video, OPTIONS, models)
    assert face.num_faces == 1 and face.source_image.shape == (256, 256, 3)
    broken = tmp_path / f"broken-{name}"
    broken.write_bytes(video.read_bytes()[:200])
    with pytest.raises(ImageError, match="a video file .*cannot be read") as err:
        extract_face(broken, OPTIONS, models)
    assert err.value.path == str(broken)


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "unsupported image format HEIF/HEIC; convert it to PNG"),
        (b"RIFF\x24\0\0\0WAVEfmt ", r"an audio file \(WAV\), not a photo \(photo and speech swapped\?\)"),
    ],
    ids=["heic", "speech-as-photo"],
)
def test_other_files_given_as_the_photo_say_what_they_are(tmp_path: Path, models, head, problem) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(head + bytes(64))
    with pytest.raises(ImageError, match=problem):
        extract_face(path, OPTIONS, models)
