"""Credential redaction: :func:`redact` removes secrets from any text or record before it is logged or stored.

The pipeline applies it to every log line (:func:`install_log_redaction`, a hook on the logging record
factory), artifact and result it writes, and to error messages (``tasks.logs.redact_errors``). Credentials
themselves are never handled by this project: they stay with the SDKs' own chains (see
``sadtalker.storage``); this is for the places they leak into, e.g. a signed URL or a connection error.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Mapping
from typing import Any

__all__ = ["SECRET_ENV_VARS", "install_log_redaction", "redact"]

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
