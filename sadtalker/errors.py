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


class WeightsError(SadTalkerError):
    """A checkpoint is missing, corrupt, has the wrong hash or the wrong layout."""


class DownloadError(WeightsError):
    """A download failed after its retries."""

    transient = True
