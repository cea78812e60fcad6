"""The one storage layer: fsspec URLs, atomic writes, content hashes, downloads and credential redaction.

Every byte the batch pipeline reads or writes goes through here, so local folders, ``file://`` URLs and
object stores (``s3://`` through s3fs; any other fsspec protocol) behave the same way. Nothing here imports
Prefect.

URLs
    A plain path (``outputs/x``, ``/data/x``) is local and is made absolute; ``file:///data/x`` is local
    too; anything with ``<protocol>://`` goes to fsspec. :func:`resolve` resolves a relative path against a
    base folder (the manifest's folder), keeping the base's protocol.

Atomic writes (a reader never sees half a file; a failed write never replaces a good file)
    - local: write ``.<name>.<random>.tmp`` beside the target, ``fsync``, then ``os.replace`` (atomic on
      POSIX within one filesystem);
    - object stores (s3, gcs, azure): one PUT, or a multipart upload that only becomes visible when it is
      completed: the store itself swaps the object in whole, so we write the final key directly. A failed
      or interrupted upload leaves the previous object untouched;
    - any other fsspec protocol: write a temporary key beside the target, then ``fs.mv`` it into place.

Credentials
    Never passed around by this code. :func:`storage_options` only adds the S3 endpoint from
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``; keys come from the standard chain of the SDK (for S3:
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and
    ``~/.aws/credentials``, instance roles) or from fsspec's own configuration (``FSSPEC_S3_*`` variables,
    ``~/.config/fsspec``). :func:`redact` removes secrets from any text or record before it is logged or
    stored; the pipeline applies it to every log line, artifact and result it writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
from fsspec.core import split_protocol, url_to_fs

from sadtalker.timeouts import io_timeout

__all__ = [
    "copy",
    "download",
    "exists",
    "filesystem",
    "install_log_redaction",
    "is_local",
    "join",
    "local_path",
    "localize",
    "normalize",
    "parent",
    "protocol",
    "read_bytes",
    "read_json",
    "redact",
    "resolve",
    "scratch_dir",
    "sha256_file",
    "sha256_uri",
    "storage_options",
    "upload",
    "write_bytes",
    "write_json",
]

LOCAL_PROTOCOLS: frozenset[str] = frozenset({"file", "local"})
#: Stores whose single PUT / completed multipart upload replaces an object atomically.
ATOMIC_PUT_PROTOCOLS: frozenset[str] = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
_CHUNK = 1 << 20

# ---------------------------------------------------------------------------------------------------------
# URLs


def protocol(uri: str) -> str:
    """The fsspec protocol of ``uri``: ``"file"`` for plain paths."""
    proto, _ = split_protocol(str(uri))
    return proto or "file"


def is_local(uri: str) -> bool:
    """True for plain paths and ``file://`` URLs."""
    return protocol(uri) in LOCAL_PROTOCOLS


def local_path(uri: str) -> str:
    """The absolute local path of a plain path or ``file://`` URL."""
    if not is_local(uri):
        raise ValueError(f"not a local path: {redact(uri)}")
    _, path = split_protocol(str(uri))
    return os.path.abspath(os.path.expanduser(path))


def normalize(uri: str | os.PathLike[str]) -> str:
    """The canonical form used everywhere: absolute local paths, ``proto://bucket/key`` otherwise.

    ``..`` segments are folded; a trailing slash is dropped.
    """
    uri = os.fspath(uri)
    if is_local(uri):
        return local_path(uri)
    proto, path = split_protocol(uri)
    folded = posixpath.normpath(path) if path else ""
    if folded in (".", "/"):
        folded = ""
    return f"{proto}://{folded.lstrip('/')}"


def resolve(uri: str, base: str) -> str:
    """``uri`` made absolute: URLs and absolute paths as they are, relative paths against folder ``base``.

    ``resolve("a/x.png", "s3://bkt/manifests")`` is ``s3://bkt/manifests/a/x.png``;
    ``resolve("../x.wav", "/data/m")`` is ``/data/x.wav``.
    """
    uri = str(uri)
    if split_protocol(uri)[0] or os.path.isabs(os.path.expanduser(uri)):
        return normalize(uri)
    if is_local(base):
        return normalize(os.path.join(local_path(base), uri))
    proto, path = split_protocol(normalize(base))
    return normalize(f"{proto}://{posixpath.join(path, uri)}")


def join(prefix: str, *parts: str) -> str:
    """``prefix/part/...`` with the prefix's protocol (parts use ``/``)."""
    base = normalize(prefix)
    tail = "/".join(p.strip("/") for p in parts if p)
    if not tail:
        return base
    return normalize(posixpath.join(base, tail)) if is_local(base) else f"{base.rstrip('/')}/{tail}"


def parent(uri: str) -> str:
    """The folder holding ``uri`` (with its protocol)."""
    norm = normalize(uri)
    if is_local(norm):
        return os.path.dirname(norm)
    proto, path = split_protocol(norm)
    return f"{proto}://{posixpath.dirname(path)}"


# ---------------------------------------------------------------------------------------------------------
# Filesystems and credentials


def storage_options(uri: str) -> dict[str, Any]:
    """fsspec options for ``uri`` from the environment, without credentials (see the module docstring).

    For ``s3://``: ``client_kwargs.endpoint_url`` from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
    (MinIO, SeaweedFS, R2, ...), and botocore's ``connect_timeout`` / ``read_timeout`` from the running
    stage's ``io_s`` (``sadtalker.timeouts.io_timeout``), so a stalled request fails (and is retried)
    instead of holding the stage. Keys stay with botocore's credential chain. Local files need no timeout.
    """
    options: dict[str, Any] = {}
    if protocol(uri) in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            options["client_kwargs"] = {"endpoint_url": endpoint}
        seconds = io_timeout()
        options["config_kwargs"] = {"connect_timeout": seconds, "read_timeout": seconds}
    return options


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The (cached) fsspec filesystem for ``uri`` and the path inside it."""
    norm = normalize(uri)
    if is_local(norm):
        return fsspec.filesystem("file"), norm
    return url_to_fs(norm, **storage_options(norm))


def exists(uri: str) -> bool:
    """Whether ``uri`` exists now (listing caches are dropped first, so writes by other machines count)."""
    fs, path = filesystem(uri)
    fs.invalidate_cache(path)
    return bool(fs.exists(path))


def read_bytes(uri: str) -> bytes:
    """The whole content of ``uri``."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return f.read()


def read_json(uri: str) -> Any:
    """``uri`` parsed as JSON."""
    return json.loads(read_bytes(uri).decode("utf-8"))


# ---------------------------------------------------------------------------------------------------------
# Atomic writes


def _write_atomic(
    uri: str,
    write_local: Callable[[str], object],
    put: Callable[[fsspec.AbstractFileSystem, str], object],
) -> str:
    """The one atomic-write path (see the module docstring): ``write_local(tmp_path)`` for local targets,
    ``put(fs, path)`` for fsspec ones. Returns the normalized URI."""
    norm = normalize(uri)
    if is_local(norm):
        os.makedirs(os.path.dirname(norm), exist_ok=True)
        tmp = os.path.join(os.path.dirname(norm), f".{os.path.basename(norm)}.{uuid.uuid4().hex}.tmp")
        try:
            write_local(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, norm)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return norm
    fs, path = filesystem(norm)
    if protocol(norm) in ATOMIC_PUT_PROTOCOLS:
        put(fs, path)
    else:
        tmp = f"{path}.{uuid.uuid4().hex}.tmp"
        put(fs, tmp)
        fs.mv(tmp, path)
    fs.invalidate_cache(path)
    return norm


def write_bytes(uri: str, data: bytes) -> str:
    """Write ``data`` to ``uri`` atomically (see the module docstring); returns the normalized URI."""
    return _write_atomic(
        uri, lambda tmp: Path(tmp).write_bytes(data), lambda fs, path: fs.pipe_file(path, data)
    )


def write_parquet(uri: str, table: Any) -> str:
    """A pyarrow ``table`` as Parquet, written atomically to ``uri`` (its values redacted by whoever built
    it); returns the normalized URI."""
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    return write_bytes(uri, sink.getvalue())


def check_writable(prefix: str) -> None:
    """Write and remove a small probe object under ``prefix``, so an output location that cannot be written
    (read-only mount, a file in the way, no bucket, refused credentials) is found before any work.

    Raises:
        OSError: naming the location and the underlying error (redacted).
    """
    probe = join(prefix, f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write_bytes(probe, b"probe")
        fs, path = filesystem(probe)
        fs.rm_file(path)
    except Exception as exc:  # any failure here means the batch could not save its work
        raise OSError(
            redact(f"output location {prefix} is not writable: {type(exc).__name__}: {exc}")
        ) from exc


def write_json(uri: str, obj: Any) -> str:
    """Write ``obj`` as indented JSON, atomically, after :func:`redact`; returns the normalized URI."""
    return write_bytes(uri, (json.dumps(redact(obj), indent=2, sort_keys=True, default=str) + "\n").encode())


def upload(local: str | os.PathLike[str], uri: str) -> str:
    """Copy local file ``local`` to ``uri`` atomically; returns the normalized URI."""
    return _write_atomic(
        uri, lambda tmp: shutil.copyfile(local, tmp), lambda fs, path: fs.put_file(os.fspath(local), path)
    )


def copy(src: str, dst: str) -> str:
    """Copy ``src`` to ``dst`` atomically (server-side within one object store); returns ``dst``."""
    src_n, dst_n = normalize(src), normalize(dst)
    if is_local(src_n):
        return upload(src_n, dst_n)
    if protocol(src_n) == protocol(dst_n) and protocol(dst_n) in ATOMIC_PUT_PROTOCOLS:
        fs, src_path = filesystem(src_n)
        _, dst_path = filesystem(dst_n)
        fs.copy(src_path, dst_path)
        fs.invalidate_cache(dst_path)
        return dst_n
    with tempfile.TemporaryDirectory(prefix="sadtalker-copy-") as tmp:
        return upload(download(src_n, tmp), dst_n)


# ---------------------------------------------------------------------------------------------------------
# Local copies and hashes


def download(uri: str, dest_dir: str | os.PathLike[str]) -> Path:
    """Copy ``uri`` into local folder ``dest_dir`` (keeping its file name); returns the local path."""
    fs, path = filesystem(uri)
    target = Path(dest_dir) / (posixpath.basename(path.rstrip("/")) or "file")
    if target.exists():  # two inputs with one name: keep both
        target = target.with_name(f"{uuid.uuid4().hex[:8]}-{target.name}")
    fs.get_file(path, os.fspath(target))
    return target


def localize(uri: str, dest_dir: str | os.PathLike[str]) -> Path:
    """A local path with the content of ``uri``: local files as they are (no copy), others downloaded."""
    return Path(local_path(uri)) if is_local(uri) else download(uri, dest_dir)


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a local file: the project's one helper (``sadtalker.weights.download``, streamed,
    cached per path, size and mtime)."""
    from sadtalker.weights.download import sha256_file as _sha256_file

    return _sha256_file(path)


def sha256_uri(uri: str) -> str:
    """SHA-256 (hex) of the content at ``uri``, streamed in 1 MiB chunks."""
    fs, path = filesystem(uri)
    digest = hashlib.sha256()
    with fs.open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def scratch_dir(prefix: str = "sadtalker-task-") -> Iterator[Path]:
    """A local temporary folder, removed on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


# ---------------------------------------------------------------------------------------------------------
# Redaction

#: Environment variables whose values are secrets wherever they appear.
SECRET_ENV_VARS: tuple[str, ...] = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "FSSPEC_S3_KEY",
    "FSSPEC_S3_SECRET",
    "FSSPEC_S3_TOKEN",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "PREFECT_API_KEY",
)
_SECRET_NAME = re.compile(
    r"(secret|password|passwd|token|credential|signature|api[_-]?key|access[_-]?key|account[_-]?key|"
    r"authorization|^key$|^sas$)",
    re.IGNORECASE,
)
_MASK = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s'\"]+@")
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&](?:X-Amz-(?:Signature|Credential|Security-Token)|Signature|AWSAccessKeyId|sig|se|"
    r"token|access_token|x-goog-signature|x-goog-credential))=(?P<value>[^&\s'\"]+)",
    re.IGNORECASE,
)
#: AWS access key ids (long-term AKIA, temporary ASIA, and the other documented prefixes).
_AWS_KEY_ID = re.compile(
    r"(?<![A-Z0-9])(?:AKIA|ASIA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"
)
#: ``Authorization: <scheme> <credentials>`` (header lines, dict reprs): everything up to the end of the
#: value goes, AWS SigV4's ``Credential=..., Signature=...`` included.
_AUTHORIZATION = re.compile(
    r"(?P<name>\b(?:proxy-)?authorization['\"]?\s*[:=]\s*)(?P<quote>['\"]?)"
    r"(?P<scheme>(?:Bearer|Basic|Digest|Token|Negotiate|AWS4-HMAC-SHA256|AWS)\s+)?(?P<value>[^'\"\r\n]+)",
    re.IGNORECASE,
)
# A name counts only where a setting starts: not inside a path (``/etc/passwd``, ``C:\keys\key``) and not as
# part of a longer word (``face_key``, ``tokens``).
_NAME_START = r"(?<![\w/\\.])"
#: Names that only ever name credentials: any value after ``=`` or ``:`` is one.
_CREDENTIAL_NAMES = (
    r"aws_secret_access_key|aws_session_token|aws_security_token|aws_access_key_id|secret_access_key|"
    r"session_token|security[_-]token|x-amz-security-token|access_key|secret_key|api[_-]?key|account_key|"
    r"sas_token|client_secret|access_token|refresh_token|auth_token"
)
#: Ordinary words that also name credentials: ``secret=x``, ``--password=x``, ``"token": "x"`` are
#: credentials; ``the secret: nothing here``, ``invalid token: expected a string`` are not.
_WORD_NAMES = r"secret|token|password|passwd|pwd|key"
_WORD_NAMES_COLON = r"secret|token|password|passwd|pwd"  # ``cache key: 3f2a9c...`` names a digest
# A value: quoted (anything up to the closing quote, spaces included) or a bare token.
_VALUE = r"(?:(?P<quote>['\"])(?P<quoted>[^'\"\r\n]*)(?P=quote)|(?P<bare>[^'\"\s,;}&]+))"
_ASSIGNED_SECRET = re.compile(
    rf"(?P<name>{_NAME_START}['\"]?(?:{_CREDENTIAL_NAMES})['\"]?\s*[:=]\s*){_VALUE}", re.IGNORECASE
)
_WORD_ASSIGNED = re.compile(
    rf"(?P<name>{_NAME_START}['\"]?(?:{_WORD_NAMES})['\"]?\s*=\s*){_VALUE}", re.IGNORECASE
)
# ``"token": "x"`` / ``token: 'x'`` (JSON, dict reprs, YAML): a quoted value after a colon.
_WORD_QUOTED_VALUE = re.compile(
    rf"(?P<name>{_NAME_START}['\"]?(?:{_WORD_NAMES})['\"]?\s*:\s*)(?P<quote>['\"])(?P<quoted>[^'\"\r\n]*)(?P=quote)",
    re.IGNORECASE,
)
# ``token: abc123def`` / ``Password: hunter22``: an unquoted value after a colon is a credential only when
# it looks like one (letters with digits or symbols, 6+ characters), not a word of a sentence or a path.
_WORD_COLON = re.compile(
    rf"(?P<name>{_NAME_START}['\"]?(?:{_WORD_NAMES_COLON})['\"]?\s*:\s*)(?P<bare>[^\s'\",;}}&]+)",
    re.IGNORECASE,
)


# Cheap pre-check: every pattern below needs one of these substrings (plain ``in`` tests, far cheaper than
# running the patterns on the ordinary text that makes up nearly everything that is logged).
_TRIGGER_WORDS = (
    "secret",
    "token",
    "passw",
    "pwd",
    "key",
    "credential",
    "authorization",
    "signature",
    "sig=",
)
_KEY_ID_PREFIXES = ("AKIA", "ASIA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "AGPA", "ABIA", "ACCA")


def _may_hold_secret(text: str) -> bool:
    if "@" in text or "?" in text or "&" in text or any(p in text for p in _KEY_ID_PREFIXES):
        return True
    low = text.lower()
    return any(word in low for word in _TRIGGER_WORDS)


def _masked(match: re.Match[str]) -> str:
    quote = match.groupdict().get("quote") or ""
    return f"{match.group('name')}{quote}{_MASK}{quote}"


def _looks_like_credential(value: str) -> bool:
    value = value.rstrip(".)]")
    if len(value) < 6 or value.startswith(("/", "./", "../", "~", "\\")) or "://" in value:
        return False
    has_letter = any(c.isalpha() for c in value)
    has_other = any(c.isdigit() or not c.isalnum() for c in value)
    return has_letter and has_other and "_" not in value.strip("_")


def _secret_values() -> list[str]:
    values = [os.environ.get(name, "") for name in SECRET_ENV_VARS]
    return sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)


def _replace_value(text: str, secret: str) -> str:
    """Replace a configured secret value. A long one (12+ characters) goes wherever it appears; a short one
    (a test server's ``test`` key) only as a token of its own, not inside a word, path or file name."""
    if secret not in text:
        return text
    if len(secret) >= 12:
        return text.replace(secret, _MASK)
    return re.sub(rf"(?<![\w./\\-]){re.escape(secret)}(?![\w/\\-]|\.\w)", _MASK, text)


def redact(value: Any) -> Any:
    """``value`` with credentials replaced by ``***``: use it on everything that is logged or stored.

    Strings lose: user:password in URLs, signed-URL query parameters, AWS access key ids, ``Authorization``
    header values, credential assignments (``secret=...``, ``aws_secret_access_key: ...``,
    ``"token": "..."``, ``Password: hunter22``) and any literal value of the variables in
    :data:`SECRET_ENV_VARS`. Ordinary text keeps its words: a path (``/etc/passwd: not an image``) or a
    sentence (``invalid token: expected a string``) is not an assignment. Mappings lose the values of
    secret-looking keys (``secret``, ``key``, ``token``, ``password``, ...); lists, tuples and nested
    mappings are redacted recursively; other values are returned as they are.
    """
    if isinstance(value, str):
        text = value
        for secret in _secret_values():
            text = _replace_value(text, secret)
        if not _may_hold_secret(text):
            return text  # nothing below could match
        text = _URL_USERINFO.sub(lambda m: f"{m.group('scheme')}{_MASK}@", text)
        text = _QUERY_SECRET.sub(lambda m: f"{m.group('name')}={_MASK}", text)
        text = _AUTHORIZATION.sub(
            lambda m: f"{m.group('name')}{m.group('quote')}{m.group('scheme') or ''}{_MASK}", text
        )
        text = _AWS_KEY_ID.sub(_MASK, text)
        text = _ASSIGNED_SECRET.sub(_masked, text)
        text = _WORD_ASSIGNED.sub(_masked, text)
        text = _WORD_QUOTED_VALUE.sub(_masked, text)
        return _WORD_COLON.sub(
            lambda m: m.group("name") + _MASK if _looks_like_credential(m.group("bare")) else m.group(0), text
        )
    if isinstance(value, Mapping):
        return {
            k: (_MASK if isinstance(k, str) and _SECRET_NAME.search(k) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


_FACTORY_LOCK = threading.Lock()
_factory_installed = False


def install_log_redaction() -> None:
    """Pass every log record of this process through :func:`redact` (idempotent).

    Wraps the logging record factory, so it covers every logger and handler (Prefect's console and API
    handlers included): the message is rendered and redacted, and a traceback that would show a secret is
    replaced by its redacted text.
    """
    global _factory_installed
    with _FACTORY_LOCK:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # a broken format string: leave it to the handler to report
                return record
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, ()
            if record.exc_info and record.exc_info[1] is not None:
                text = "".join(traceback.format_exception(*record.exc_info))
                clean_tb = redact(text)
                if clean_tb != text:
                    record.exc_info, record.exc_text = None, clean_tb.rstrip("\n")
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True
