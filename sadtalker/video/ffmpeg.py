"""Finding the ffmpeg binary, running it with useful errors, and probing media files.

The binary is ``$SADTALKER_FFMPEG``, else ``ffmpeg`` on ``PATH``, else the static build bundled with the
``imageio-ffmpeg`` wheel (so a plain ``pip install`` works without a system ffmpeg). That bundled build has no
``ffprobe``, so :func:`probe` uses ``ffprobe`` when one is found and otherwise reads the same facts from the
ffmpeg binary itself (a packet listing from the ``framecrc`` muxer, which copies packets without decoding,
so it is fast).

Every ffmpeg command is an ffmpeg-python graph (``ffmpeg.input(...)...output(...)``) turned into argv by
:func:`ffmpeg_command`, but not run by ffmpeg-python: every process started here (and by the encoder, the
QC decoder and the audio loader) leads a process group of its own and runs at most until the running
stage's deadline (``sadtalker.timeouts``): past it the whole group is killed and reaped, so a hung ffmpeg
neither holds the batch nor outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import ffmpeg as ffmpeg_python  # ffmpeg-python builds the commands; the processes are managed here

from sadtalker.errors import InputError, SadTalkerError
from sadtalker.timeouts import Deadline, effective_limit

#: Environment variables that name the binaries explicitly (a path, or a name looked up on PATH).
FFMPEG_ENV = "SADTALKER_FFMPEG"
FFPROBE_ENV = "SADTALKER_FFPROBE"

_STDERR_TAIL = 2000  # characters of ffmpeg's stderr kept in error messages


class FFmpegError(SadTalkerError):
    """ffmpeg (or ffprobe) exited with an error; the message ends with the tail of its stderr."""

    def __init__(self, what: str, returncode: int | None, stderr: str = "", cmd: Sequence[str] = ()):
        self.returncode = returncode
        self.stderr_tail = stderr[-_STDERR_TAIL:].strip()
        self.cmd = list(cmd)
        message = f"{what} (exit status {returncode})"
        if self.stderr_tail:
            message += f":\n{self.stderr_tail}"
        super().__init__(message)


def _resolve(name_or_path: str) -> str | None:
    if os.sep in name_or_path or (os.altsep and os.altsep in name_or_path):
        return name_or_path if os.path.isfile(name_or_path) else None
    return shutil.which(name_or_path)


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: ``$SADTALKER_FFMPEG``, ``PATH``, else imageio-ffmpeg's bundled build.

    Raises:
        FFmpegError: none of them exists.
    """
    env = os.environ.get(FFMPEG_ENV)
    if env:
        found = _resolve(env)
        if found is None:
            raise FFmpegError(f"${FFMPEG_ENV}={env!r} is not an executable file", None)
        return found
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # ImportError, or RuntimeError when the wheel has no binary for this platform
        raise FFmpegError(
            f"no ffmpeg found: set ${FFMPEG_ENV}, install ffmpeg, or imageio-ffmpeg ({exc})", None
        ) from exc


def ffprobe_exe() -> str | None:
    """Path of ffprobe, or None: ``$SADTALKER_FFPROBE`` (empty string = do not use ffprobe), the ``ffprobe``
    beside the chosen ffmpeg, then ``PATH``."""
    env = os.environ.get(FFPROBE_ENV)
    if env is not None:
        return _resolve(env) if env else None
    try:
        sibling = Path(ffmpeg_exe()).with_name("ffprobe" + (".exe" if os.name == "nt" else ""))
    except FFmpegError:
        sibling = None
    if sibling is not None and sibling.is_file():
        return str(sibling)
    return shutil.which("ffprobe")


# --- processes: own process group, time limits, no orphans ------------------------------------------------


def popen(cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
    """Start ``cmd`` as the leader of a process group of its own, so that :func:`kill_process_group` also
    reaches whatever it started (a wrapper script's children)."""
    if os.name == "posix":
        kwargs.setdefault("start_new_session", True)
    return subprocess.Popen(list(cmd), **kwargs)


def _signal_group(proc: subprocess.Popen) -> None:
    if proc.returncode is not None:  # already reaped: its pid no longer names our group
        return
    try:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # pragma: no cover - Windows
            proc.kill()
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(OSError):
            proc.kill()


def kill_process_group(proc: subprocess.Popen, reap_timeout: float = 10.0) -> None:
    """SIGKILL ``proc`` and every process of its group (:func:`popen`), then reap it. Idempotent."""
    _signal_group(proc)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=reap_timeout)


def timeout_error(
    what: str, limit: float | None, deadline: Deadline | None, stderr: str = "", cmd: Sequence[str] = ()
) -> SadTalkerError:
    """The error of a process killed at its limit: the stage's ``StageTimeout`` when the stage's deadline
    was the binding limit, else an :class:`FFmpegError` saying how long it was given."""
    if deadline is not None:
        return deadline.error(f"{what}: ffmpeg was killed")
    return FFmpegError(f"{what}: timed out after {limit or 0:g} s; ffmpeg was killed", None, stderr, cmd)


class Watchdog:
    """Kills a streaming process's group (frames piped in or out, where no call takes a timeout) when
    ``limit_s`` passes; a blocked read or write then returns. ``fired`` says it did. ``None``: no limit."""

    def __init__(self, proc: subprocess.Popen, limit_s: float | None):
        self.proc = proc
        self.limit_s = limit_s
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer: threading.Timer | None = None
        if limit_s is not None:
            self._timer = threading.Timer(max(0.0, limit_s), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done or self.proc.returncode is not None:
                return
            self.fired = True
            _signal_group(self.proc)

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()


def run_process(
    cmd: Sequence[str], what: str, timeout: float | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``cmd`` (ffmpeg, ffprobe) to completion, capturing its output (bytes), for at most ``timeout``
    seconds or the running stage's remaining time (``sadtalker.timeouts``), whichever is shorter.

    Past that its process group is killed and reaped and :func:`timeout_error` is raised. ``check``: a
    non-zero exit raises :class:`FFmpegError` with the tail of its stderr.
    """
    limit, deadline = effective_limit(timeout)
    if deadline is not None:
        deadline.check(f"{what}: not started")
    try:
        proc = popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise FFmpegError(f"{what}: cannot start {Path(cmd[0]).name} ({exc})", None, cmd=cmd) from exc
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_process_group(proc)
        stderr = b""
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            _, stderr = proc.communicate(timeout=5)  # the pipes close once the whole group is gone
        raise timeout_error(what, limit, deadline, (stderr or b"").decode("utf-8", "replace"), cmd) from None
    except BaseException:  # KeyboardInterrupt, a stage's cancellation: leave no process behind
        kill_process_group(proc)
        raise
    if check and proc.returncode != 0:
        raise FFmpegError(what, proc.returncode, stderr.decode("utf-8", "replace"), cmd)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, stdout, stderr)


def ffmpeg_command(stream: Any, loglevel: str = "error") -> list[str]:
    """argv of the ffmpeg-python graph ``stream`` (an ``.output(...)`` node, or ``ffmpeg.merge_outputs`` of
    several) for :func:`ffmpeg_exe`, with the global options of every ffmpeg run here: no banner, no reading
    of the terminal, no progress lines, ``-loglevel`` (``"info"`` where the stream headers are wanted), and
    ``-y`` (every output is a pipe or a temporary name of ours)."""
    options = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", loglevel, "-y")
    return stream.global_args(*options).compile(cmd=ffmpeg_exe())


def run_ffmpeg(
    stream: Any, what: str, timeout: float | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the ffmpeg-python graph ``stream`` (:func:`ffmpeg_command`) to completion, capturing its output;
    limited to ``timeout`` s and the running stage's deadline, failures raised as :class:`FFmpegError`
    (:func:`run_process`)."""
    return run_process(ffmpeg_command(stream), what, timeout, check)


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a media file. Durations in seconds; None where it does not apply."""

    duration: float  # of the container (longest stream)
    has_video: bool
    width: int | None
    height: int | None
    fps: float | None  # nominal frame rate of the first video stream
    frames: int | None  # packets of the first video stream (= frames for the codecs we write)
    video_duration: float | None
    video_codec: str | None
    has_audio: bool
    audio_duration: float | None  # of the first audio stream, after the edit list (encoder priming removed)
    audio_codec: str | None
    sample_rate: int | None
    channels: int | None


def probe(path: str | Path, *, use_ffprobe: bool | None = None) -> MediaInfo:
    """Facts about the first video and first audio stream of ``path``.

    Args:
        path: a local media file.
        use_ffprobe: True / False to force one method; None uses ffprobe when it is available.

    Raises:
        InputError: the file does not exist or ffmpeg cannot read it.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), "file not found")
    exe = ffprobe_exe() if use_ffprobe is not False else None
    if use_ffprobe and exe is None:
        raise FFmpegError("ffprobe was requested but none was found", None)
    try:
        return _probe_ffprobe(exe, path) if exe else _probe_ffmpeg(path)
    except FFmpegError as exc:
        raise InputError(str(path), f"not a readable media file: {exc.stderr_tail or exc}") from exc


def _float(value: object) -> float | None:
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return out if out == out else None  # NaN -> None


def _rate(value: str | None) -> float | None:
    if not value or value in ("0/0", "0/1"):
        return None
    try:
        return float(Fraction(value))
    except (ValueError, ZeroDivisionError):
        return None


def _probe_ffprobe(exe: str, path: Path) -> MediaInfo:
    # ffmpeg.probe's command (it cannot be given a time limit, so it is run here), plus -count_packets:
    # packets are read without decoding, so frame counts are exact even when nb_frames is not stored.
    cmd = [exe, "-show_format", "-show_streams", "-of", "json", "-v", "error", "-count_packets", str(path)]
    data = json.loads(run_process(cmd, f"probing {path.name}").stdout or b"{}")
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    fmt = data.get("format", {})
    frames = None
    if video is not None:
        count = video.get("nb_read_packets") or video.get("nb_frames")
        frames = int(count) if count is not None and str(count).isdigit() else None
    stream_durations = [d for d in (_float(s.get("duration")) for s in (video, audio) if s) if d is not None]
    duration = _float(fmt.get("duration")) or max(stream_durations, default=0.0)
    return MediaInfo(
        duration=duration,
        has_video=video is not None,
        width=int(video["width"]) if video and "width" in video else None,
        height=int(video["height"]) if video and "height" in video else None,
        fps=(_rate(video.get("r_frame_rate")) or _rate(video.get("avg_frame_rate"))) if video else None,
        frames=frames,
        video_duration=_float(video.get("duration")) if video else None,
        video_codec=video.get("codec_name") if video else None,
        has_audio=audio is not None,
        audio_duration=_float(audio.get("duration")) if audio else None,
        audio_codec=audio.get("codec_name") if audio else None,
        sample_rate=int(audio["sample_rate"]) if audio and audio.get("sample_rate") else None,
        channels=int(audio["channels"]) if audio and audio.get("channels") else None,
    )


_HEADER_RE = re.compile(r"#(\w+) (\d+): (.*)")
#: Channel counts of ffmpeg's layout names that are not "N.M[.K]" (N+M+K channels) or "N channels (...)".
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "downmix": 2, "quad": 4, "hexagonal": 6, "octagonal": 8}


def _channels(layout: str) -> int | None:
    """Channels of an ffmpeg channel layout name: ``mono``, ``5.1(side)``, ``3 channels``..."""
    name = layout.split("(")[0].strip()
    if name.endswith(" channels") or re.fullmatch(r"\d+(\.\d+)+", name):
        return sum(int(n) for n in name.split()[0].split("."))
    return _LAYOUT_CHANNELS.get(name)


def _probe_ffmpeg(path: Path) -> MediaInfo:
    """ffprobe-free probe: the ``framecrc`` muxer lists the packets (stream, dts, pts, duration, ...) of the
    first video and audio stream, copied without decoding, under a header per stream (time base, type,
    codec, size, sample rate, channel layout). Lengths, frame counts and the frame rate come from the
    packets (so a file with neither stream has duration 0)."""
    source = ffmpeg_python.input(str(path))
    listing = ffmpeg_python.output(source["v:0?"], source["a:0?"], "pipe:", c="copy", format="framecrc")
    headers: dict[int, dict[str, str]] = {}
    packets: dict[int, list[tuple[int, int]]] = {}  # stream -> (pts, duration) of each packet
    for line in run_ffmpeg(listing, f"reading {path.name}").stdout.decode("utf-8", "replace").splitlines():
        header = _HEADER_RE.match(line)
        fields = line.split(",")
        if header:
            headers.setdefault(int(header.group(2)), {})[header.group(1)] = header.group(3).strip()
        elif len(fields) >= 4 and fields[0].strip().isdigit():
            packets.setdefault(int(fields[0]), []).append((int(fields[2]), int(fields[3])))
    kinds = {h.get("media_type"): i for i, h in headers.items()}  # one stream of each kind (the maps above)
    v, a = kinds.get("video"), kinds.get("audio")

    def span(index: int) -> Fraction:
        """Seconds from the first shown sample to the end of the last packet. Packets before 0 (AAC encoder
        priming) are dropped by the edit list on playback."""
        listed = packets.get(index, [])
        first = min((max(pts, 0) for pts, _ in listed), default=0)
        end = max((pts + duration for pts, duration in listed), default=first)
        return (end - first) * Fraction(headers[index].get("tb", "1/1").replace(" ", ""))

    width = height = None
    if v is not None and "dimensions" in headers[v]:
        width, height = (int(n) for n in headers[v]["dimensions"].split("x"))
    video_span = span(v) if v is not None else None
    audio_duration = float(span(a)) if a is not None else None
    video_duration = float(video_span) if video_span is not None else None
    return MediaInfo(
        duration=max((d for d in (video_duration, audio_duration) if d is not None), default=0.0),
        has_video=v is not None,
        width=width,
        height=height,
        fps=float(len(packets[v]) / video_span) if v is not None and video_span else None,
        frames=len(packets.get(v, [])) if v is not None else None,
        video_duration=video_duration,
        video_codec=headers[v].get("codec_id") if v is not None else None,
        has_audio=a is not None,
        audio_duration=audio_duration,
        audio_codec=headers[a].get("codec_id") if a is not None else None,
        sample_rate=int(headers[a]["sample_rate"]) if a is not None and "sample_rate" in headers[a] else None,
        channels=_channels(headers[a].get("channel_layout_name", "")) if a is not None else None,
    )
