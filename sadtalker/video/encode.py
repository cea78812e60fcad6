"""Streaming H.264 writer: frames go into ffmpeg as they are rendered, the file appears only when complete.

The official code keeps every frame in memory, writes them with ``imageio.mimsave(path, frames, fps=25)``,
resamples the audio to 16 kHz and cuts it to the frames with pydub, and muxes with
``save_video_with_watermark`` (``ffmpeg -i video -i audio -vcodec copy``, to a temporary in the working
directory): ``AnimateFromCoeff.generate`` in src/facerender/animate.py, src/utils/videoio.py. Here frames
are streamed into ffmpeg, with the same settings:

* video: raw ``rgb24`` frames on ffmpeg's stdin → libx264, ``yuv420p``, 25 fps, ``-crf 25`` (imageio's
  quality 5), preset ``medium`` (x264's default, which imageio used);
* audio: the original audio file, cut to ``T·40 ms`` (``T / fps`` seconds, T = frames written),
  resampled to 16 kHz with its channel count kept, encoded as AAC. When ``num_frames`` is known up front (the
  pipeline knows T from the audio stage) audio and video are encoded by one ffmpeg process; otherwise the
  silent video is written first and the audio muxed by a second ffmpeg call with ``-c:v copy``;
* odd sizes: yuv420p needs even width and height. ``size_policy="pad"`` (default) repeats the last column /
  row (at most one pixel each, no resampling, so the face keeps its geometry; the file is then e.g. 256×260
  for a 256×259 frame). ``"macro16"`` reproduces the official outputs (imageio's ``macro_block_size=16``):
  ffmpeg's bicubic scaler stretches the frame up to the next multiples of 16 (256×259 → 256×272), for
  frame-size parity with them.

Atomicity: ffmpeg writes ``.<stem>.<token>.sadtmp<suffix>`` in the destination folder (never in the working
directory); only a complete, successful file is flushed and renamed onto the final name
(``sadtalker.atomic.publish``, same filesystem). An exception inside the ``with`` block kills ffmpeg and
deletes the temporaries. If the whole Python process is killed, ffmpeg sees EOF on its stdin and a
temporary may remain, never the final name: :func:`remove_stale_temps` sweeps them.

Time limit: ffmpeg leads a process group of its own and may run for ``timeout`` seconds, or until a few
seconds past the running stage's deadline (``sadtalker.timeouts``; the renderer normally stops itself at
that deadline first); past it a watchdog kills the group (a write blocked on a stuck encoder returns) and
the writer raises ``StageTimeout`` (``FFmpegError`` for its own ``timeout``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import subprocess
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

import ffmpeg as ffmpeg_python  # ffmpeg-python builds the commands; the processes are managed here
import numpy as np

from sadtalker.atomic import publish
from sadtalker.errors import AudioError, SadTalkerError
from sadtalker.timeouts import Deadline, effective_limit
from sadtalker.video.ffmpeg import (
    FFmpegError,
    Watchdog,
    ffmpeg_command,
    kill_process_group,
    popen,
    run_ffmpeg,
    timeout_error,
)

log = logging.getLogger(__name__)

SizePolicy = Literal["pad", "macro16"]
_TMP_MARK = ".sadtmp"
_DEADLINE_GRACE_S = 5.0  # how long past the stage's deadline a stuck encoder is given before it is killed


def _temp_name(final: Path, kind: str = "") -> Path:
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:12]}{kind}{_TMP_MARK}{final.suffix}")


def remove_stale_temps(folder: str | Path, older_than_s: float = 3600.0) -> list[Path]:
    """Delete writer temporaries (``.*.sadtmp.*``) older than ``older_than_s`` left by killed processes.

    Returns the paths removed. Safe to call while other writers run, given a threshold longer than a clip's
    encoding time.
    """
    removed: list[Path] = []
    now = time.time()
    for tmp in Path(folder).glob(f".*{_TMP_MARK}.*"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > older_than_s:
                tmp.unlink()
                removed.append(tmp)
    return removed


def _even_pad(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) → (H + H%2, W + W%2, 3) by repeating the last row / column."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class _StderrTail:
    """Drains a pipe in a thread (so ffmpeg never blocks on a full stderr) and keeps its last lines."""

    def __init__(self, stream: IO[bytes]):
        self._lines: collections.deque[str] = collections.deque(maxlen=200)
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True, name="ffmpeg-stderr")
        self._thread.start()

    def _run(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(ValueError, OSError):
            for raw in iter(stream.readline, b""):
                self._lines.append(raw.decode("utf-8", "replace").rstrip())

    def text(self, join_timeout: float = 5.0) -> str:
        self._thread.join(join_timeout)
        return "\n".join(self._lines)


class VideoWriter:
    """Context manager that encodes uint8 RGB frames to an H.264/AAC MP4 as they arrive.

    Usage::

        with VideoWriter(out_path, audio=wav_path, num_frames=T) as writer:
            for chunk in frames:            # (N, H, W, 3) or (H, W, 3) uint8 RGB
                writer.write(chunk)
        # here out_path exists (T frames at 25 fps, audio cut to T·40 ms); after an exception it does not

    The frame size is taken from the first frame; later frames must match it. Not thread-safe.

    Args:
        path: final file (``.mp4`` / ``.mov`` / ``.mkv``); its folder is created; an existing file is
            replaced (only on success).
        fps: frame rate (official: 25).
        audio: an audio (or video-with-audio) file whose first audio stream is muxed, or None for silent.
        num_frames: expected T. With audio it lets one ffmpeg process encode both; in every case writing a
            different number of frames is an error (the audio would not match).
        crf, preset: libx264 quality and speed (reference: crf 25, preset medium).
        size_policy: odd-size handling, see the module docstring.
        audio_rate: output sample rate (reference: 16000); None keeps the input's.
        threads: ffmpeg encoder threads (None: ffmpeg's default, all cores).
        timeout: seconds ffmpeg may run from the first frame to the finished file (None: no limit of its
            own); the running stage's deadline applies too, whichever comes first.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float = 25.0,
        audio: str | Path | None = None,
        num_frames: int | None = None,
        crf: int = 25,
        preset: str = "medium",
        size_policy: SizePolicy = "pad",
        audio_rate: int | None = 16000,
        threads: int | None = None,
        timeout: float | None = None,
    ):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if num_frames is not None and num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if size_policy not in ("pad", "macro16"):
            raise ValueError(f"size_policy must be 'pad' or 'macro16', got {size_policy!r}")
        self.path = Path(path)
        self.fps = float(fps)
        self.audio = Path(audio) if audio is not None else None
        if self.audio is not None and not self.audio.is_file():
            raise AudioError(str(self.audio), "audio file not found")
        self.num_frames = num_frames
        self.crf = int(crf)
        self.preset = preset
        self.size_policy = size_policy
        self.audio_rate = audio_rate
        self.threads = threads
        self.timeout = timeout
        self.frames_written = 0
        #: (width, height) of the frames given, and of the encoded file; known after the first frame.
        self.frame_size: tuple[int, int] | None = None
        self.output_size: tuple[int, int] | None = None
        self._proc: subprocess.Popen | None = None
        self._stderr: _StderrTail | None = None
        self._watchdog: Watchdog | None = None
        self._limit: float | None = None
        self._deadline: Deadline | None = None
        self._cmd: list[str] = []
        self._temps: list[Path] = []
        self._video_tmp: Path | None = None
        self._closed = False
        self._done = False  # True once the final file is in place

    # -- context manager ---------------------------------------------------------------------------------

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:  # a writer dropped without close(): leave nothing behind
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.abort()

    # -- writing -------------------------------------------------------------------------------------------

    @property
    def _one_process_audio(self) -> bool:
        return self.audio is not None and self.num_frames is not None

    def _start(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.frame_size = (width, height)
        if self.size_policy == "pad":
            in_w, in_h = width + width % 2, height + height % 2
            out_w, out_h = in_w, in_h
        else:
            in_w, in_h = width, height
            out_w, out_h = -(-width // 16) * 16, -(-height // 16) * 16
        self.output_size = (out_w, out_h)
        self._video_tmp = _temp_name(
            self.path, "" if self._one_process_audio or self.audio is None else ".silent"
        )
        self._temps.append(self._video_tmp)

        video = ffmpeg_python.input(
            "pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{in_w}x{in_h}", framerate=f"{self.fps:g}"
        ).video
        if (out_w, out_h) != (in_w, in_h):
            video = video.filter("scale", out_w, out_h)  # imageio's macro-block stretch (bicubic)
        streams = [video]
        out_kwargs: dict[str, object] = {
            "vcodec": "libx264",
            "pix_fmt": "yuv420p",
            "crf": self.crf,
            "preset": self.preset,
            **self._container_kwargs(),
        }
        if self.threads is not None:
            out_kwargs["threads"] = self.threads
        if self._one_process_audio:
            assert self.num_frames is not None
            streams.append(self._audio_input(self.num_frames))
            out_kwargs.update(self._audio_kwargs())
        self._cmd = ffmpeg_command(ffmpeg_python.output(*streams, str(self._video_tmp), **out_kwargs))
        log.debug("ffmpeg: %s", " ".join(self._cmd))
        self._limit, self._deadline = effective_limit(self.timeout)
        if self._deadline is not None:
            self._deadline.check(f"encoding {self.path.name}: not started")
        try:
            self._proc = popen(
                self._cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise FFmpegError(f"cannot start ffmpeg ({exc})", None, cmd=self._cmd) from exc
        # Past the stage's deadline the renderer stops itself at its next batch (and abort() kills ffmpeg);
        # the watchdog, a grace later, is for a writer blocked on a stuck encoder.
        grace = _DEADLINE_GRACE_S if self._deadline is not None and self._limit is not None else 0.0
        self._watchdog = Watchdog(self._proc, None if self._limit is None else self._limit + grace)
        assert self._proc.stderr is not None
        self._stderr = _StderrTail(self._proc.stderr)

    @property
    def _timed_out(self) -> bool:
        return self._watchdog is not None and self._watchdog.fired

    def _timeout_error(self, stderr: str) -> SadTalkerError:
        return timeout_error(f"encoding {self.path.name}", self._limit, self._deadline, stderr, self._cmd)

    def _audio_input(self, frames: int) -> ffmpeg_python.Stream:
        """The first audio stream of ``audio``, cut to ``frames / fps`` seconds. Cutting at the input (``-t``
        before ``-i``) trims decoded samples exactly: T·40 ms at 25 fps."""
        assert self.audio is not None
        return ffmpeg_python.input(str(self.audio), t=f"{frames / self.fps:.6f}")["a:0"]

    def _audio_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {"acodec": "aac"}
        if self.audio_rate is not None:
            kwargs["ar"] = self.audio_rate
        return kwargs

    def _container_kwargs(self) -> dict[str, object]:
        if self.path.suffix.lower() in (".mp4", ".mov", ".m4v"):
            return {"movflags": "+faststart"}  # index at the front: playable while downloading
        return {}

    def write(self, frames: np.ndarray) -> None:
        """Append one frame (H, W, 3) or a chunk (N, H, W, 3) of uint8 RGB frames."""
        if self._closed:
            raise RuntimeError("VideoWriter is closed")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected (H, W, 3) or (N, H, W, 3) RGB frames, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames, got {frames.dtype} (the render engine yields them)")
        height, width = frames.shape[1:3]
        if self.num_frames is not None and self.frames_written + len(frames) > self.num_frames:
            raise ValueError(f"{self.path}: more than num_frames={self.num_frames} frames written")
        if self._proc is None:
            self._start(width, height)
        elif (width, height) != self.frame_size:
            raise ValueError(f"frame size {width}x{height} differs from the first frame's {self.frame_size}")
        assert self._proc is not None and self._proc.stdin is not None
        for frame in frames:
            if self.size_policy == "pad":
                frame = _even_pad(frame)
            try:
                self._proc.stdin.write(np.ascontiguousarray(frame).data)
            except (BrokenPipeError, OSError) as exc:  # ffmpeg died: report why, from its stderr
                if not self._timed_out:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._proc.wait(timeout=30)
                kill_process_group(self._proc)
                stderr = self._stderr.text() if self._stderr else ""
                self._cleanup()
                if self._timed_out:
                    raise self._timeout_error(stderr) from None
                raise FFmpegError(
                    "ffmpeg stopped while encoding", self._proc.returncode, stderr, self._cmd
                ) from exc
            self.frames_written += 1

    # -- finishing -----------------------------------------------------------------------------------------

    def close(self) -> Path:
        """Finish encoding, mux the audio, and move the file to its final name. Returns that path.

        Raises:
            ValueError: no frames, or not ``num_frames`` frames, were written (nothing is left on disk).
            FFmpegError: ffmpeg failed (message ends with its stderr).
        """
        if self._done:
            return self.path
        if self._closed:
            raise RuntimeError(f"{self.path}: the writer was aborted; nothing was written")
        try:
            if self._proc is None:
                raise ValueError(f"{self.path}: no frames were written")
            if self.num_frames is not None and self.frames_written != self.num_frames:
                raise ValueError(
                    f"{self.path}: {self.frames_written} frames written, {self.num_frames} expected "
                    "(the audio is cut to num_frames / fps)"
                )
            assert self._proc.stdin is not None and self._video_tmp is not None
            with contextlib.suppress(BrokenPipeError, OSError):  # the exit status below tells what happened
                self._proc.stdin.close()
            returncode = self._proc.wait()  # bounded: the watchdog kills a stuck encoder at its limit
            stderr = self._stderr.text() if self._stderr else ""
            if self._timed_out:
                raise self._timeout_error(stderr)
            if returncode != 0:
                raise FFmpegError(f"ffmpeg failed writing {self.path.name}", returncode, stderr, self._cmd)
            result = self._video_tmp
            if self.audio is not None and not self._one_process_audio:
                result = _temp_name(self.path)
                self._temps.append(result)
                self._mux(self._video_tmp, result)
            publish(result, self.path)
            self._temps.remove(result)
            self._done = True
            log.debug("wrote %s (%d frames)", self.path, self.frames_written)
            return self.path
        except BaseException:
            self.abort()
            raise
        finally:
            self._cleanup()
            self._closed = True

    def _mux(self, video: Path, out: Path) -> None:
        """Second step when T was not known up front: copy the video, add audio cut to T / fps seconds."""
        video_stream = ffmpeg_python.input(str(video))["v:0"]
        audio_stream = self._audio_input(self.frames_written)
        kwargs = {"vcodec": "copy", **self._audio_kwargs(), **self._container_kwargs()}
        muxed = ffmpeg_python.output(video_stream, audio_stream, str(out), **kwargs)
        run_ffmpeg(muxed, f"muxing audio into {self.path.name}")

    def abort(self) -> None:
        """Stop ffmpeg and delete every temporary; the final path is left untouched. Idempotent."""
        if self._proc is not None:
            with contextlib.suppress(Exception):
                kill_process_group(self._proc)  # a no-op once ffmpeg is reaped
        self._cleanup()
        self._closed = True

    def _cleanup(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._proc is not None:
            for stream in (self._proc.stdin, self._proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError, ValueError):
                        stream.close()
        for tmp in list(self._temps):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            self._temps.remove(tmp)
