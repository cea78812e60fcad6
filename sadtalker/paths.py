"""The one place that knows where batch outputs go (layout from DESIGN.md).

```
<output>/<batch_id>/
  results.parquet          one row per manifest row: status, error, timings, hashes, output URIs
  qc.parquet, report.html  batch QC
  items/<row_id>/video.mp4, coeffs.npz, face.npz, qc.json
  items/<row_id>/render.json   the render's record (its cache key, frames, duration): written after the
                               video, it marks the video as done for resume
  results.partial/part-<run>-<seq>.parquet   the results journal: finished rows' records, written while
                               the batch runs; merged into results.parquet at the end, then removed
<cache>/face/<key>.npz, <cache>/coeffs/<key>.npz   content-addressed stage results, shared by batches
<cache>/refs/<key>.npz     per-frame 3DMM of a reference video (ref_eyeblink / ref_pose), shared likewise
```

``<cache>`` defaults to ``<output>/cache`` (so ``cache`` is not a valid batch id). Row ids, batch ids and
cache keys are checked against a safe alphabet, and every derived path is checked to stay under its prefix.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass

from sadtalker import uris
from sadtalker.redaction import redact

__all__ = [
    "SAFE_ID",
    "BatchPaths",
    "ItemPaths",
    "JOURNAL_PART_PREFIX",
    "PathEscapeError",
    "batch_id_for",
    "journal_run_token",
    "check_id",
    "check_key",
    "ensure_within",
]

#: Row and batch ids: letters, digits, ``.``, ``_`` and ``-``; no leading dot; at most 128 characters.
SAFE_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")
_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_RUN_TOKEN = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8}$")
#: File name prefix of the results journal's part files (``results.partial/part-<run>-<seq>.parquet``).
JOURNAL_PART_PREFIX = "part-"
RESERVED_BATCH_IDS = frozenset({"cache"})


class PathEscapeError(ValueError):
    """A row id, batch id or key would put a file outside its output prefix."""


def check_id(value: str, what: str = "row id") -> str:
    """``value`` if it is a safe id (see :data:`SAFE_ID`); raises :class:`PathEscapeError` otherwise."""
    if not isinstance(value, str) or not SAFE_ID.match(value) or value in (".", ".."):
        raise PathEscapeError(
            f"{what} {value!r} is not safe: use 1-128 of [A-Za-z0-9._-], not starting with a dot"
        )
    return value


def check_key(value: str) -> str:
    """``value`` if it is a lower-case hex cache key of 16-64 digits."""
    if not isinstance(value, str) or not _KEY.match(value):
        raise PathEscapeError(f"cache key {value!r} is not 16-64 lower-case hex digits")
    return value


def ensure_within(prefix: str, uri: str) -> str:
    """``uri`` (normalized) if it lies strictly under ``prefix``; else raises :class:`PathEscapeError`."""
    root, target = uris.normalize(prefix).rstrip("/"), uris.normalize(uri)
    if not target.startswith(root + "/"):
        raise PathEscapeError(f"{redact(target)} is outside {redact(root)}")
    return target


@dataclass(frozen=True)
class ItemPaths:
    """Where one row's outputs go."""

    root: str
    video: str
    coeffs: str
    face: str
    qc: str
    render_record: str
    qc_source: str  # QC thumbnails for the report: the source face, and a strip of sampled output frames
    qc_strip: str


@dataclass(frozen=True)
class BatchPaths:
    """Where one batch's outputs and the shared stage cache go.

    Build it with :meth:`create`, which checks and normalizes the prefixes.
    """

    output: str
    batch_id: str
    cache: str

    @classmethod
    def create(cls, output: str, batch_id: str, cache: str | None = None) -> BatchPaths:
        """Checked paths for batch ``batch_id`` under ``output``; ``cache`` defaults to ``<output>/cache``."""
        check_id(batch_id, "batch id")
        if batch_id in RESERVED_BATCH_IDS:
            raise PathEscapeError(f"batch id {batch_id!r} is reserved (it names the default cache folder)")
        out = uris.normalize(output)
        return cls(output=out, batch_id=batch_id, cache=uris.normalize(cache or uris.join(out, "cache")))

    @property
    def root(self) -> str:
        """``<output>/<batch_id>``."""
        return ensure_within(self.output, uris.join(self.output, self.batch_id))

    @property
    def results(self) -> str:
        return uris.join(self.root, "results.parquet")

    @property
    def qc(self) -> str:
        return uris.join(self.root, "qc.parquet")

    @property
    def report(self) -> str:
        return uris.join(self.root, "report.html")

    @property
    def batch_record(self) -> str:
        """``batch.json``: what the batch was (id, time, manifest, weights, versions, thresholds, counts);
        the index page of an output prefix lists these."""
        return uris.join(self.root, "batch.json")

    @property
    def index(self) -> str:
        """``<output>/index.html``: every batch under the output prefix, newest first."""
        return uris.join(self.output, "index.html")

    @property
    def journal(self) -> str:
        """``results.partial/``: the results journal, part files of finished rows' result records written
        while the batch runs (``flows.journal``); merged into ``results.parquet`` at the end, then removed."""
        return uris.join(self.root, "results.partial")

    def journal_part(self, run: str, seq: int) -> str:
        """``results.partial/part-<run>-<seq>.parquet``: part ``seq`` of run ``run`` (a token that sorts by
        start time, so that the parts of later runs sort after those of earlier ones)."""
        if not _RUN_TOKEN.match(run) or not 0 <= seq < 10**9:
            raise PathEscapeError(f"journal part {run!r} #{seq} is not a valid run token and sequence number")
        return ensure_within(
            self.root, uris.join(self.journal, f"{JOURNAL_PART_PREFIX}{run}-{seq:09d}.parquet")
        )

    def item(self, row_id: str) -> ItemPaths:
        """The output paths of row ``row_id`` (checked to stay inside the batch folder)."""
        root = ensure_within(self.root, uris.join(self.root, "items", check_id(row_id)))
        return ItemPaths(
            root=root,
            video=uris.join(root, "video.mp4"),
            coeffs=uris.join(root, "coeffs.npz"),
            face=uris.join(root, "face.npz"),
            qc=uris.join(root, "qc.json"),
            render_record=uris.join(root, "render.json"),
            qc_source=uris.join(root, "qc_source.jpg"),
            qc_strip=uris.join(root, "qc_strip.jpg"),
        )

    def face_cache(self, key: str) -> str:
        """Content-addressed face (crop + 3DMM) artefact."""
        return ensure_within(self.cache, uris.join(self.cache, "face", f"{check_key(key)}.npz"))

    def coeffs_cache(self, key: str) -> str:
        """Content-addressed coefficients artefact."""
        return ensure_within(self.cache, uris.join(self.cache, "coeffs", f"{check_key(key)}.npz"))

    def reference_cache(self, key: str) -> str:
        """Content-addressed per-frame 3DMM of a reference video (``tasks.keys.reference_key``)."""
        return ensure_within(self.cache, uris.join(self.cache, "refs", f"{check_key(key)}.npz"))


def journal_run_token() -> str:
    """A new token naming one run's journal parts (:meth:`BatchPaths.journal_part`): its UTC start time to
    the microsecond, then 8 random hex digits (``20261203T074012123456Z-1f2e3d4c``); tokens sort by time."""
    now = dt.datetime.now(dt.timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:8]}"


def batch_id_for(manifest_uri: str, manifest_sha256: str) -> str:
    """The default batch id: the manifest's file stem plus the first 12 hex digits of its content hash.

    The same manifest gives the same id, so rerunning an interrupted batch resumes it; an edited manifest
    starts a new batch (its unchanged photos and audio still come from the shared cache).
    """
    stem = uris.normalize(manifest_uri).rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:64] or "batch"
    return f"{stem}-{manifest_sha256[:12]}"
