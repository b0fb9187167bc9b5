"""The server's logs as a log pipeline reads them: ``--log-format json`` from a real server
process, with a real stream, an API key and a resume token in the query string."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import websockets

from clients.stream import read_audio
from streaming import logs
from streaming.testing import free_port, wait_until_healthy

KEY = "a-key-that-must-not-be-logged"


def test_json_lines_carry_the_session_and_no_key_or_token(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "streaming", "serve", "--port", str(port), "--log-format", "json"]
    flags = ["--log-levels", "uvicorn.access=warning", "--api-key", KEY]
    with (tmp_path / "server.log").open("w+b") as stderr:
        server = subprocess.Popen([*command, *flags], stderr=stderr)
        try:
            assert wait_until_healthy(f"http://127.0.0.1:{port}")
            clip = read_audio(data_dir / "read/jfk.flac")
            pcm = (clip.samples[:, 0] * 32767).astype("<i2").tobytes()
            url = f"ws://127.0.0.1:{port}/v1/stream?resumable=true&token={KEY}"
            ready = asyncio.run(stream(url, pcm))
        finally:
            server.terminate()
            server.wait(timeout=60)
        stderr.seek(0)
        text = stderr.read().decode()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    assert KEY not in text
    assert ready["resume_token"] not in text
    ours = [line for line in lines if line.get("session_id") == ready["session_id"]]
    messages = [line["message"] for line in ours]
    assert any("opened on /v1/stream" in m for m in messages)
    assert any("closed with 1000" in m for m in messages)
    assert all(
        set(line) <= {"time", "level", "logger", "message", "session_id", "exception"} for line in lines
    )
    handshakes = [line["message"] for line in lines if "WebSocket /v1/stream" in line["message"]]
    assert handshakes
    assert all("token=[redacted]" in m for m in handshakes)
    assert not any(line["logger"] == "uvicorn.access" for line in lines)  # its level: warning


async def stream(url: str, pcm: bytes) -> dict[str, Any]:
    async with websockets.connect(url) as ws:
        ready: dict[str, Any] = json.loads(await ws.recv())
        for offset in range(0, len(pcm), 6400):
            await ws.send(pcm[offset : offset + 6400])
        await ws.send(json.dumps({"type": "end"}))
        async for raw in ws:
            if json.loads(raw)["type"] == "final":
                break
    return ready


def test_the_session_id_goes_on_the_lines_of_its_tasks_only() -> None:
    formatter = logs.JsonFormatter()
    tagger = logs.SessionFilter()

    def line(message: str) -> dict[str, Any]:
        record = logging.LogRecord("streaming.transport", logging.INFO, __file__, 1, message, None, None)
        tagger.filter(record)
        return json.loads(formatter.format(record))  # type: ignore[no-any-return]

    async def in_a_stream() -> tuple[dict[str, Any], dict[str, Any]]:
        logs.session_id.set("abc123")
        inherited = await asyncio.create_task(asyncio.sleep(0, result=line("from a task it started")))
        return line("from the stream"), inherited

    here, inherited = asyncio.run(in_a_stream())
    assert here["session_id"] == inherited["session_id"] == "abc123"
    assert "session_id" not in line("outside any stream")
