"""Typed errors. Each names the input it is about, so a batch can fail one item with a clear reason."""

from __future__ import annotations


class SadTalkerError(Exception):
    """Base class of every error this package raises on purpose."""

    #: True when retrying the same call could succeed (network, storage); False for bad input.
    transient: bool = False


class InputError(SadTalkerError):
    """The input itself is unusable (bad file, no face, too short): retrying will not help."""

    def __init__(self, path: str, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # Errors cross process boundaries (Dask workers, Prefect results): rebuild from the two fields.
        return (type(self), (self.path, self.problem))


class AudioError(InputError):
    """Audio that cannot drive a video: unreadable, empty, too short, too long, non-finite."""


class ImageError(InputError):
    """A photo that cannot be read or converted."""


class NoFaceError(InputError):
    """No usable face in the photo (none found, or too small to animate)."""


class ReferenceVideoError(InputError):
    """A reference video (``ref_eyeblink`` / ``ref_pose``) that cannot be decoded: corrupt, truncated,
    empty, or without a video stream. (A video without any usable face raises :class:`NoFaceError`.)"""


class OutsidePrefixesError(InputError):
    """An input file that lies outside the batch's allowed input prefixes when a worker opens it (e.g. swapped
    for a symlink out of them after the manifest was validated): refused before any byte of it is read
    (``sadtalker.inputs``)."""


class StageTimeout(SadTalkerError):
    """A stage (face, coeffs, render, qc) ran past its time limit (``sadtalker.timeouts``): whatever it was
    waiting for (ffmpeg, the renderer) was stopped and its processes killed.

    Not transient: a limit is generous by design, so a stage that used it all is stuck on this input (a
    file that makes ffmpeg hang, a clip longer than its budget); retrying would hold the batch three more
    times as long. Network stalls are bounded below it, by the storage read / connect timeouts, and those
    are retried."""

    def __init__(self, message: str, stage: str | None = None, limit_s: float | None = None):
        self.stage = stage
        self.limit_s = limit_s
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.stage, self.limit_s))


class WeightsError(SadTalkerError):
    """A checkpoint is missing, corrupt, has the wrong hash or the wrong layout."""


class DownloadError(WeightsError):
    """A download failed after its retries."""

    transient = True


class CompilerMissingError(SadTalkerError):
    """``torch.compile`` was asked for on the CPU and no C++ compiler is installed (inductor generates C++):
    install one or render without ``--compile``; retrying will not help."""
