"""Source photo loading: any common still image to an 8-bit RGB array, or a clear :class:`ImageError`.

The official ``CropAndExtract.generate`` (src/utils/preprocess.py) reads ``.jpg/.png/.jpeg`` files with
OpenCV ``IMREAD_COLOR`` and anything else as a video, by a case-sensitive extension test (so ``.PNG`` and
``.JPG`` go to the video reader). We read with Pillow, by content (not by extension, so ``.PNG``/``.JPG``
work), and match what OpenCV returns.
A video given as the photo (decided by content: MP4/QuickTime, Matroska/WebM, AVI, FLV, MPEG) gives its
first frame, as the reference does for a video source (:func:`first_video_frame`; decoded with ffmpeg).
For still images:

* EXIF orientation is applied (OpenCV's ``IMREAD_COLOR`` applies it too);
* alpha is **dropped, not composited**: an RGBA pixel keeps its RGB values whatever its alpha, exactly
  as ``IMREAD_COLOR`` does (``sad1.png`` of the samples is RGBA);
* 16 bits per channel become 8 by keeping the high byte (``v >> 8``, what OpenCV/libpng's strip does);
* greyscale is replicated to 3 channels; palette, CMYK and other modes are converted by Pillow (CMYK
  conversion may differ slightly from OpenCV's; those files are rare and the difference is small).

Limits: at least :data:`MIN_SIDE` pixels per side, at most :data:`MAX_PIXELS` pixels in all. Very large
photos load at full resolution (the crop needs it), converted in strips so that the peak memory is about
the decoded Pillow image plus the output array (~7 bytes per pixel, ~0.8 GB measured for 10 000²); face
detection then runs on a downscaled copy (:func:`sadtalker.face.landmarks.find_face`).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sadtalker.errors import ImageError

log = logging.getLogger(__name__)

#: Pillow format name -> the name we report. MPO is how Pillow names many camera JPEGs.
SUPPORTED_FORMATS: dict[str, str] = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "MPO": "JPEG",
    "WEBP": "WebP",
    "BMP": "BMP",
}
#: Smallest accepted side in pixels.
MIN_SIDE = 32
#: Largest accepted pixel count (about 12 000 × 12 000; 450 MB as RGB). Below Pillow's own bomb error.
MAX_PIXELS = 150_000_000


@dataclass(frozen=True, eq=False)
class LoadedImage:
    """A decoded photo.

    Attributes:
        pixels: (H, W, 3) uint8 RGB, C-contiguous, orientation applied.
        path: the name it was loaded from (for messages).
        format: ``PNG``, ``JPEG``, ``WebP``, ``BMP``, or ``video`` (a clip given as the photo: its first
            frame, decided by content).
        mode: the Pillow mode of the file before conversion (``RGBA``, ``I;16``, ``CMYK`` ...).
        exif_transposed: True when an EXIF orientation tag rotated or flipped the pixels.
    """

    pixels: np.ndarray
    path: str
    format: str
    mode: str
    exif_transposed: bool

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) in pixels."""
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


def load_image(path: str | Path, *, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read the photo at ``path`` (PNG, JPEG, WebP or BMP) as 8-bit RGB.

    Raises:
        ImageError: missing, empty, not an image, unsupported format, corrupt or truncated, too small or
            too large. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(str(path), "file not found" if not path.exists() else "not a regular file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
        kind = sniff_media(head)
        if kind is not None and kind[0] == "video":  # a video source: its first frame (as the official code)
            return first_video_frame(path, str(path), kind[1], min_side=min_side, max_pixels=max_pixels)
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"cannot read the file ({exc})") from exc
    return decode_image(data, str(path), min_side=min_side, max_pixels=max_pixels)


def first_video_frame(
    path: str | Path,
    name: str,
    container: str = "video",
    *,
    min_side: int = MIN_SIDE,
    max_pixels: int = MAX_PIXELS,
) -> LoadedImage:
    """The first frame of the video at ``path`` as the source photo (the reference uses a video source's
    first frame; paste-back in the ``full`` modes then uses that frame too). ``format`` is ``video``.

    Raises:
        ImageError: the video cannot be decoded, has no video stream or no frame, or is too small / large.
    """
    from sadtalker.errors import InputError
    from sadtalker.qc.decode import FrameReader
    from sadtalker.video.ffmpeg import probe

    try:
        info = probe(path)
    except InputError as exc:
        raise ImageError(name, f"a video file ({container}) that cannot be read: {exc.problem}") from exc
    if not info.has_video or not info.width or not info.height:
        raise ImageError(name, f"a media file ({container}) without a video stream, not a photo")
    width, height = int(info.width), int(info.height)
    if width * height > max_pixels:
        raise ImageError(name, f"video frames too large: {width}×{height} px")
    frames = iter(FrameReader(path, width, height))
    try:
        first = next(frames, None)
    finally:
        frames.close()  # stops (and reaps) ffmpeg after one frame
    if first is None:
        raise ImageError(name, f"a video file ({container}) without a decodable frame")
    if min(width, height) < min_side:
        raise ImageError(name, f"image too small: {width}×{height} px (at least {min_side} px per side)")
    pixels = np.ascontiguousarray(first)
    return LoadedImage(pixels=pixels, path=name, format="video", mode="RGB", exif_transposed=False)


def decode_image(
    data: bytes, name: str, *, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS
) -> LoadedImage:
    """Decode the bytes of a photo (e.g. read from object storage); ``name`` is used in error messages.

    Same rules and errors as :func:`load_image`.
    """
    if len(data) == 0:
        raise ImageError(name, "empty file (0 bytes)")
    kind = sniff_media(data[:512])
    if kind is not None and kind[0] == "video":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="sadtalker-video-") as tmp:
            local = Path(tmp) / "source"
            local.write_bytes(data)
            return first_video_frame(local, name, kind[1], min_side=min_side, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; Pillow's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise ImageError(name, _not_an_image(data)) from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large ({exc})") from exc
    except Exception as exc:  # Pillow raises many types on malformed headers
        raise ImageError(name, f"cannot decode the image header ({type(exc).__name__}: {exc})") from exc

    with image:
        fmt = SUPPORTED_FORMATS.get(image.format or "")
        if fmt is None:
            raise ImageError(name, f"unsupported image format {image.format}; use PNG, JPEG, WebP or BMP")
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(
                name,
                f"image too large: {width}×{height} px "
                f"({width * height / 1e6:.0f} MP > {max_pixels / 1e6:.0f} MP)",
            )
        mode = image.mode
        try:
            image.load()
            oriented, transposed = _apply_exif_orientation(image, name)
            pixels = _to_rgb8(oriented)
        except ImageError:
            raise
        except MemoryError as exc:
            raise ImageError(name, f"not enough memory to decode {width}×{height} px") from exc
        except Exception as exc:  # truncated data, bad CRC, broken compression stream ...
            raise ImageError(name, f"corrupt or truncated image data ({type(exc).__name__}: {exc})") from exc

    h, w = pixels.shape[:2]
    if min(w, h) < min_side:
        raise ImageError(name, f"image too small: {w}×{h} px (at least {min_side} px per side needed)")
    return LoadedImage(pixels=pixels, path=name, format=fmt, mode=mode, exif_transposed=transposed)


#: ISO base media (``....ftyp<brand>``) brands of still images: HEIF/HEIC (phones) and AVIF.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P "}


def sniff_media(data: bytes) -> tuple[str, str] | None:
    """What the first bytes of a file say it is: ``("video" | "audio" | "heif", container)`` or None.

    Decides by content, never by name: a clip named ``photo.png`` is a video."""
    head = data[:16]
    kind = None
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _HEIF_BRANDS:
            return "heif", "AVIF" if brand.startswith(b"avi") else "HEIF/HEIC"
        kind = ("audio", "M4A") if brand in _AUDIO_BRANDS else ("video", "MP4/QuickTime")
    elif head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):  # QuickTime without an ftyp box
        kind = ("video", "QuickTime")
    elif head.startswith(b"\x1aE\xdf\xa3"):
        kind = ("video", "Matroska/WebM")
    elif head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"WAVE"):
        kind = ("video", "AVI") if head[8:12] == b"AVI " else ("audio", "WAV")
    elif head.startswith(b"FLV\x01"):
        kind = ("video", "FLV")
    elif head.startswith(b"\x00\x00\x01\xba") or data[:377:188] == b"GGG":
        kind = ("video", "MPEG")
    elif head.startswith((b"ID3", b"fLaC", b"OggS")):
        kind = ("audio", {b"I": "MP3", b"f": "FLAC", b"O": "Ogg"}[head[:1]])
    return kind


def _not_an_image(data: bytes) -> str:
    """Why ``data`` is no photo Pillow can read, naming what it is when the first bytes say so: an audio
    file (photo and speech swapped) or a HEIF/AVIF photo (videos are read by :func:`first_video_frame`)."""
    kind = sniff_media(data)
    if kind is not None and kind[0] == "heif":
        return f"unsupported image format {kind[1]}; convert it to PNG, JPEG, WebP or BMP"
    if kind is None:
        return "not an image (unrecognised content; expected PNG, JPEG, WebP or BMP)"
    what, container = kind
    if what == "audio":
        return f"an audio file ({container}), not a photo (photo and speech swapped?)"
    return f"a video file ({container}), not a still photo: give a PNG, JPEG, WebP or BMP image"


def _apply_exif_orientation(image: Image.Image, name: str) -> tuple[Image.Image, bool]:
    """Rotate/flip by the EXIF orientation tag (1 = none). A broken EXIF block is ignored with a warning."""
    try:
        orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:
        log.warning("%s: unreadable EXIF data ignored (%s)", name, exc)
        return image, False
    if orientation in (None, 1):
        return image, False
    try:
        return ImageOps.exif_transpose(image), True
    except Exception as exc:
        log.warning("%s: EXIF orientation %r not applied (%s)", name, orientation, exc)
        return image, False


def _to_rgb8(image: Image.Image, strip_bytes: int = 1 << 24) -> np.ndarray:
    """Any Pillow mode -> (H, W, 3) uint8 RGB, converted in horizontal strips of about ``strip_bytes`` so
    that a large photo costs its decoded Pillow image plus the output array, no whole-image temporaries."""
    width, height = image.size
    out = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, strip_bytes // (3 * width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = image if (top, bottom) == (0, height) else image.crop((0, top, width, bottom))
        out[top:bottom] = _strip_to_rgb8(strip)
    return out


def _strip_to_rgb8(image: Image.Image) -> np.ndarray:
    """One strip: alpha dropped (no compositing), 16 bit -> high byte, grey replicated."""
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image, dtype=np.uint8)
    if mode == "L":  # broadcast into the 3 channels by the caller (Pillow's L -> RGB replicates too)
        return np.asarray(image, dtype=np.uint8)[:, :, None]
    if mode.startswith("I;16") or mode == "I":
        # 16-bit greyscale (Pillow reads 16-bit RGB PNGs as 8-bit RGB itself, also by the high byte).
        values = np.asarray(image).astype(np.int64)
        return (np.clip(values, 0, 65535) >> 8).astype(np.uint8)[:, :, None]
    if mode == "F":
        return np.clip(np.rint(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)[:, :, None]
    if mode in ("RGBA", "RGBX", "RGBa"):
        # Keep the stored RGB values: no compositing, no un-premultiplying (OpenCV IMREAD_COLOR semantics).
        return np.asarray(image, dtype=np.uint8)[:, :, :3]
    if mode in ("LA", "La", "PA"):
        return np.asarray(image.convert("RGBA"), dtype=np.uint8)[:, :, :3]
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
