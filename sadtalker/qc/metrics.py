"""QC metrics: cheap statistics gathered while frames stream past, and checks on the finished file.

A clip passes when the file has the expected frame count at 25 fps, an audio track, a duration within one
frame of the audio, and no blank or frozen output (the usual symptoms of a broken render).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FRAME_SECONDS = 1 / 25
BLANK_STD = 2.0  # grey levels: a frame this flat carries no picture
FROZEN_MOTION = 0.05  # mean abs difference between consecutive frames, grey levels


@dataclass
class FrameStats:
    """Running statistics over uint8 RGB frames ``(H, W, 3)``, updated one chunk at a time."""

    frames: int = 0
    blank_frames: int = 0
    brightness_sum: float = 0.0
    motion_sum: float = 0.0
    _previous: np.ndarray | None = field(default=None, repr=False)

    def update(self, frames: np.ndarray) -> None:
        """Add ``(N, H, W, 3)`` (or one ``(H, W, 3)``) uint8 frames."""
        frames = frames[None] if frames.ndim == 3 else frames
        for frame in frames:
            small = frame[::4, ::4].astype(np.float32)  # 1/16 of the pixels is plenty for these figures
            self.frames += 1
            self.brightness_sum += float(small.mean())
            if float(small.std()) < BLANK_STD:
                self.blank_frames += 1
            if self._previous is not None:
                self.motion_sum += float(np.abs(small - self._previous).mean())
            self._previous = small

    @property
    def mean_brightness(self) -> float:
        return self.brightness_sum / max(self.frames, 1)

    @property
    def mean_motion(self) -> float:
        """Mean abs difference between consecutive frames (grey levels); ~0 means a frozen video."""
        return self.motion_sum / max(self.frames - 1, 1)


@dataclass(frozen=True)
class QCReport:
    """One clip's QC record (JSON-serialisable through :meth:`to_dict`)."""

    passed: bool
    problems: tuple[str, ...]
    expected_frames: int
    frames: int | None
    fps: float | None
    duration: float | None
    audio_duration: float | None
    width: int | None
    height: int | None
    has_audio: bool
    mean_brightness: float | None
    mean_motion: float | None
    blank_frames: int | None
    synthetic_weights: bool

    def to_dict(self) -> dict:
        data = asdict(self)
        data["problems"] = list(self.problems)
        return data


def check_video(
    path: str | Path,
    expected_frames: int,
    audio_seconds: float,
    stats: FrameStats | None = None,
    synthetic_weights: bool = False,
) -> QCReport:
    """Probe the written file and compare it with what the clip should be.

    Args:
        path: the local mp4.
        expected_frames: T, frames of the clip.
        audio_seconds: duration of the driving audio (the video keeps ``T * 40 ms`` of it).
        stats: frame statistics gathered while rendering, if any.
    """
    from sadtalker.video.ffmpeg import probe

    info = probe(path)
    problems: list[str] = []
    if info.frames != expected_frames:
        problems.append(f"{info.frames} frames, expected {expected_frames}")
    if info.fps is None or abs(info.fps - 25) > 1e-3:
        problems.append(f"fps {info.fps}, expected 25")
    if not info.has_audio:
        problems.append("no audio stream")
    target = min(audio_seconds, expected_frames * FRAME_SECONDS)
    if info.duration is None or abs(info.duration - target) > FRAME_SECONDS + 1e-3:
        problems.append(f"duration {info.duration} s is over one frame off the audio's {target:.3f} s")
    if stats is not None and stats.frames:
        if stats.blank_frames:
            problems.append(f"{stats.blank_frames} blank frames")
        if stats.frames > 1 and stats.mean_motion < FROZEN_MOTION:
            problems.append(f"frozen video (mean motion {stats.mean_motion:.3f})")
    return QCReport(
        passed=not problems,
        problems=tuple(problems),
        expected_frames=expected_frames,
        frames=info.frames,
        fps=info.fps,
        duration=info.duration,
        audio_duration=info.audio_duration,
        width=info.width,
        height=info.height,
        has_audio=info.has_audio,
        mean_brightness=stats.mean_brightness if stats else None,
        mean_motion=stats.mean_motion if stats else None,
        blank_frames=stats.blank_frames if stats else None,
        synthetic_weights=synthetic_weights,
    )
