"""Reference clips for blinks and head pose (``ref_eyeblink`` / ``ref_pose``): coefficient files or videos.

A reference is either a coefficient file (``.npz`` with ``coeff_3dmm`` / ``coefficients``, or ``.npy``) or a
video, **decided by content** (zip / NumPy magic bytes, the container's magic bytes, else an ffmpeg probe),
never by its name. A video is reconstructed as the official inference.py does (``CropAndExtract.generate``):

* crop box from the first frame with a face (stage A, the row's ``preprocess`` mode), the same box for
  every frame; each frame resized to **256 × 256 whatever the row's size** (the official code passes no
  size for reference videos, so its default 256 applies; reproduced);
* per frame: stage-B landmarks on the 256 frame -> 224 alignment -> ReconNet (the row's 3DMM regressor),
  in batches of :data:`RECON_BATCH` frames, streamed (one decoded frame plus one batch in memory);
* frames where no face is found are **filled from their neighbours** (linear interpolation of the
  coefficients between the nearest frames with a face; the nearest one at either end); their indices are
  recorded (:attr:`ReferenceCoefficients.filled`). A video without any usable face raises ``NoFaceError``;
  one that cannot be decoded ``ReferenceVideoError``.

How the rows are used (``sadtalker.coeffs.generate``): the blink reference replaces the blink curve (all
zeros) and the expression reference (as ``get_data`` in src/generate_batch.py); the pose reference adds its
motion relative to its first frame on top of the predicted, smoothed pose, which it does not replace (as
``Audio2Coeff.using_refpose`` in src/test_audio2coeff.py); both are tiled cyclically or truncated to the
audio's length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from sadtalker.errors import InputError, NoFaceError, ReferenceVideoError
from sadtalker.records import load_npz, save_npz

log = logging.getLogger(__name__)

#: Reference videos are cropped to 256 whatever the row's size (the official inference.py passes no size).
REFERENCE_SIZE = 256
#: Frames per ReconNet forward.
RECON_BATCH = 16
#: Longest reference video accepted, in frames (10 minutes at 25 fps); longer clips are cut with a warning.
MAX_REFERENCE_FRAMES = 15_000

ReferenceKind = Literal["npz", "npy", "video"]


def reference_kind(path: str | Path) -> ReferenceKind:
    """``npz``, ``npy`` or ``video`` by the file's content (not its name).

    Raises:
        InputError: missing or empty file, or neither coefficients nor a video.
    """
    from sadtalker.face.image import sniff_media

    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "reference file not found")
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        raise InputError(str(path), "empty reference file (0 bytes)")
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "npz"
    kind = sniff_media(head)
    if kind is not None and kind[0] == "video":
        return "video"
    if kind is None:  # an unlisted container: ask ffmpeg whether it holds a video stream
        from sadtalker.video.ffmpeg import probe

        try:
            if probe(path).has_video:
                return "video"
        except InputError:
            pass
    what = f"{kind[0]} ({kind[1]})" if kind else "unrecognised content"
    raise InputError(
        str(path), f"not a reference: {what}; give a video or coefficients (.npz with coeff_3dmm, or .npy)"
    )


def is_reference_video(path: str | Path) -> bool:
    """Whether the reference at ``path`` is a video (by content; errors as :func:`reference_kind`)."""
    return reference_kind(path) == "video"


@dataclass(frozen=True, eq=False)
class ReferenceCoefficients:
    """The per-frame 3DMM of a reference video.

    Attributes:
        coeff_3dmm: ``(N, 73)`` float32, one row per decoded frame (filled rows included).
        filled: indices of the frames without a face, filled from their neighbours.
        backend: the landmark backend that found the faces.
        size: the side the frames were cropped to (always :data:`REFERENCE_SIZE`).
    """

    coeff_3dmm: np.ndarray
    filled: tuple[int, ...]
    backend: str
    size: int = REFERENCE_SIZE

    @property
    def num_frames(self) -> int:
        return int(len(self.coeff_3dmm))

    def save(self, path: str | Path) -> None:
        """An ``.npz`` with ``coeff_3dmm`` (so it is also a valid coefficient reference) and ``meta``."""
        meta = {"filled": list(self.filled), "backend": self.backend, "size": self.size}
        save_npz(path, {"coeff_3dmm": np.asarray(self.coeff_3dmm, np.float32)}, meta)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceCoefficients:
        arrays, meta = load_npz(path)
        filled = tuple(int(i) for i in meta["filled"])
        return cls(arrays["coeff_3dmm"], filled, str(meta["backend"]), int(meta["size"]))


def fill_missing(rows: list[np.ndarray | None]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Fill the ``None`` rows from their neighbours: linear interpolation between the nearest rows on
    either side, the nearest row at either end. Returns ``(N, D)`` and the filled indices.

    Raises:
        ValueError: every row is missing.
    """
    known = [i for i, row in enumerate(rows) if row is not None]
    if not known:
        raise ValueError("no row to fill from")
    filled = tuple(i for i, row in enumerate(rows) if row is None)
    out = np.empty((len(rows), len(rows[known[0]])), dtype=np.float32)  # type: ignore[arg-type]
    for i in known:
        out[i] = rows[i]
    for i in filled:
        before = max((k for k in known if k < i), default=None)
        after = min((k for k in known if k > i), default=None)
        if before is None or after is None:
            out[i] = out[after if before is None else before]  # type: ignore[index]
        else:
            t = (i - before) / (after - before)
            out[i] = (1 - t) * out[before] + t * out[after]
    return out, filled


def _probe_video(path: Path) -> tuple[int, int]:
    from sadtalker.video.ffmpeg import probe

    try:
        info = probe(path)
    except InputError as exc:
        raise ReferenceVideoError(str(path), f"cannot read the reference video ({exc.problem})") from exc
    if not info.has_video or not info.width or not info.height:
        raise ReferenceVideoError(str(path), "the reference has no video stream")
    return int(info.width), int(info.height)


def video_reference_coefficients(
    path: str | Path,
    preprocess: str,
    models,
    *,
    size: int = 256,
    batch_size: int = RECON_BATCH,
    max_frames: int = MAX_REFERENCE_FRAMES,
) -> ReferenceCoefficients:
    """Per-frame 3DMM of the reference video at ``path`` (see the module's docstring).

    Args:
        preprocess: the row's crop mode (the reference crops its reference videos with it too).
        models: :class:`sadtalker.loader.Models`: its landmarker and the 3DMM regressor of ``size`` (the
            row's checkpoint; the frames themselves are always cropped to :data:`REFERENCE_SIZE`).

    Raises:
        ReferenceVideoError: the video cannot be decoded (corrupt, truncated, no frame).
        NoFaceError: no frame with a usable face.
    """
    import torch

    from sadtalker.face.crop import apply_crop, crop_source, plan_crop, source_image
    from sadtalker.face.landmarks import find_face
    from sadtalker.qc.decode import FrameReader
    from sadtalker.recon.align import align_face_224
    from sadtalker.recon.coefficients import semantic_row
    from sadtalker.recon.extract import STAGE_B_MIN_FACE_SIZE, image_tensor

    path = Path(path)
    name = str(path)
    width, height = _probe_video(path)
    landmarker = models.landmarker()
    net = models.recon_network(size)
    param = next(net.parameters())
    rows: list[np.ndarray | None] = []
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []  # (frame index, aligned 224 image, trans params)
    record = None

    def flush() -> None:
        if not pending:
            return
        batch = torch.cat([image_tensor(aligned) for _, aligned, _ in pending])
        with torch.no_grad():
            full = net(batch.to(device=param.device, dtype=param.dtype)).float().cpu().numpy()
        semantic = semantic_row(full, np.stack([trans for _, _, trans in pending]))
        for (index, _, _), row in zip(pending, semantic, strict=True):
            rows[index] = np.asarray(row, np.float32)
        pending.clear()

    reader = FrameReader(path, width, height)
    frames = iter(reader)
    try:
        for index, frame in enumerate(frames):
            if index >= max_frames:
                log.warning("%s: reference video cut to its first %d frames", name, max_frames)
                break
            rows.append(None)
            label = f"{name} (frame {index})"
            if record is None:  # stage A: the crop box of the first frame with a face, kept for all frames
                try:
                    if preprocess == "resize":
                        record = plan_crop("resize", (width, height), None, REFERENCE_SIZE, path=label)
                    else:
                        stage_a = find_face(landmarker, frame, path=label).face.landmarks
                        record, _ = crop_source(frame, preprocess, stage_a, REFERENCE_SIZE, path=label)
                except NoFaceError:
                    continue
            source = source_image(apply_crop(frame, record), REFERENCE_SIZE)
            try:
                stage_b = find_face(landmarker, source, path=label, min_face_size=STAGE_B_MIN_FACE_SIZE)
            except NoFaceError:
                continue
            aligned = align_face_224(source, np.asarray(stage_b.face.landmarks, np.float32))
            pending.append((index, aligned.image, aligned.trans_params))
            if len(pending) >= batch_size:
                flush()
        flush()
    finally:
        frames.close()  # type: ignore[attr-defined]
    if not rows:
        detail = f"; ffmpeg: {reader.errors[0]}" if reader.errors else ""
        raise ReferenceVideoError(name, f"no decodable frame in the reference video{detail}")
    if reader.errors:
        log.warning("%s: reference video decoded with errors (%s)", name, reader.errors[0])
    try:
        coeff, filled = fill_missing(rows)
    except ValueError:
        count = len(rows)
        raise NoFaceError(
            name, f"no usable face in any of the {count} frames of the reference video ({landmarker.name})"
        ) from None
    if filled:
        log.warning(
            "%s: no face in %d of %d reference frames; filled from their neighbours",
            name,
            len(filled),
            len(rows),
        )
    return ReferenceCoefficients(coeff, filled, str(landmarker.name), REFERENCE_SIZE)


def load_coefficient_file(path: str | Path, kind: ReferenceKind | None = None) -> np.ndarray:
    """``(N, >=70)`` float32 rows of a coefficient file (``.npz`` with ``coeff_3dmm`` or ``coefficients``,
    or ``.npy``), told apart by content."""
    kind = kind or reference_kind(path)
    try:
        if kind == "npy":
            array = np.load(path, allow_pickle=False)
        else:
            with np.load(path, allow_pickle=False) as data:
                key = "coeff_3dmm" if "coeff_3dmm" in data.files else "coefficients"
                array = data[key]
    except Exception as exc:
        raise InputError(str(path), f"cannot read reference coefficients ({exc})") from exc
    if array.ndim == 0:
        raise InputError(str(path), "reference coefficients must be (N, >=70), got a scalar")
    array = np.asarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
    if array.shape[-1] < 70 or len(array) == 0:
        raise InputError(str(path), f"reference coefficients must be (N, >=70), got {array.shape}")
    return array


def reference_coefficients(path: str | Path, preprocess: str, models, size: int = 256) -> np.ndarray:
    """``(N, >=70)`` rows of the reference at ``path``: read from a coefficient file, or reconstructed from
    a video (:func:`video_reference_coefficients`)."""
    kind = reference_kind(path)
    if kind == "video":
        return video_reference_coefficients(path, preprocess, models, size=size).coeff_3dmm
    return load_coefficient_file(path, kind)
