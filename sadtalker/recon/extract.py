"""Per-photo 3DMM extraction: stage-B landmarks → 224 alignment → ReconNet → coefficient rows.

The 3DMM part of the official ``CropAndExtract.generate`` (src/utils/preprocess.py: landmarks on the S×S
image, ``align_img``, ``ReconNetWrapper``, the 73-dim ``coeff_3dmm`` row) for one S×S source image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from sadtalker.recon.align import align_face_224
from sadtalker.recon.coefficients import semantic_row
from sadtalker.recon.resnet_recon import ReconNet

log = logging.getLogger(__name__)

#: Smallest face box accepted on the S×S source (stage B); the size policy is applied to the photo.
STAGE_B_MIN_FACE_SIZE = 16


@dataclass(frozen=True, eq=False)
class Recon3DMM:
    """3DMM of one source image.

    Attributes:
        coeff_3dmm: (1, 73) float32 ``[exp, angle, trans, s, t.x, t.y]`` (the reference's ``coeff_3dmm``).
        full_coeff: (1, 257) float32 network output (the reference's ``full_3dmm``).
        trans_params: (5,) float32 ``(W, H, s, t.x, t.y)``.
        aligned_224: (224, 224, 3) uint8 network input image.
        landmarks: (68, 2) float32 stage-B landmarks in the source image (y down).
        landmarks_from: ``given`` (passed in), ``detected`` (found on the source) or ``fallback``
            (nothing found on the source: the ``fallback_landmarks`` were used).
    """

    coeff_3dmm: np.ndarray
    full_coeff: np.ndarray
    trans_params: np.ndarray
    aligned_224: np.ndarray
    landmarks: np.ndarray
    landmarks_from: Literal["given", "detected", "fallback"] = "given"


def image_tensor(aligned: np.ndarray) -> torch.Tensor:
    """(224, 224, 3) uint8 -> (1, 3, 224, 224) float32 ``pixel / 255`` (divided in float64, then cast,
    like the reference)."""
    return (
        torch.from_numpy((aligned.astype(np.float64) / 255.0).astype(np.float32))
        .permute(2, 0, 1)[None]
        .contiguous()
    )


@torch.no_grad()
def run_recon(net: ReconNet, aligned: np.ndarray) -> np.ndarray:
    """ReconNet on one aligned face: (224, 224, 3) uint8 -> (1, 257) float32, on the net's device."""
    param = next(net.parameters())
    x = image_tensor(aligned).to(device=param.device, dtype=param.dtype)
    return net(x).float().cpu().numpy()


def extract_3dmm(
    net: ReconNet,
    source: np.ndarray,
    landmarks: np.ndarray | None = None,
    *,
    landmarker=None,
    fallback_landmarks: np.ndarray | None = None,
    min_face_size: float = STAGE_B_MIN_FACE_SIZE,
    path: str = "<source>",
) -> Recon3DMM:
    """3DMM coefficients of one S×S source image.

    Args:
        net: ReconNet in eval mode (``sadtalker.networks.load_network("face_3drecon", ...)``).
        source: (S, S, 3) uint8 RGB source image (:func:`sadtalker.face.crop.crop_source`).
        landmarks: (68, 2) stage-B landmarks in ``source`` pixels (y down). When None, ``landmarker``
            (a :class:`sadtalker.face.landmarks.FaceLandmarker`) detects them on ``source``, as the
            reference does.
        landmarker: used only when ``landmarks`` is None.
        fallback_landmarks: (68, 2) used when the landmarker finds no face on the source, typically the
            stage-A landmarks mapped into it (:func:`sadtalker.face.crop.landmarks_to_source`). Helps in
            ``resize`` mode, whose aspect-distorted source can hide a small face from the detector. The
            reference has no such fallback (it aborts).
        min_face_size: smallest face box on the source (px); the size policy belongs to stage A, so low.
        path: the photo's name, for a :class:`NoFaceError`.

    Returns:
        :class:`Recon3DMM`.

    Raises:
        NoFaceError: no face on the source image and no fallback (only when detecting).
    """
    origin: Literal["given", "detected", "fallback"] = "given"
    if landmarks is None:
        if landmarker is None:
            raise ValueError("give the stage-B landmarks or a landmarker to detect them")
        from sadtalker.errors import NoFaceError
        from sadtalker.face.landmarks import find_face

        try:
            landmarks = find_face(landmarker, source, path=path, min_face_size=min_face_size).face.landmarks
            origin = "detected"
        except NoFaceError:
            if fallback_landmarks is None:
                raise
            log.warning(
                "%s: no face on the %dx%d source; using the fallback landmarks", path, *source.shape[1::-1]
            )
            landmarks, origin = fallback_landmarks, "fallback"
    lm = np.asarray(landmarks, dtype=np.float32)
    aligned = align_face_224(source, lm)
    full = run_recon(net, aligned.image)
    return Recon3DMM(
        coeff_3dmm=semantic_row(full, aligned.trans_params),
        full_coeff=full,
        trans_params=aligned.trans_params,
        aligned_224=aligned.image,
        landmarks=lm,
        landmarks_from=origin,
    )


@dataclass(frozen=True, eq=False)
class Recon3DMMFrames:
    """3DMM of a frame sequence (a reference video; the official code runs it through ``CropAndExtract``).

    Attributes:
        coeff_3dmm: (N, 73) float32 rows.
        full_coeff: (N, 257) float32 (the reference keeps only the first row: ``full_coeff[:1]``).
        trans_params: (N, 5) float32.
        landmarks: (N, 68, 2) float32 stage-B landmarks (y down).
        reused: indices of frames without a face whose landmarks were taken from the previous frame.
    """

    coeff_3dmm: np.ndarray
    full_coeff: np.ndarray
    trans_params: np.ndarray
    landmarks: np.ndarray
    reused: tuple[int, ...]


def extract_3dmm_frames(
    net: ReconNet,
    sources: Sequence[np.ndarray],
    landmarker,
    *,
    reuse_previous: bool = False,
    batch_size: int = 16,
    min_face_size: float = STAGE_B_MIN_FACE_SIZE,
    path: str = "<video>",
) -> Recon3DMMFrames:
    """3DMM rows of N S×S frames (each frame cropped with the first frame's box, as ``Preprocesser.crop``).

    Args:
        sources: N (S, S, 3) uint8 RGB frames.
        landmarker: detects the stage-B landmarks of every frame.
        reuse_previous: a frame without a face reuses the previous frame's landmarks (what the reference
            intends but never reaches); otherwise it raises.
        batch_size: frames per ReconNet forward.

    Raises:
        NoFaceError: a frame without a face (the first one always; the others unless ``reuse_previous``).
    """
    from sadtalker.errors import NoFaceError
    from sadtalker.face.landmarks import find_face

    if len(sources) == 0:
        raise ValueError(f"{path}: no frames")
    landmarks: list[np.ndarray] = []
    reused: list[int] = []
    aligned_images: list[np.ndarray] = []
    trans: list[np.ndarray] = []
    for index, frame in enumerate(sources):
        try:
            lm = find_face(landmarker, frame, path=f"{path} (frame {index})", min_face_size=min_face_size)
            lm = lm.face.landmarks
        except NoFaceError:
            if not reuse_previous or not landmarks:
                raise
            lm = landmarks[-1]
            reused.append(index)
        aligned = align_face_224(frame, lm)
        landmarks.append(np.asarray(lm, dtype=np.float32))
        aligned_images.append(aligned.image)
        trans.append(aligned.trans_params)

    param = next(net.parameters())
    outputs = []
    with torch.no_grad():
        for start in range(0, len(aligned_images), batch_size):
            batch = torch.cat([image_tensor(a) for a in aligned_images[start : start + batch_size]])
            outputs.append(net(batch.to(device=param.device, dtype=param.dtype)).float().cpu().numpy())
    full = np.concatenate(outputs, axis=0)
    trans_params = np.stack(trans)
    return Recon3DMMFrames(
        coeff_3dmm=semantic_row(full, trans_params),
        full_coeff=full,
        trans_params=trans_params,
        landmarks=np.stack(landmarks),
        reused=tuple(reused),
    )
