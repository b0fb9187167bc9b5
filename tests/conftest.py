"""Shared fixtures: the real speech in ../shared/data, and a real server on loopback."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _serve_logging_undone() -> Iterator[None]:
    """A test that runs ``python -m streaming serve`` in this process (to see a start fail)
    gives the root logger a handler on the stderr pytest captured for that test: servers of
    later tests, still running in their threads, would log to that closed stream. Only that
    handler (``logs.configure``'s, with its :class:`SessionFilter`) is taken off: pytest's own
    come and go with each phase of a test."""
    from streaming.logs import SessionFilter

    root = logging.getLogger()
    level = root.level
    yield
    ours = [h for h in root.handlers if any(isinstance(f, SessionFilter) for f in h.filters)]
    if ours:
        for handler in ours:
            root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "manifest.jsonl").exists():
        pytest.fail(f"the speech data is missing: expected {DATA} (see DEVELOPERS.md)")
    return DATA


@pytest.fixture(scope="session")
def manifest(data_dir: Path) -> dict[str, dict[str, Any]]:
    entries = (json.loads(line) for line in (data_dir / "manifest.jsonl").read_text().splitlines())
    return {e["audio"]: e for e in entries}


@dataclass
class RunningServer:
    host: str
    port: int

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/stream"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.contextmanager
def running_server(**settings: Any) -> Iterator[RunningServer]:
    """The real service (real model, real VAD) on a free loopback port, in a thread."""
    import uvicorn

    from streaming.app import create_app
    from streaming.cli import uvicorn_config
    from streaming.config import Config
    from streaming.testing import wait_until_healthy

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = Config(port=port, **{"log_level": "warning", **settings})
    server = uvicorn.Server(uvicorn_config(config, create_app(config)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        if not wait_until_healthy(f"http://127.0.0.1:{port}"):
            pytest.fail("the server did not become healthy within 120 s")
        yield RunningServer("127.0.0.1", port)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    with running_server() as running:
        yield running


API_KEY = "a-test-key"


@pytest.fixture(scope="session")
def keyed_server() -> Iterator[RunningServer]:
    """The real service with an API key: the vendors' clients send theirs."""
    with running_server(api_key=(API_KEY,)) as running:
        yield running
