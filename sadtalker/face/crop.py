"""Face crop of the source photo: crop box and quad from 68 landmarks, the five crop modes, the S×S source.

Official counterparts: ``Preprocesser.align_face`` (FFHQ-style box) and ``Preprocesser.crop`` in
src/utils/croper.py, and the mode branches and S×S resize of ``CropAndExtract.generate``
(src/utils/preprocess.py). Pure functions; the result is a :class:`CropRecord` holding everything the
renderer and the paste-back need.

Reproduced from the official code: ``ry`` is clipped by the image *width*, not its height; the
``crop_info`` size and the paste box come from the unclipped quad, although the crop itself is clipped;
``extcrop`` takes its aspect ratio from the quad box, not from the wider crop it renders. Changed: for very
large faces (``shrink > 1``) the official code computes the crop in the down-scaled ``rsize`` space but
pastes into the original image unchanged, here :attr:`CropRecord.paste_box` maps it back; the official
code resizes a Pillow image (``Image.ANTIALIAS``, gone in Pillow 10) only to read its size, here ``rsize``
is computed directly. Detection boxes with negative coordinates (which the official numpy slicing wraps
around) are clamped by the landmark backends.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from sadtalker.errors import NoFaceError
from sadtalker.options import PREPROCESS_MODES, Preprocess

#: ``output_size`` of the reference's ``align_face`` (fixed, independent of the render size).
ALIGN_OUTPUT_SIZE = 512

Box = tuple[int, int, int, int]
QuadBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceBox:
    """Result of the official ``Preprocesser.align_face`` (src/utils/croper.py) for one photo.

    Attributes:
        rsize: (W', H') size of the (notionally) down-scaled image the boxes refer to; the original size
            unless ``shrink > 1``.
        shrink: integer down-scale factor (1 when none).
        crop: (clx, cly, crx, cry) crop rectangle in ``rsize`` pixels, clipped to the image.
        quad: (lx, ly, rx, ry) face box relative to the crop origin, floats, **not** clipped to the crop;
            ``ry`` clipped by the image width, as the official code does.
    """

    rsize: tuple[int, int]
    shrink: int
    crop: Box
    quad: QuadBox


@dataclass(frozen=True)
class CropRecord:
    """How the S×S source image was cut out of the photo, and what paste-back needs.

    All boxes are ``(x1, y1, x2, y2)`` with exclusive ends.

    Attributes:
        mode: one of :data:`sadtalker.options.PREPROCESS_MODES`.
        original_size: (W, H) of the photo as loaded.
        rsize: (W', H') of the image the crop box refers to (= ``original_size`` unless ``shrink > 1``).
        shrink: integer down-scale factor ``align_face`` applies to very large faces (1 when none).
        crop_box: (clx, cly, crx, cry) in ``rsize`` pixels; None in ``resize`` mode.
        quad: (lx, ly, rx, ry) relative to ``crop_box``'s origin, unclipped floats; None in ``resize`` mode.
        crop_info_size: (r_w, r_h) = ``crop_info[0]`` of the reference: ``(trunc(rx) - trunc(lx),
            trunc(ry) - trunc(ly))`` in crop modes (also for ``ext`` modes, as the official code does,
            although they render the whole crop rectangle), (W, H) in resize mode.
            The renderer resizes its frames to ``S × trunc(S·r_h/r_w)``.
        region: the pixels actually taken, in ``rsize`` pixels (after the array-bound clipping that the
            reference gets from numpy slicing); the source image is ``region`` resized to S×S.
        size: S, the side of the source image.
    """

    mode: Preprocess
    original_size: tuple[int, int]
    rsize: tuple[int, int]
    shrink: int
    crop_box: Box | None
    quad: QuadBox | None
    crop_info_size: tuple[int, int]
    region: Box
    size: int

    @property
    def is_ext(self) -> bool:
        return self.mode.startswith("ext")

    @property
    def is_full(self) -> bool:
        """Modes whose result is pasted back into the photo (``full``, ``extfull``)."""
        return self.mode in ("full", "extfull")

    @property
    def crop_info(self) -> tuple[tuple[int, int], Box | None, QuadBox | None]:
        """The reference's 3-tuple ``((r_w, r_h), crop, quad)``."""
        return self.crop_info_size, self.crop_box, self.quad

    @property
    def paste_box_rsize(self) -> Box:
        """Paste target of the official ``paste_pic`` (src/utils/paste_pic.py) in ``rsize`` pixels, unclipped.

        ``full``/``crop``: ``(clx + trunc(lx), cly + trunc(ly), clx + trunc(rx), cly + trunc(ry))``;
        ``extfull``/``extcrop``: the crop rectangle; ``resize``: the whole image.
        """
        if self.crop_box is None or self.quad is None:
            return 0, 0, self.rsize[0], self.rsize[1]
        clx, cly, crx, cry = self.crop_box
        if self.is_ext:
            return clx, cly, crx, cry
        lx, ly, rx, ry = (int(v) for v in self.quad)
        return clx + lx, cly + ly, clx + rx, cly + ry

    @property
    def paste_box(self) -> Box:
        """:attr:`paste_box_rsize` in original-image pixels (identical when ``shrink <= 1``; the official
        code pastes the ``rsize`` box into the original image unchanged).

        Like the reference's box it may extend past the image (it comes from the unclipped quad); clip it for
        a bounds-safe paste.
        """
        return self._to_original(self.paste_box_rsize)

    @property
    def region_original(self) -> Box:
        """:attr:`region` in original-image pixels: where the rendered face really came from."""
        return self._to_original(self.region)

    def _to_original(self, box: Box) -> Box:
        if self.rsize == self.original_size:
            return box
        fx = self.original_size[0] / self.rsize[0]
        fy = self.original_size[1] / self.rsize[1]
        x1, y1, x2, y2 = box
        return round(x1 * fx), round(y1 * fy), round(x2 * fx), round(y2 * fy)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); :meth:`from_dict` restores it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CropRecord:
        def tup(value: Any, kind: type) -> Any:
            return None if value is None else tuple(kind(v) for v in value)

        return cls(
            mode=data["mode"],
            original_size=tup(data["original_size"], int),
            rsize=tup(data["rsize"], int),
            shrink=int(data["shrink"]),
            crop_box=tup(data["crop_box"], int),
            quad=tup(data["quad"], float),
            crop_info_size=tup(data["crop_info_size"], int),
            region=tup(data["region"], int),
            size=int(data["size"]),
        )


def normalise_mode(mode: str) -> Preprocess:
    """Lower-case and validate a crop mode (the reference's substring tests accept typos; we do not)."""
    value = mode.strip().lower()
    if value not in PREPROCESS_MODES:
        raise ValueError(f"unknown crop mode {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}")
    return value  # type: ignore[return-value]


def face_box(
    landmarks: np.ndarray, image_size: tuple[int, int], output_size: int = ALIGN_OUTPUT_SIZE
) -> FaceBox:
    """Crop rectangle and face quad from 68 landmarks (official ``Preprocesser.align_face``).

    Args:
        landmarks: (68, 2) (x, y) in original-image pixels, iBUG-68 order. Computed in float32 like the
            reference (whose landmarks are float32), so boxes match it exactly.
        image_size: (W, H) of the original image.
        output_size: the reference's fixed 512; only sets the ``shrink`` threshold.
    """
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    width, height = int(image_size[0]), int(image_size[1])

    eye_left = np.mean(lm[36:42], axis=0)
    eye_right = np.mean(lm[42:48], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    # x = e + (m.y, -m.x), as float64 (an int64 sign vector promotes the float32 difference).
    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1, 1])
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * np.array([-1, 1])
    centre = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])  # TL, BL, BR, TR
    qsize = np.hypot(*x) * 2

    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        # The reference resizes a PIL image (Image.ANTIALIAS, gone in Pillow 10) only to read its size.
        rsize = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
        quad /= shrink
        qsize /= shrink
    else:
        shrink = 1
        rsize = (width, height)

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, rsize[0]),
        min(crop[3] + border, rsize[1]),
    )
    if crop[2] - crop[0] < rsize[0] or crop[3] - crop[1] < rsize[1]:
        quad -= crop[0:2]

    q = (quad + 0.5).flatten()
    lx = max(min(q[0], q[2]), 0)
    ly = max(min(q[1], q[7]), 0)
    rx = min(max(q[4], q[6]), rsize[0])
    ry = min(max(q[3], q[5]), rsize[0])  # sic: the width, as the official align_face
    return FaceBox(rsize=rsize, shrink=shrink, crop=crop, quad=(float(lx), float(ly), float(rx), float(ry)))


def plan_crop(
    mode: str,
    image_size: tuple[int, int],
    landmarks: np.ndarray | None = None,
    size: int = 256,
    *,
    path: str = "<image>",
) -> CropRecord:
    """The crop of ``mode`` for a photo of ``image_size`` (W, H) with stage-A ``landmarks``.

    Follows the mode branches of the official ``CropAndExtract.generate`` (src/utils/preprocess.py).
    Stage-A landmarks are those found on the original photo; they place the crop box.

    Args:
        mode: ``crop`` (default of the reference), ``extcrop``, ``resize``, ``full`` or ``extfull``.
        image_size: (W, H) of the original photo.
        landmarks: (68, 2) stage-A landmarks in original pixels; not needed (ignored) in ``resize`` mode.
        size: S, the side of the source image (256 or 512).
        path: the photo's name, for the error message.

    Raises:
        NoFaceError: the face box lies (almost) entirely outside the image, so nothing can be cropped.
    """
    mode = normalise_mode(mode)
    width, height = int(image_size[0]), int(image_size[1])
    if mode == "resize":
        return CropRecord(
            mode=mode,
            original_size=(width, height),
            rsize=(width, height),
            shrink=1,
            crop_box=None,
            quad=None,
            crop_info_size=(width, height),
            region=(0, 0, width, height),
            size=int(size),
        )
    if landmarks is None:
        raise ValueError(f"mode {mode!r} needs the 68 stage-A landmarks")
    box = face_box(landmarks, (width, height))
    clx, cly, crx, cry = box.crop
    lx, ly, rx, ry = (int(v) for v in box.quad)  # trunc toward zero; lx, ly >= 0
    if mode.startswith("ext"):
        region = (clx, cly, crx, cry)
    else:
        # numpy slicing [ly:ry, lx:rx] of the crop clips silently at the crop's end.
        cw, ch = crx - clx, cry - cly
        x1, x2 = min(lx, cw), min(max(rx, 0), cw)
        y1, y2 = min(ly, ch), min(max(ry, 0), ch)
        region = (clx + x1, cly + y1, clx + max(x1, x2), cly + max(y1, y2))
    if region[2] - region[0] < 2 or region[3] - region[1] < 2:
        raise NoFaceError(path, f"the face box {box.quad} lies outside the {width}×{height} image")
    return CropRecord(
        mode=mode,
        original_size=(width, height),
        rsize=box.rsize,
        shrink=box.shrink,
        crop_box=box.crop,
        quad=box.quad,
        crop_info_size=(rx - lx, ry - ly),
        region=region,
        size=int(size),
    )


def apply_crop(image: np.ndarray, record: CropRecord) -> np.ndarray:
    """The cropped face before the S×S resize, as the official ``Preprocesser.crop`` (src/utils/croper.py).

    Args:
        image: (H, W, 3) uint8 RGB photo of size ``record.original_size``.

    Returns:
        (h, w, 3) uint8: the pixels of ``record.region`` of the image resized to ``record.rsize``
        (OpenCV bilinear, as the reference; skipped when the size is unchanged).
    """
    height, width = image.shape[:2]
    if (width, height) != record.original_size:
        raise ValueError(f"image is {width}×{height}, the crop was planned for {record.original_size}")
    if record.rsize != (width, height):
        image = cv2.resize(image, record.rsize, interpolation=cv2.INTER_LINEAR)
    x1, y1, x2, y2 = record.region
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def source_image(cropped: np.ndarray, size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8, OpenCV bilinear, aspect ratio not preserved, as the official
    ``CropAndExtract.generate``.

    This is the renderer's source image and the input of the stage-B landmarks.
    """
    return cv2.resize(cropped, (int(size), int(size)), interpolation=cv2.INTER_LINEAR)


def crop_source(
    image: np.ndarray,
    mode: str,
    landmarks: np.ndarray | None = None,
    size: int = 256,
    *,
    path: str = "<image>",
) -> tuple[CropRecord, np.ndarray]:
    """Plan and apply the crop, then resize: (record, (size, size, 3) uint8 source image)."""
    height, width = image.shape[:2]
    record = plan_crop(mode, (width, height), landmarks, size, path=path)
    return record, source_image(apply_crop(image, record), size)


def _axes(record: CropRecord) -> tuple[tuple[int, int, int, int], ...]:
    """Per axis (x, then y): original size, resized size, the crop region's start and extent."""
    x1, y1, x2, y2 = record.region
    return (
        (record.original_size[0], record.rsize[0], x1, x2 - x1),
        (record.original_size[1], record.rsize[1], y1, y2 - y1),
    )


def landmarks_to_source(landmarks: np.ndarray, record: CropRecord) -> np.ndarray:
    """Map original-image landmarks into the S×S source image (pixel-centre convention).

    ``x' = ((x + 0.5)·W'/W - 0.5 - x1 + 0.5)·S/w - 0.5`` with ``(W', H') = rsize``, ``x1`` and ``w`` the
    region's left edge and width (same for y). Useful to skip a second detection on the source image and
    for tests; the reference itself re-detects (stage B).

    Args:
        landmarks: (N, 2) (x, y) in original pixels.

    Returns:
        (N, 2) float32 in source-image pixels.
    """
    pts = np.asarray(landmarks, dtype=np.float64)
    out = pts.copy()
    for axis, (orig, rs, start, extent) in enumerate(_axes(record)):
        v = pts[:, axis]
        if rs != orig:
            v = (v + 0.5) * (rs / orig) - 0.5
        out[:, axis] = (v - start + 0.5) * (record.size / extent) - 0.5
    return out.astype(np.float32)


def source_to_original(points: np.ndarray, record: CropRecord) -> np.ndarray:
    """Inverse of :func:`landmarks_to_source`: (N, 2) source-image pixels -> original-image pixels."""
    pts = np.asarray(points, dtype=np.float64)
    out = pts.copy()
    for axis, (orig, rs, start, extent) in enumerate(_axes(record)):
        v = (pts[:, axis] + 0.5) * (extent / record.size) - 0.5 + start
        if rs != orig:
            v = (v + 0.5) * (orig / rs) - 0.5
        out[:, axis] = v
    return out.astype(np.float32)
