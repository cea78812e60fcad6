"""Weights of the face-alignment landmark backend (third-party, not part of SadTalker) and their check.

face-alignment (1adrianb/face-alignment, BSD-3-Clause code) downloads two files into torch hub's cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) the first time it is
constructed. We never let it: :func:`resolve_face_alignment_weights` finds both files there, checks them, and
otherwise raises a :class:`WeightsError` telling how to fetch them. Only the first 10 hex digits of each
file's SHA-256 are published (in the file name, torch hub's ``check_hash`` convention), so ``sha256`` is
None and the prefix is checked instead (:func:`sha256_prefix`).
"""

from __future__ import annotations

import re
from pathlib import Path

from sadtalker.errors import WeightsError
from sadtalker.weights.registry import WeightFile

_FAN_BASE = "https://www.adrianbulat.com/downloads/python-fan/"
FETCH_HINT = "sadtalker-batch weights fetch face-alignment"
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")

FACE_ALIGNMENT_FILES: tuple[WeightFile, ...] = (
    WeightFile(
        name="s3fd-619a316812.pth",
        urls=(_FAN_BASE + "s3fd-619a316812.pth",),
        sha256=None,  # only the prefix 619a316812 is known (see sha256_prefix)
        size=None,
        networks={"s3fd": ""},
        licence="face-alignment (BSD-3-Clause code); S3FD face detector weights distributed by its author",
    ),
    WeightFile(
        name="2DFAN4-11f355bf06.pth.tar",
        urls=(_FAN_BASE + "2DFAN4-11f355bf06.pth.tar",),
        sha256=None,  # only the prefix 11f355bf06 is known
        size=None,
        networks={"fan": ""},
        licence="face-alignment (BSD-3-Clause code); 2D-FAN weights distributed by its author (300W-LP data)",
    ),
)


def sha256_prefix(weight: WeightFile) -> str:
    """The SHA-256 prefix a file's name carries (``s3fd-619a316812.pth`` -> ``619a316812``)."""
    match = _HASH_IN_NAME.search(weight.name)
    if match is None:
        raise ValueError(f"{weight.name} carries no hash prefix")
    return match.group(1)


def face_alignment_dir() -> Path:
    """Where face-alignment looks for its weights: ``torch.hub.get_dir()/checkpoints`` ($TORCH_HOME aware)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def verify_file(path: Path, weight: WeightFile) -> None:
    """Check ``path`` against ``weight`` (full SHA-256 when known, else the name's prefix).

    Raises:
        WeightsError: the hash does not match.
    """
    from sadtalker.hashing import sha256_file

    digest = sha256_file(path)
    expected = weight.sha256 or sha256_prefix(weight)
    if not digest.startswith(expected):
        raise WeightsError(
            f"{path}: SHA-256 {digest[:16]}… does not match {expected} (corrupt or partial download); "
            f"delete it and run `{FETCH_HINT}`"
        )


def resolve_face_alignment_weights(directory: Path | None = None) -> dict[str, Path]:
    """Paths of the two verified face-alignment files, keyed by file name.

    Raises:
        WeightsError: a file is missing or fails its hash check. The message says how to fetch them.
    """
    folder = Path(directory) if directory is not None else face_alignment_dir()
    missing = [w.name for w in FACE_ALIGNMENT_FILES if not (folder / w.name).is_file()]
    if missing:
        raise WeightsError(
            f"face-alignment weights missing in {folder}: {', '.join(missing)}. Fetch them with "
            f"`{FETCH_HINT}` (or place the files from {_FAN_BASE} there), or use the offline dlib "
            "landmark backend"
        )
    paths = {}
    for weight in FACE_ALIGNMENT_FILES:
        path = folder / weight.name
        verify_file(path, weight)
        paths[weight.name] = path
    return paths
