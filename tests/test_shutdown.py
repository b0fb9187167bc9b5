"""SIGTERM drains: open streams get their final, new ones are refused, the server exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest
import websockets

from clients.stream import read_audio, stream_file
from streaming.testing import free_port, serve_process
from tests.schema import validate_message

pytestmark = pytest.mark.model
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("sig", "drain"), [(signal.SIGTERM, "2"), (signal.SIGINT, "30")])
def test_a_signal_drains_open_streams_into_their_finals(data_dir: Path, sig: int, drain: str) -> None:
    port = free_port()
    process = serve_process(port, "--drain-timeout", drain, cwd=str(ROOT))
    url = f"ws://127.0.0.1:{port}/v1/stream"
    recording = read_audio(data_dir / "long/sonnet_librivox.flac")

    async def scenario() -> tuple[object, str | None]:
        stream = asyncio.create_task(stream_file(url, recording, realtime=True))
        await asyncio.sleep(8.0)
        os.kill(process.pid, sig)
        await asyncio.sleep(0.5)
        if sig == signal.SIGTERM:  # within the 2 s grace the server still answers, not admitting
            readiness = await asyncio.to_thread(httpx.get, f"http://127.0.0.1:{port}/ready")
            assert readiness.status_code == 503
            assert readiness.json()["draining"] is True
        refused = None
        try:
            async with websockets.connect(url) as ws:
                refused = str(await ws.recv())
        except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed):
            refused = "not accepted"
        return await stream, refused

    try:
        result, refused = asyncio.run(scenario())
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert refused == "not accepted" or '"shutting_down"' in refused
    for message in result.messages:  # type: ignore[attr-defined]
        validate_message(message)
    assert [e["code"] for e in result.errors] == ["shutting_down"]  # type: ignore[attr-defined]
    assert result.close_code == 1001  # type: ignore[attr-defined]
    final = result.final  # type: ignore[attr-defined]
    # The first ~8 s of the sonnet reading were sent: their words are in the final.
    assert "fairest creatures" in final["transcription"].lower()
