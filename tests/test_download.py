"""fetch() against a real HTTP server on 127.0.0.1: resume, retries, fallback, verification, caching."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sadtalker.errors import DownloadError, WeightsError
from sadtalker.weights.__main__ import main as weights_main
from sadtalker.weights.download import fetch, redact_url, verify
from sadtalker.weights.registry import WeightFile

pytestmark = pytest.mark.timeout(60)

PAYLOAD = bytes((i * 7919 + i // 251) % 256 for i in range(200_000))
SHA = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"progress": False, "backoff": 0.01, "timeout": 5}


@dataclass
class Request:
    path: str
    range: str | None
    status: int = 0


@dataclass
class App:
    """Routes: path → behaviour(handler, n) where n counts earlier requests to that path; a behaviour
    sets ``handler.record.status`` before it sends anything (the client may finish before the handler)."""

    routes: dict[str, Callable[[BaseHTTPRequestHandler, int], int]] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]


def serve_bytes(
    handler: BaseHTTPRequestHandler, body: bytes, *, honour_range: bool = True, cut: int | None = None
) -> int:
    """Send ``body`` (206 for a Range request when honoured); ``cut``: send that many bytes, then close."""
    start = 0
    spec = handler.headers.get("Range")
    if honour_range and spec and spec.startswith("bytes="):
        start = int(spec[6:].split("-")[0])
    if start >= len(body) and start > 0:
        handler.record.status = 416  # type: ignore[attr-defined]
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{len(body)}")
        handler.end_headers()
        return 416
    status = 206 if start else 200
    handler.record.status = status  # type: ignore[attr-defined]  # before the body: the client may be done first
    handler.send_response(status)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", str(len(body) - start))
    if start:
        handler.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
    handler.end_headers()
    chunk = body[start:] if cut is None else body[start : start + cut]
    handler.wfile.write(chunk)
    handler.wfile.flush()
    handler.close_connection = True
    return status


def error(handler: BaseHTTPRequestHandler, code: int) -> int:
    handler.record.status = code  # type: ignore[attr-defined]
    handler.send_response(code)
    handler.send_header("Content-Length", "0")
    handler.end_headers()
    return code


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a cut body is a closed socket

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        app: App = self.server.app  # type: ignore[attr-defined]
        path = self.path.split("?")[0]
        with app.lock:
            n = len(app.hits(path))
            self.record = Request(path, self.headers.get("Range"))
            app.log.append(self.record)
        behaviour = app.routes.get(path)
        if behaviour:
            behaviour(self, n)
        else:
            error(self, 404)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[tuple[App, str]]:
    """A threaded HTTP server on an ephemeral loopback port; stops itself after 60 s in any case."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    app = App()
    httpd.app = app  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, httpd.shutdown)
    watchdog.daemon = True
    watchdog.start()
    try:
        yield app, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        watchdog.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def weight(*urls: str, sha256: str | None = SHA, size: int | None = len(PAYLOAD)) -> WeightFile:
    return WeightFile(name="model.bin", urls=urls, sha256=sha256, size=size)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_good_file(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    app.routes["/model.bin"] = lambda h, n: serve_bytes(h, PAYLOAD)
    path = fetch(weight(f"{base}/model.bin"), tmp_path, **FAST)
    assert path == tmp_path / "model.bin"
    assert path.read_bytes() == PAYLOAD
    assert leftovers(tmp_path) == ["model.bin"]
    assert len(app.log) == 1


def test_truncated_transfer_is_resumed_with_range(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    half = len(PAYLOAD) // 2
    app.routes["/model.bin"] = lambda h, n: serve_bytes(h, PAYLOAD, cut=half if n == 0 else None)
    path = fetch(weight(f"{base}/model.bin"), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    first, second = app.hits("/model.bin")
    assert (first.range, first.status) == (None, 200)
    assert (second.range, second.status) == (f"bytes={half}-", 206)
    assert leftovers(tmp_path) == ["model.bin"]


def test_server_ignoring_range_restarts_from_zero(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    (tmp_path / "model.bin.partial").write_bytes(b"stale bytes from an older attempt")
    app.routes["/model.bin"] = lambda h, n: serve_bytes(h, PAYLOAD, honour_range=False)
    path = fetch(weight(f"{base}/model.bin"), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert app.log[0].range is not None and app.log[0].status == 200


def test_wrong_hash_is_refused_and_deleted(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    app.routes["/model.bin"] = lambda h, n: serve_bytes(h, PAYLOAD)
    expected = "0" * 64
    with pytest.raises(WeightsError) as info:
        fetch(weight(f"{base}/model.bin", sha256=expected), tmp_path, **FAST)
    assert not isinstance(info.value, DownloadError)
    assert expected in str(info.value) and SHA in str(info.value)
    assert leftovers(tmp_path) == []


def test_wrong_size_is_refused(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    app.routes["/model.bin"] = lambda h, n: serve_bytes(h, PAYLOAD[:-1])
    with pytest.raises(WeightsError, match="size mismatch"):
        fetch(weight(f"{base}/model.bin", sha256=None), tmp_path, **FAST)
    assert leftovers(tmp_path) == []


def test_server_error_is_retried(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    app.routes["/model.bin"] = lambda h, n: error(h, 500) if n == 0 else serve_bytes(h, PAYLOAD)
    path = fetch(weight(f"{base}/model.bin"), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert [r.status for r in app.log] == [500, 200]


def test_persistent_server_error_gives_up_after_retries(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    app.routes["/model.bin"] = lambda h, n: error(h, 503)
    with pytest.raises(DownloadError) as info:
        fetch(weight(f"{base}/model.bin"), tmp_path, retries=2, **FAST)
    assert info.value.transient
    assert len(app.log) == 3


def test_404_fails_at_once_without_retries_or_secrets(
    server: tuple[App, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app, base = server
    url = f"{base}/missing.bin?X-Amz-Signature=s3cr3t&token=s3cr3t"
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadError) as info:
        fetch(weight(url), tmp_path, progress=False, retries=4, backoff=5.0, timeout=5)
    assert time.monotonic() - started < 2.0  # a retry would have slept 5 s
    assert len(app.log) == 1
    message = str(info.value)
    assert f"{base}/missing.bin" in message and "404" in message
    assert not info.value.transient
    assert "s3cr3t" not in message and "s3cr3t" not in caplog.text
    assert leftovers(tmp_path) == []


def test_second_url_is_tried(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    app.routes["/mirror/model.bin"] = lambda h, n: serve_bytes(h, PAYLOAD)
    path = fetch(weight(f"{base}/gone/model.bin", f"{base}/mirror/model.bin"), tmp_path, **FAST)
    assert path.read_bytes() == PAYLOAD
    assert [r.path for r in app.log] == ["/gone/model.bin", "/mirror/model.bin"]


def test_cached_file_is_verified_not_downloaded(server: tuple[App, str], tmp_path: Path) -> None:
    app, base = server
    app.routes["/model.bin"] = lambda h, n: serve_bytes(h, PAYLOAD)
    (tmp_path / "model.bin").write_bytes(PAYLOAD)
    assert fetch(weight(f"{base}/model.bin"), tmp_path, **FAST) == tmp_path / "model.bin"
    assert app.log == []
    # A corrupt cached copy is never returned: it is replaced by a fresh, verified download.
    (tmp_path / "model.bin").write_bytes(b"x" * len(PAYLOAD))
    assert fetch(weight(f"{base}/model.bin"), tmp_path, **FAST).read_bytes() == PAYLOAD
    assert len(app.log) == 1


def test_verify_and_redact(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    verify(path, SHA.upper())
    with pytest.raises(WeightsError, match="expected 0{64}, got " + SHA):
        verify(path, "0" * 64)
    assert redact_url("https://u:pw@host:8443/a/b.bin?sig=1#frag") == "https://host:8443/a/b.bin"


def test_cli_list_and_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert weights_main(["list", "--dest", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SadTalker_V0.0.2_256.safetensors" in out and "present" in out
    assert weights_main(["fetch", "no-such-file", "--dest", str(tmp_path)]) == 2
