"""Helpers for tests and benchmarks that run the real server (shipped deliberately, like
``trio.testing``): a free loopback port, a server process, and waiting until it is healthy."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_healthy(base_url: str, timeout: float = 120.0) -> bool:
    """Poll ``/healthcheck`` until it answers 200 (the model is loaded) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base_url}/healthcheck", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    return False


def serve_process(port: int, *flags: str, cwd: str | None = None) -> subprocess.Popen[bytes]:
    """``python -m streaming serve`` on ``port``, returned once healthy."""
    process = subprocess.Popen(
        [sys.executable, "-m", "streaming", "serve", "--port", str(port), "--log-level", "warning", *flags],
        cwd=cwd,
    )
    if not wait_until_healthy(f"http://127.0.0.1:{port}"):
        process.kill()
        raise RuntimeError(f"the server on port {port} did not become healthy")
    return process
