"""Frame-level checks: non-finite values counted while rendering (:class:`FrameStats`), and on the decoded
file (:class:`FrameChecks`: blank, black, washed-out frames and the longest frozen run, on a subsampled luma
image: these figures describe whole frames and do not need every pixel).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

BLANK_STD = 2.0  # grey levels: a frame this flat carries no picture
BLACK_LEVEL = 20  # luma at or below this is black (video black is 16)
WHITE_LEVEL = 240  # luma at or above this is clipped white
EXTREME_FRACTION = 0.98  # a frame with this share of black (or white) pixels is a black (washed-out) frame
FROZEN_DELTA = 4  # grey levels: a pixel that changed by more than this changed (beyond codec noise)
FROZEN_CHANGED = 0.001  # a frame with fewer than this share of changed pixels repeats the previous one


def luma(frame: np.ndarray, step: int = 2) -> np.ndarray:
    """BT.601 luma of every ``step``-th pixel of an ``(H, W, 3)`` uint8 RGB frame: float32
    ``(H / step, W / step)``."""
    small = frame[::step, ::step].astype(np.float32)
    return small[..., 0] * 0.299 + small[..., 1] * 0.587 + small[..., 2] * 0.114


@dataclass
class FrameStats:
    """Counted while a clip renders: the renderer's float frames before their uint8 conversion, where NaN or
    Inf would be clipped away silently (blank, black and frozen frames are judged on the decoded file, by
    :class:`FrameChecks`).

    Attributes:
        frames: uint8 frames handed to the encoder (:meth:`update`): equal to ``float_frames`` unless frames
            were lost on the way.
        float_frames: float frames seen by :meth:`update_float`.
        nonfinite_frames: float frames with at least one NaN or Inf value.
    """

    frames: int = 0
    float_frames: int = 0
    nonfinite_frames: int = 0

    def update(self, frames: np.ndarray) -> None:
        """Count ``(N, H, W, 3)`` (or one ``(H, W, 3)``) uint8 frames written."""
        self.frames += 1 if frames.ndim == 3 else len(frames)

    def update_float(self, chunk) -> None:
        """Count non-finite frames in a float chunk ``(N, ...)``: a numpy array or a torch tensor (any
        device; only one boolean per frame comes back to the host)."""
        if isinstance(chunk, np.ndarray):
            bad = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
            count = int(bad.sum())
        else:  # torch.Tensor: no torch import here (sadtalker.qc stays importable without it)
            count = int((~chunk.detach().isfinite().flatten(1).all(dim=1)).sum().item())
        self.float_frames += len(chunk)
        self.nonfinite_frames += count

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FrameStats:
        """The counters back from :meth:`to_dict`."""
        return cls(*(int(data.get(k, 0)) for k in ("frames", "float_frames", "nonfinite_frames")))


@dataclass
class FrameChecks:
    """Blank / black / washed-out frames and the longest run of identical frames, over decoded frames.

    A frame *repeats* the previous one when fewer than :data:`FROZEN_CHANGED` of its (subsampled) pixels
    changed by more than :data:`FROZEN_DELTA` grey levels: H.264 re-encodes a repeated picture as skip
    blocks, so a frozen stretch decodes to (nearly) identical frames, while a talking face changes hundreds
    of pixels around the mouth and eyes from one frame to the next.
    """

    frames: int = 0
    blank: int = 0
    black: int = 0
    washed_out: int = 0
    longest_run: int = 0
    _run: int = 0
    _previous: np.ndarray | None = field(default=None, repr=False)

    def update(self, frame: np.ndarray) -> None:
        y = luma(frame)
        self.frames += 1
        if float(y.std()) < BLANK_STD:
            self.blank += 1
        if float((y <= BLACK_LEVEL).mean()) >= EXTREME_FRACTION:
            self.black += 1
        if float((y >= WHITE_LEVEL).mean()) >= EXTREME_FRACTION:
            self.washed_out += 1
        if self._previous is not None and y.shape == self._previous.shape:
            changed = float((np.abs(y - self._previous) > FROZEN_DELTA).mean())
            self._run = self._run + 1 if changed < FROZEN_CHANGED else 1
        else:
            self._run = 1
        self.longest_run = max(self.longest_run, self._run)
        self._previous = y

    def fraction(self, count: int) -> float:
        return count / self.frames if self.frames else 0.0
