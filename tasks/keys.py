"""Cache keys of the stage artefacts: SHA-256 of a canonical JSON of everything the artefact depends on.

A key changes exactly when its artefact could change: the input bytes, the weights in use (the landmark
backend and its weights included) and the options that reach that stage. Keys never depend on file names,
paths, the device (CPU and GPU workers share one cache) or ``batch_size`` (frame chunking only).
``KEY_VERSION`` is bumped when a stage's output format or semantics change, which invalidates every cached
artefact at once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from sadtalker.options import RenderOptions

__all__ = [
    "KEY_VERSION",
    "coeffs_key",
    "enhancer_fingerprint",
    "face_key",
    "reference_key",
    "render_key",
    "weights_fingerprint",
]

KEY_VERSION = 1


class _WeightSet(Protocol):  # sadtalker.loader.WeightSet
    sha256: Mapping[str, str]
    synthetic: bool


class _Models(Protocol):  # sadtalker.loader.Models
    def weights(self, size: int, preprocess: str) -> _WeightSet: ...


def _digest(stage: str, parts: Mapping[str, Any]) -> str:
    canonical = json.dumps({"stage": stage, "v": KEY_VERSION, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def weights_fingerprint(models: _Models, options: RenderOptions) -> dict[str, Any]:
    """The weights part of every key: ``{checkpoint file name: SHA-256}`` of the files the row's render
    configuration uses (``models.weights(size, preprocess)``: resolved, and hashed, once per process), and
    whether they are synthetic (synthetic weights have hashes too, but never share a cache entry with
    official ones)."""
    weights = models.weights(options.size, options.preprocess)
    return {"sha256": dict(sorted(weights.sha256.items())), "synthetic": bool(weights.synthetic)}


def _angles(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def face_key(
    image_sha256: str, options: RenderOptions, weights: Mapping[str, Any], landmarks: Mapping[str, str]
) -> str:
    """Key of ``<cache>/face/<key>.npz`` (photo -> crop + 3DMM, ``extract_face``).

    Depends on: the photo's bytes (``image_sha256``), ``size`` (crop size and the size's checkpoint of the
    3DMM regressor), ``preprocess`` (the crop mode), the weights (:func:`weights_fingerprint`) and the
    landmark backend that finds the face and its landmarks (``landmarks``: ``Models.landmarker_identity()``,
    ``{"backend": "face-alignment" | "dlib", "weights": SHA-256 over its files}``), so a worker that fell
    back to dlib neither reuses nor overwrites faces face-alignment found. Not on: the audio, the motion
    and render options, the seed, ``dtype`` (the regressor runs in float32), the device, ``batch_size``.
    """
    return _digest(
        "face",
        {
            "image": image_sha256,
            "size": options.size,
            "preprocess": options.preprocess,
            "weights": weights,
            "landmarks": {"backend": str(landmarks["backend"]), "weights": str(landmarks["weights"])},
        },
    )


def reference_key(
    video_sha256: str, options: RenderOptions, weights: Mapping[str, Any], landmarks: Mapping[str, str]
) -> str:
    """Key of ``<cache>/refs/<key>.npz`` (a reference video -> per-frame 3DMM,
    ``sadtalker.coeffs.reference.video_reference_coefficients``).

    Depends on: the video's bytes (``video_sha256``), ``preprocess`` (the crop mode its frames are cut
    with), the weights of the row's size (its 3DMM regressor: :func:`weights_fingerprint`) and the landmark
    backend (``Models.landmarker_identity()``), as :func:`face_key`. Not on ``size`` beyond the weights
    (reference frames are always cropped to 256: the official code passes them no size), nor on the audio,
    the seed or which reference (blink or pose) it is: a video used by many rows, in either role, is
    processed once.
    """
    return _digest(
        "reference",
        {
            "video": video_sha256,
            "preprocess": options.preprocess,
            "frame_size": 256,
            "weights": weights,
            "landmarks": {"backend": str(landmarks["backend"]), "weights": str(landmarks["weights"])},
        },
    )


def coeffs_key(
    face: str,
    audio_sha256: str,
    options: RenderOptions,
    refs_sha256: Mapping[str, str | None],
    weights: Mapping[str, Any],
) -> str:
    """Key of ``<cache>/coeffs/<key>.npz`` (speech + face -> (T, 70) coefficients, ``audio_to_coefficients``).

    Depends on: the face key (photo, size, preprocess, weights, landmark backend), the audio's bytes,
    ``pose_style``, ``seed`` (blink and pose noise), the bytes of ``ref_eyeblink`` / ``ref_pose``
    (``refs_sha256``: a coefficient file's SHA-256, a video's ``video:<reference_key>``, which depends on its
    SHA-256, ``preprocess``, the weights and the landmark backend; None when unset) and the weights.
    Not on: ``still``, ``expression_scale`` and the
    free-view angles (applied when rendering), ``dtype`` (ExpNet and PoseVAE run in float32), file names,
    the device, ``batch_size``.
    """
    return _digest(
        "coeffs",
        {
            "face": face,
            "audio": audio_sha256,
            "pose_style": options.pose_style,
            "seed": options.seed,
            "refs": dict(sorted(refs_sha256.items())),
            "weights": weights,
        },
    )


def enhancer_fingerprint(models: Any, options: RenderOptions) -> dict[str, Any] | None:
    """The enhancer part of the render key: None for ``enhancer: none``, else ``{"name", "sha256",
    "synthetic"}`` of the file it loads (``Models.enhancer_weights``: resolved, and hashed, once per process).

    Raises:
        WeightsError: the enhancer's official file is missing (renders on official weights need it).
    """
    if options.enhancer == "none":
        return None
    return models.enhancer_weights(options.enhancer, options.size, options.preprocess).fingerprint()


def render_key(
    face: str,
    coeffs: str,
    image_sha256: str,
    options: RenderOptions,
    weights: Mapping[str, Any],
    enhancer: Mapping[str, Any] | None = None,
) -> str:
    """Key of a row's video (stored in ``items/<id>/render.json`` beside ``video.mp4``).

    Depends on: the face and coefficient keys (photo, audio, size, preprocess, pose_style, seed, references,
    weights, landmark backend), the photo's bytes again (paste-back in the ``full`` modes), ``still``,
    ``expression_scale``, the free-view angles (``input_yaw`` / ``pitch`` / ``roll``), ``dtype`` (the
    renderer's precision), the weights and, unless it is ``none``, the face enhancer and its file
    (``enhancer``: :func:`enhancer_fingerprint`; keys of ``enhancer: none`` are what they were before the
    option existed). Not on: the device or ``batch_size`` (frame chunking only).
    """
    parts: dict[str, Any] = {
        "face": face,
        "coeffs": coeffs,
        "image": image_sha256,
        "size": options.size,
        "preprocess": options.preprocess,
        "still": options.still,
        "expression_scale": float(options.expression_scale),
        "yaw": _angles(options.input_yaw),
        "pitch": _angles(options.input_pitch),
        "roll": _angles(options.input_roll),
        "dtype": options.dtype,
        "weights": weights,
    }
    if options.enhancer != "none":
        parts["enhancer"] = dict(enhancer) if enhancer is not None else {"name": options.enhancer}
    return _digest("render", parts)
