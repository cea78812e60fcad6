"""Finding 9: redaction removes every credential and leaves ordinary text (paths, sentences, errors) alone."""

from __future__ import annotations

import pytest

from sadtalker.redaction import redact

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"

# (text, substrings that must not survive)
TRUE_POSITIVES = [
    ("failed s3://AKIAXX:topsecret@bucket/x.png", ["AKIAXX", "topsecret"]),
    ("postgresql://bob:pa55w0rd@db.internal/x", ["bob", "pa55w0rd"]),
    ("https://h/o?X-Amz-Signature=abc123&X-Amz-Credential=AKIDX%2F2024&x=1", ["abc123", "AKIDX"]),
    ("leaked AKIAIOSFODNN7EXAMPLE in a message", ["AKIAIOSFODNN7EXAMPLE"]),
    ("temporary id ASIAY34FZKBOKMUTVV7A here", ["ASIAY34FZKBOKMUTVV7A"]),
    ("secret=abc123def", ["abc123def"]),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzzzz", ["wJalrXUtnFEMI"]),
    ("aws_secret_access_key: plainletterssecret", ["plainletterssecret"]),
    ("token: abc123def", ["abc123def"]),
    ("Password: hunter22", ["hunter22"]),
    ("--password=hunter2 --user bob", ["hunter2"]),
    ("'token': 'tok123'", ["tok123"]),
    ('{"password": "correct horse battery"}', ["correct horse"]),
    ('{"api_key": "k-77"}', ["k-77"]),
    ("x-amz-security-token: FQoGZXIvYXdzEXAMPLE123", ["FQoGZXIvYXdzEXAMPLE123"]),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOjF9.sig", ["eyJhbGciOiJIUzI1NiJ9", ".sig"]),
    ("authorization: Basic Ym9iOnB3", ["Ym9iOnB3"]),
    (
        "{'Authorization': 'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/s3/"
        "aws4_request, SignedHeaders=host;x-amz-date, Signature=fe5f80f77d5fa3beca038a248ff027'}",
        ["AKIAIOSFODNN7EXAMPLE", "fe5f80f77d5fa3beca038a248ff027"],
    ),
    (f"boto: bad key {SECRET} for bucket", [SECRET]),
    (f"quoted '{SECRET[:20]}' prefix is not the secret", []),  # only whole configured values are secrets
]

# Ordinary messages that must come back unchanged.
FALSE_POSITIVES = [
    "/etc/passwd: not an image",
    "C:\\etc\\passwd: not an image",
    "s3://bucket/secrets/token: file not found",
    "/data/keys/key: cannot identify image file",
    "photos/secret_santa.png: no face found",
    "invalid token: expected a string",
    "the secret: nothing here",
    "missing key: row_id",
    "expected 'key': got None",
    "Password must be at least 8 characters",
    "token: unexpected end of input at line 3",
    "KeyError: 'token'",
    "face_key=0123abcd row ok",
    "tokens=5 keys=3 secrets=0",
    "row 3 (alice), id: duplicate id (also in row 4)",
    "plain /data/x.png",
    "https://example.com/docs#token and https://example.com/a?page=2",
    "Authorization failed: the server refused the request",
    "AudioError: /in/speech.wav: too long: 3700.0 s > the maximum of 3600 s",
    'ffmpeg: "Invalid data found when processing input"',
    "test.png: not an image",
    "render key: 3f2a9c0d1e55b7a1 reused",
]


@pytest.fixture(autouse=True)
def configured_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")  # a short configured value: a common word


@pytest.mark.parametrize(("text", "leaks"), TRUE_POSITIVES, ids=range(len(TRUE_POSITIVES)))
def test_every_credential_is_removed(text: str, leaks: list[str]) -> None:
    clean = redact(text)
    for leaked in leaks:
        assert leaked not in clean, clean
    if leaks:
        assert "***" in clean


@pytest.mark.parametrize("text", FALSE_POSITIVES)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_short_configured_values_are_removed_as_whole_words_only() -> None:
    assert redact("key id test rejected") == "key id *** rejected"
    assert redact("latest contest.png") == "latest contest.png"


def test_records_keep_ordinary_keys() -> None:
    record = {"password": "x", "error": "/etc/passwd: not an image", "key_frames": 3, "face_key": "ab12"}
    assert redact(record) == {
        "password": "***",
        "error": "/etc/passwd: not an image",
        "key_frames": 3,
        "face_key": "ab12",
    }
