"""Face rendering engine (SadTalker §3.3 face render: MappingNet + keypoints + face-vid2vid generator).

:class:`FaceAnimator` holds the three renderer networks and owns every tensor step between the stage
records and the frames: :meth:`~FaceAnimator.frames` takes a clip's :class:`~sadtalker.records.FaceRecord`,
:class:`~sadtalker.records.Coefficients` and options and yields uint8 frames. Inside it,
:meth:`~FaceAnimator.set_source` does the per-clip work once (canonical keypoints, source keypoints, the
generator's source encoding); :meth:`~FaceAnimator.animate` then streams float frames in chunks of
``batch_size``, building each chunk's 27-frame coefficient windows on the fly, so memory does not grow with
the number of frames; :func:`frames_to_uint8` converts each chunk on the device.

Frames equal those of the reference's ``(batch_size, steps)`` layout (``get_facerender_data`` in
src/generate_facerender_batch.py, ``make_animation`` in src/facerender/modules/make_animation.py): every
frame is rendered from the same source independently, and all norms are per-sample or eval-mode
BatchNorm, so the grouping of frames into batches does not change values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from sadtalker.render.generator import OcclusionAwareSPADEGenerator, SourceFeatures, compile_frames
from sadtalker.render.keypoint_detector import KPDetector
from sadtalker.render.keypoint_transform import transform_keypoints
from sadtalker.render.mapping import MappingNet, MappingOutput
from sadtalker.render.windows import (
    WINDOW,
    camera_angle_sequence,
    semantic_windows,
    source_semantics,
    target_coefficients,
)

if TYPE_CHECKING:
    from sadtalker.options import RenderOptions
    from sadtalker.qc.frames import FrameStats
    from sadtalker.records import Coefficients, FaceRecord


def source_image_array(image: np.ndarray) -> np.ndarray:
    """``(S, S, 3)`` uint8 RGB → ``(1, 3, S, S)`` float32 in [0, 1] (scikit-image ``img_as_float32``)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square (S, S, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    return np.multiply(image, 1 / 255, dtype=np.float32).transpose(2, 0, 1)[None].copy()


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` float in [0, 1] (any device) → ``(B, H, W, 3)`` uint8 RGB on the CPU, converted on the
    device before the copy to the host.

    As scikit-image's ``img_as_ubyte`` in the official ``AnimateFromCoeff.generate``
    (src/facerender/animate.py): ``rint(x · 255)`` computed in float32, round half to even. Values outside
    [0, 1] are clipped (scikit-image raises outside [-1, 1]).

    Raises:
        ValueError: non-finite values (a renderer bug must not become black pixels silently;
            :meth:`FaceAnimator.frames` counts such frames before it blanks them).
    """
    scaled = frames.detach().float() * 255
    if not bool(scaled.isfinite().all()):
        raise ValueError("frames contain NaN or infinite values")
    scaled = scaled.round_().clamp_(0, 255).to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy()


class SourceNotSetError(RuntimeError):
    """``animate``/``render`` was called before ``set_source``."""


@dataclass(frozen=True)
class SourceState:
    """Per-clip results of :meth:`FaceAnimator.set_source` (batch 1, on the engine's device).

    ``kp_canonical``, ``kp_source``: ``(1, K, 3)``; ``he_source``: MappingNet output of the source window;
    ``features``: the generator's source encoding; ``image_size``: S; ``coeff_nc``: 70 or 73.
    """

    image_size: int
    coeff_nc: int
    kp_canonical: torch.Tensor
    he_source: MappingOutput
    kp_source: torch.Tensor
    features: SourceFeatures


class FaceAnimator:
    """Stateful renderer: :meth:`frames` renders a whole clip from its records; underneath, ``set_source``
    once per clip, then ``animate`` (a generator of float frame chunks).

    Args:
        kp_detector, generator, mapping: loaded networks (see :func:`sadtalker.networks.load_renderer`),
            all on the same device; they are put in eval mode.
        autocast_dtype: optional ``torch.float16``/``torch.bfloat16`` to run under autocast (default: fp32,
            the reference precision).
        compile: render through ``torch.compile`` (:func:`~sadtalker.render.generator.compile_frames`):
            a one-off compile per process and pass size, then faster frames.
    """

    def __init__(
        self,
        kp_detector: KPDetector,
        generator: OcclusionAwareSPADEGenerator,
        mapping: MappingNet,
        *,
        autocast_dtype: torch.dtype | None = None,
        compile: bool = False,
    ):
        self.kp_detector = kp_detector.eval()
        self.generator = generator.eval()
        self.mapping = mapping.eval()
        self.autocast_dtype = autocast_dtype
        # The compiled pass belongs to this engine, not to the generator: CPU engines of other dtypes share
        # the generator module.
        self.frames_fn = compile_frames(self.generator, self.device) if compile else None
        self._source: SourceState | None = None

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    @property
    def coeff_nc(self) -> int:
        return self.mapping.config.coeff_nc

    @property
    def source(self) -> SourceState:
        """The current source; raises :class:`SourceNotSetError` before :meth:`set_source`."""
        if self._source is None:
            raise SourceNotSetError("no source image: call FaceAnimator.set_source(image, semantics) first")
        return self._source

    def clear_source(self) -> None:
        """Drop the per-clip state (frees the cached source features)."""
        self._source = None

    @contextlib.contextmanager
    def inference_context(self) -> Iterator[None]:
        """No-grad, plus autocast to ``autocast_dtype`` when one was given."""
        device_type = self.device.type
        enabled = self.autocast_dtype is not None
        with torch.no_grad(), torch.autocast(device_type, dtype=self.autocast_dtype, enabled=enabled):
            yield

    def _tensor(self, array: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(array, dtype=torch.float32).to(self.device)

    def set_source(
        self, source_image: np.ndarray | torch.Tensor, source_semantics: np.ndarray | torch.Tensor
    ) -> SourceState:
        """Per-clip work: canonical keypoints, source keypoints and source features, computed once.

        Args:
            source_image: ``(1, 3, S, S)`` float RGB in [0, 1] (:func:`source_image_array`).
            source_semantics: ``(C, 27)`` or ``(1, C, 27)`` source window
                (:func:`~sadtalker.render.windows.source_semantics`), C = the mapping net's ``coeff_nc``.
        """
        image = self._tensor(source_image)
        if image.ndim != 4 or image.shape[:2] != (1, 3) or image.shape[2] != image.shape[3]:
            raise ValueError(f"source_image must be (1, 3, S, S), got {tuple(image.shape)}")
        semantics = self._tensor(source_semantics)
        if semantics.ndim == 2:
            semantics = semantics.unsqueeze(0)
        if semantics.shape != (1, self.coeff_nc, WINDOW):
            raise ValueError(
                f"source_semantics must be ({self.coeff_nc}, {WINDOW}) for this mapping net, got "
                f"{tuple(semantics.shape)}"
            )
        self._source = None
        with self.inference_context():
            kp_canonical = self.kp_detector(image).float()  # (1, 15, 3)
            he_source = MappingOutput(*(t.float() for t in self.mapping(semantics)))
            kp_source = transform_keypoints(kp_canonical, he_source)  # (1, 15, 3)
            features = self.generator.encode_source(image)
        self._source = SourceState(
            image_size=image.shape[-1],
            coeff_nc=self.coeff_nc,
            kp_canonical=kp_canonical,
            he_source=he_source,
            kp_source=kp_source,
            features=features,
        )
        return self._source

    def driving_keypoints(
        self,
        windows: np.ndarray | torch.Tensor,
        yaw: np.ndarray | torch.Tensor | None = None,
        pitch: np.ndarray | torch.Tensor | None = None,
        roll: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[MappingOutput, torch.Tensor]:
        """MappingNet + keypoint transformation for B windows ``(B, C, 27)`` → (he_driving, ``(B, K, 3)``).

        ``yaw``/``pitch``/``roll``: optional ``(B,)`` free-view angles (degrees) replacing the predicted ones.
        """
        return self._driving_keypoints(self.source, windows, yaw, pitch, roll)

    def _driving_keypoints(
        self,
        source: SourceState,
        windows: np.ndarray | torch.Tensor,
        yaw: np.ndarray | torch.Tensor | None = None,
        pitch: np.ndarray | torch.Tensor | None = None,
        roll: np.ndarray | torch.Tensor | None = None,
    ) -> tuple[MappingOutput, torch.Tensor]:
        windows = self._tensor(windows)
        overrides = [None if a is None else self._tensor(a).reshape(-1) for a in (yaw, pitch, roll)]
        with self.inference_context():
            he = MappingOutput(*(t.float() for t in self.mapping(windows)))
            kp_driving = transform_keypoints(source.kp_canonical, he, *overrides)
        return he, kp_driving

    def render(self, kp_driving: torch.Tensor) -> torch.Tensor:
        """Frames for driving keypoints ``(B, K, 3)`` → ``(B, 3, S, S)`` float32 in (0, 1)."""
        return self._render(self.source, kp_driving)

    def _render(self, source: SourceState, kp_driving: torch.Tensor) -> torch.Tensor:
        with self.inference_context():
            frames = self.generator.forward_from_features(
                source.features, source.kp_source, kp_driving, frames_fn=self.frames_fn
            )
        return frames.float()

    def animate(
        self,
        target_coeffs: np.ndarray,
        batch_size: int = 2,
        yaw: np.ndarray | None = None,
        pitch: np.ndarray | None = None,
        roll: np.ndarray | None = None,
    ) -> Iterator[torch.Tensor]:
        """Stream the frames of a clip, ``batch_size`` at a time (the last chunk may be smaller).

        Args:
            target_coeffs: ``(T, C)`` driving coefficients, already prepared by
                :func:`~sadtalker.render.windows.target_coefficients` (expression scale, full, still).
            batch_size: frames rendered per generator call (peak memory ∝ batch_size, not T).
            yaw, pitch, roll: optional ``(T,)`` free-view angles in degrees
                (:func:`~sadtalker.render.windows.camera_angle_sequence`).

        Returns an iterator of ``(B, 3, S, S)`` float32 tensors in (0, 1) on the engine's device, frames in
        order; :func:`frames_to_uint8` converts them. Arguments and the source
        are checked at the call, before the first frame; the iterator keeps rendering from the source that
        was set at the call, even if :meth:`set_source` is called again meanwhile.
        """
        source = self.source  # raises SourceNotSetError now, not at the first next()
        coeffs = np.asarray(target_coeffs, dtype=np.float32)
        if coeffs.ndim != 2 or coeffs.shape[1] != self.coeff_nc or coeffs.shape[0] == 0:
            raise ValueError(f"target_coeffs must be (T >= 1, {self.coeff_nc}), got {coeffs.shape}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        num_frames = coeffs.shape[0]
        angles = {}
        for name, seq in (("yaw", yaw), ("pitch", pitch), ("roll", roll)):
            if seq is not None:
                seq = np.asarray(seq, dtype=np.float32).reshape(-1)
                if seq.shape[0] != num_frames:
                    raise ValueError(f"{name} has {seq.shape[0]} angles for {num_frames} frames")
                angles[name] = seq
        return self._frames(source, coeffs, batch_size, angles)

    def _frames(
        self, source: SourceState, coeffs: np.ndarray, batch_size: int, angles: dict[str, np.ndarray]
    ) -> Iterator[torch.Tensor]:
        for start in range(0, coeffs.shape[0], batch_size):
            frames = np.arange(start, min(start + batch_size, coeffs.shape[0]))
            windows = semantic_windows(coeffs, frames)  # (B, C, 27), built per chunk
            chunk_angles = {name: seq[frames] for name, seq in angles.items()}
            _, kp_driving = self._driving_keypoints(source, windows, **chunk_angles)
            yield self._render(source, kp_driving)

    def frames(
        self, face: FaceRecord, coeffs: Coefficients, options: RenderOptions, stats: FrameStats
    ) -> Iterator[np.ndarray]:
        """The clip's frames, ``options.batch_size`` at a time: ``(B, S, S, 3)`` uint8 RGB (official
        ``get_facerender_data`` and ``make_animation``).

        The renderer's inputs come from the records: the source image and its coefficient row (the source
        semantics); the target coefficients (``options.expression_scale`` and ``still``, and the crop
        parameters in the ``full`` modes, :func:`~sadtalker.render.windows.target_coefficients`); the
        free-view angles (``options.input_yaw`` / ``input_pitch`` / ``input_roll``).

        ``stats``: counts the float frames and those with NaN / Inf values
        (:meth:`~sadtalker.qc.FrameStats.update_float`), which the uint8 conversion would otherwise hide;
        such frames are then written black where non-finite (NaN → 0, ±Inf → clipped), so that the clip
        is complete and its QC fails on the count.

        The records and options are checked at the call (:meth:`animate`'s own checks run at the first
        frame). The source is set at the first frame and cleared when the iterator ends or is closed (close
        it when stopping early).
        """
        source_row = face.coeff_3dmm[0]
        targets = target_coefficients(
            coeffs.coefficients,
            source_row,
            expression_scale=options.expression_scale,
            still=options.still,
            full=face.crop_record().is_full,
        )
        angles = {
            name: camera_angle_sequence(keys, coeffs.num_frames)
            for name, keys in (
                ("yaw", options.input_yaw),
                ("pitch", options.input_pitch),
                ("roll", options.input_roll),
            )
            if keys is not None
        }
        image = source_image_array(face.source_image)
        semantics = source_semantics(source_row, self.coeff_nc)
        return self._clip_frames(image, semantics, targets, options.batch_size, angles, stats)

    def _clip_frames(
        self,
        image: np.ndarray,
        semantics: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        angles: dict[str, np.ndarray],
        stats: FrameStats,
    ) -> Iterator[np.ndarray]:
        self.set_source(image, semantics)
        try:
            for chunk in self.animate(targets, batch_size, **angles):
                nonfinite = stats.nonfinite_frames
                stats.update_float(chunk)
                if stats.nonfinite_frames > nonfinite:
                    chunk = torch.nan_to_num(chunk, nan=0.0, posinf=1.0, neginf=0.0)
                yield frames_to_uint8(chunk)
        finally:
            self.clear_source()
