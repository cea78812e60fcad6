"""Decode a written video back, as a viewer would: frames streamed through a pipe, audio at 16 kHz mono.

Frames: ffmpeg decodes to raw ``rgb24`` on its stdout, read one frame at a time from the pipe, so memory
stays at one frame (plus the pipe's buffer) whatever the clip's length. ``max_side`` downscales large videos
inside ffmpeg (area filter) before they cross the pipe. Decoding errors (a truncated file, corrupt
packets) are collected from ffmpeg's stderr and reported, never raised: QC must describe a broken file.
Running past the stage's deadline (``sadtalker.timeouts``) is raised: ffmpeg's process group is killed.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import ffmpeg as ffmpeg_python  # ffmpeg-python builds the commands; the processes are managed here
import numpy as np

from sadtalker.timeouts import effective_limit
from sadtalker.video.ffmpeg import (
    Watchdog,
    ffmpeg_command,
    kill_process_group,
    popen,
    run_ffmpeg,
    timeout_error,
)

#: stderr lines that mean the file is damaged (ffmpeg still exits 0 for many of them).
_ERROR_RE = re.compile(
    r"partial file|invalid data|error while decoding|corrupt|truncat|moov atom not found|"
    r"missing picture|concealing|decode_slice_header error|no frame!|packet too small|"
    r"invalid nal|error reading header|end of file",
    re.IGNORECASE,
)
_PIXFMT_RE = re.compile(r"Stream #0:\d+[^:]*: Video: ([\w-]+)[^,]*, ([a-z0-9_]+)")


def scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) of a ``width × height`` frame downscaled so that its longer side is at most ``max_side``
    (even numbers, as ffmpeg's scaler prefers; unchanged when already small enough)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class _StderrReader:
    """Drains a pipe in a thread (ffmpeg blocks when its stderr pipe fills), keeping the head and tail."""

    def __init__(self, stream, head: int = 40, tail: int = 40):
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=tail)
        self.errors: list[str] = []
        self._head_size = head
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if len(self.head) < self._head_size:
                self.head.append(line)
            else:
                self.tail.append(line)
            if _ERROR_RE.search(line) and len(self.errors) < 20:
                self.errors.append(line.strip())
        stream.close()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        return "\n".join([*self.head, *self.tail])


class FrameReader:
    """Iterate the frames of ``path`` as ``(h, w, 3)`` uint8 RGB arrays (one frame in memory at a time).

    Args:
        path: the video.
        width, height: the stream's size (from a probe); frames are scaled to :func:`scaled_size` of it.
        max_side: downscale so that the longer side is at most this (None: native size).

    After iteration: ``frames`` (decoded), ``returncode``, ``errors`` (stderr lines that say the file is
    damaged), ``codec`` and ``pix_fmt`` of the stream as ffmpeg reported them.
    """

    def __init__(self, path: str | Path, width: int, height: int, max_side: int | None = None):
        self.path = Path(path)
        self.source_size = (int(width), int(height))
        self.size = scaled_size(int(width), int(height), max_side)
        self.frames = 0
        self.returncode: int | None = None
        self.errors: list[str] = []
        self.stderr = ""
        self.codec: str | None = None
        self.pix_fmt: str | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """(sx, sy): decoded pixels per source pixel."""
        return self.size[0] / self.source_size[0], self.size[1] / self.source_size[1]

    def __iter__(self) -> Iterator[np.ndarray]:
        w, h = self.size
        # Always scale to the probed size: the byte count per frame is then known even for streams with a
        # rotation matrix (which ffmpeg would otherwise apply and swap w/h). -fps_mode passthrough: no frame
        # duplicated or dropped to meet a nominal rate, we want the stored frames.
        # Log level info: the stream headers (codec, pixel format) and every damage report are wanted.
        video = ffmpeg_python.input(str(self.path))["v:0"].filter("scale", w, h, flags="area")
        raw = video.output("pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
        cmd = ffmpeg_command(raw, loglevel="info")
        limit, deadline = effective_limit()
        if deadline is not None:
            deadline.check(f"decoding {self.path.name}: not started")
        proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        watchdog = Watchdog(proc, limit)  # a stuck decoder is killed at the stage's deadline
        assert proc.stdout is not None and proc.stderr is not None
        reader = _StderrReader(proc.stderr)
        size = w * h * 3
        finished = False
        try:
            while True:
                data = proc.stdout.read(size)
                if len(data) < size:
                    finished = True
                    break
                self.frames += 1
                yield np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
        finally:
            watchdog.cancel()
            if not finished or watchdog.fired:
                kill_process_group(proc)  # the consumer stopped early (or raised), or the time was up
            proc.stdout.close()
            self.returncode = proc.wait()
            reader.join()
            self.stderr = reader.text
            self.errors = reader.errors
            match = _PIXFMT_RE.search(self.stderr)
            if match:
                self.codec, self.pix_fmt = match.group(1), match.group(2)
        if watchdog.fired:
            raise timeout_error(f"decoding {self.path.name}", limit, deadline, self.stderr, cmd)


def decode_audio(path: str | Path, sample_rate: int = 16_000) -> tuple[np.ndarray | None, str | None]:
    """The first audio stream of ``path`` as mono float32 at ``sample_rate`` (ffmpeg's resampler; QC needs
    an energy envelope, not the bit-exact resampling of :func:`sadtalker.audio.load_audio`).

    Returns:
        ``(samples, None)``, or ``(None, reason)`` when there is no audio stream or it cannot be decoded.
    """
    audio = ffmpeg_python.input(str(path))["a:0"]
    pcm = audio.output("pipe:", ac=1, ar=sample_rate, format="f32le", acodec="pcm_f32le")
    proc = run_ffmpeg(pcm, f"decoding the audio of {Path(path).name}", check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["ffmpeg failed"]
        if "matches no streams" in tail[0]:
            return None, "no audio stream"
        return None, f"audio does not decode: {tail[0]}"
    # A read-only view of ffmpeg's bytes, not a copy (38 MB per 10 minutes); "<f4" is float32 on x86/ARM.
    samples = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32, copy=False)
    if samples.size == 0:
        return None, "the audio stream is empty"
    return samples, None
