"""Download of registry files into the cache: resumable, retried, verified, atomic (urllib + tqdm).

``fetch(weight)`` returns the path of a verified file, downloading it when needed:

* the bytes go to ``<name>.partial`` in the destination folder; an interrupted transfer is resumed with an
  HTTP ``Range`` request (206), or restarted when the server ignores the range (200);
* network errors, timeouts, short bodies, HTTP 5xx / 408 / 429 are retried with exponential backoff
  (``backoff · 2^k`` seconds); other 4xx (404, 403, ...) fail that URL at once; then the next URL of
  ``weight.urls`` is tried (resuming the same ``.partial``: all URLs serve the same bytes, the hash decides);
* the finished file is checked (size when ``weight.size`` is set, SHA-256 when ``weight.sha256`` is set); a
  mismatch deletes it and raises :class:`WeightsError` naming both hashes: a wrong file is never used;
* success is an atomic rename of the ``.partial`` onto the final name (``sadtalker.atomic.publish``);
  concurrent fetches of one file (workers on one machine) are serialised by an ``flock`` on ``.<name>.lock``
  where the OS has it;
* URLs are logged and reported without query string, fragment or credentials: GitHub release assets redirect
  to signed URLs whose query strings must not end up in logs.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tqdm import tqdm

from sadtalker.atomic import publish
from sadtalker.errors import DownloadError, WeightsError
from sadtalker.hashing import sha256_file
from sadtalker.weights.registry import WeightFile, cache_dir

log = logging.getLogger(__name__)

USER_AGENT = "sadtalker-batch/0.1 (+python-urllib)"
_CHUNK = 1 << 20
_MAX_SLEEP = 60.0
_RETRY_STATUS = {408, 425, 429}  # plus every 5xx


class _PermanentURLError(Exception):
    """This URL will not work (404, 403, ...): try the next one, no retries."""


class _TransientError(Exception):
    """A retryable failure of one attempt."""


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` only: no query string (signatures), fragment or user:password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _scrub(text: str) -> str:
    """Remove query strings from URLs quoted inside an error message."""
    return re.sub(r"(https?://[^\s?#'\"]*)[?#][^\s'\"]*", r"\1", text)


def verify(path: str | Path, sha256: str) -> None:
    """Raise :class:`WeightsError` unless the file's SHA-256 is ``sha256`` (hex, case-insensitive)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: file not found")
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise WeightsError(f"{path.name}: SHA-256 mismatch: expected {sha256.lower()}, got {actual}")


def check_file(path: Path, weight: WeightFile) -> bool:
    """Verify ``path`` against ``weight`` (size, then hash; each when known). Returns True when a hash was
    checked, False when the registry has none (nothing stronger than the size was possible).

    Raises:
        WeightsError: wrong size or hash.
    """
    if weight.size is not None:
        actual = path.stat().st_size
        if actual != weight.size:
            raise WeightsError(f"{weight.name}: size mismatch: expected {weight.size} bytes, got {actual}")
    if weight.sha256:
        verify(path, weight.sha256)
        return True
    return False


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock; the hash check still protects the result
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def fetch(
    weight: WeightFile,
    dest_dir: Path | None = None,
    *,
    progress: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60,
) -> Path:
    """Return the verified local copy of ``weight`` in ``dest_dir`` (default :func:`cache_dir`), downloading
    it first when absent.

    Args:
        weight: registry entry (name, URLs tried in order, SHA-256 and size when known).
        dest_dir: folder for the file; created when missing.
        progress: show a tqdm bar on stderr.
        retries: extra attempts per URL after a transient failure (so ``retries + 1`` attempts).
        backoff: first wait in seconds; doubled after every failed attempt (capped at 60 s).
        timeout: socket timeout in seconds for connecting and for each read.

    Raises:
        DownloadError: every URL failed (message lists each redacted URL and why). ``transient`` is False
            when every URL failed permanently (404, 403, ...).
        WeightsError: the downloaded file has the wrong size or SHA-256 (it was deleted).
    """
    dest = Path(dest_dir) if dest_dir is not None else cache_dir()
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / weight.name
    partial = dest / (weight.name + ".partial")
    with _file_lock(dest / f".{weight.name}.lock"):
        if final.is_file():
            try:
                if not check_file(final, weight):
                    log.debug("%s: present; no hash in the registry, not verified", weight.name)
                return final
            except WeightsError as exc:
                log.warning("%s; deleting it and downloading again", exc)
                final.unlink()
        if not weight.urls:
            error = DownloadError(f"{weight.name}: not present and no download URL in the registry")
            error.transient = False
            raise error
        failures: list[str] = []
        permanent = True
        for url in weight.urls:
            shown = redact_url(url)
            try:
                _download(
                    url, partial, weight, progress=progress, retries=retries, backoff=backoff, timeout=timeout
                )
            except _PermanentURLError as exc:
                failures.append(f"{shown}: {exc}")
                log.warning("%s: %s: %s", weight.name, shown, exc)
                continue
            except DownloadError as exc:
                permanent = False
                failures.append(f"{shown}: {exc}")
                continue
            try:
                check_file(partial, weight)
            except WeightsError:
                partial.unlink(missing_ok=True)
                raise
            publish(partial, final)
            log.info("%s: downloaded from %s", weight.name, shown)
            return final
        error = DownloadError(f"{weight.name}: download failed: " + "; ".join(failures))
        if permanent:
            error.transient = False
        raise error


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _partial_is_complete(partial: Path, weight: WeightFile) -> bool:
    try:
        check_file(partial, weight)
    except WeightsError:
        return False
    return weight.size is not None or bool(weight.sha256)


def _download(
    url: str,
    partial: Path,
    weight: WeightFile,
    *,
    progress: bool,
    retries: int,
    backoff: float,
    timeout: float,
) -> None:
    """Bring ``partial`` to the complete body of ``url``, resuming it; retries transient failures.

    Raises:
        _PermanentURLError: an HTTP status that retrying will not change.
        DownloadError: still failing after ``retries`` retries.
    """
    shown = redact_url(url)
    attempt = 0
    while True:
        try:
            _attempt(url, partial, weight, progress=progress, timeout=timeout)
            return
        except _TransientError as exc:
            reason = str(exc)
        attempt += 1
        if attempt > retries:
            raise DownloadError(f"{reason} (after {attempt} attempts)")
        delay = min(backoff * 2 ** (attempt - 1), _MAX_SLEEP)
        log.warning("%s: %s: %s; retry %d/%d in %.1f s", weight.name, shown, reason, attempt, retries, delay)
        time.sleep(delay)


def _attempt(url: str, partial: Path, weight: WeightFile, *, progress: bool, timeout: float) -> None:
    offset = partial.stat().st_size if partial.exists() else 0
    if weight.size is not None and offset >= weight.size:
        if offset == weight.size:
            return  # finished earlier but not renamed (the caller verifies it)
        partial.unlink()
        offset = 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)  # Range survives urllib's redirects
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if offset and response.status == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != offset:
                    partial.unlink(missing_ok=True)
                    raise _TransientError(f"server resumed at byte {start}, asked for {offset}")
                mode = "ab"
            else:
                if offset:
                    log.info("%s: server ignored the range request; downloading from the start", weight.name)
                offset, mode = 0, "wb"
            length_header = response.headers.get("Content-Length")
            length = int(length_header) if length_header and length_header.isdigit() else None
            total = offset + length if length is not None else weight.size
            received = 0
            with (
                open(partial, mode) as out,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=weight.name,
                    disable=not progress,
                ) as bar,
            ):
                while True:
                    block = response.read(_CHUNK)
                    if not block:
                        break
                    try:
                        out.write(block)
                    except OSError as exc:  # disk full, permissions: not a network problem, do not retry
                        raise WeightsError(f"{weight.name}: cannot write {partial}: {exc}") from exc
                    received += len(block)
                    bar.update(len(block))
            if length is not None and received < length:
                # http.client returns b"" when the peer closes early instead of raising: check ourselves.
                raise _TransientError(
                    f"connection closed after {offset + received} of {offset + length} bytes"
                )
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # range not satisfiable: the partial is complete, or stale
            if _partial_is_complete(partial, weight):
                return
            partial.unlink(missing_ok=True)
            raise _TransientError("HTTP 416 for the resume range; restarting from byte 0") from None
        reason = f"HTTP {exc.code} {exc.reason}"
        if exc.code >= 500 or exc.code in _RETRY_STATUS:
            raise _TransientError(reason) from None
        raise _PermanentURLError(reason) from None
    except urllib.error.URLError as exc:
        raise _TransientError(_scrub(f"network error: {exc.reason}")) from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, IncompleteRead, bad status line
        raise _TransientError(_scrub(f"{type(exc).__name__}: {exc}")) from None
