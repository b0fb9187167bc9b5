"""Three real replicas (``python -m streaming serve``) behind a real HAProxy (Debian's package)
running deploy/haproxy.cfg as shipped, on loopback: streams spread over the replicas, a full
fleet refuses in our protocol, and a replica stopped mid-stream finishes its streams while new
ones go to the others. Then the same replicas behind a real nginx running deploy/nginx.conf."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.stream import StreamResult, read_audio, stream_file
from streaming.testing import wait_until_healthy
from tests import balancers
from tests.balancers import Fleet, wait_for
from tests.proxy import CuttingProxy
from tests.wer import wer

pytestmark = pytest.mark.model

PER_REPLICA = 4  # max_sessions of each replica
# Twelve LJ Speech clips of 3 to 5 s (short: twelve real-time streams share two cores here).
CLIPS = [f"ljspeech/LJ001-{n:04d}.flac" for n in (43, 84, 95, 37, 54, 94, 114, 135, 79, 11, 81, 53)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    flags = ("--max-sessions", str(PER_REPLICA), "--drain-timeout", "60", "--workers", "1")
    with balancers.fleet(tmp_path_factory.mktemp("haproxy"), *flags) as found:
        yield found


def _transcript(result: StreamResult) -> str:
    assert result.final is not None, result.messages[-3:]
    return str(result.final["transcription"])


async def _stream(url: str, clip: Path, *, delay: float = 0.0) -> StreamResult:
    await asyncio.sleep(delay)
    return await stream_file(url, read_audio(clip), realtime=True, resume=True)


async def test_twelve_streams_spread_evenly_and_a_thirteenth_is_refused_server_full(
    fleet: Fleet, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    before = fleet.sessions()
    clips = [data_dir / c for c in CLIPS]
    streams = [asyncio.create_task(_stream(fleet.url, clip)) for clip in clips]
    # Every replica is full once all twelve are open: its /ready says 503, HAProxy takes it out,
    # and the thirteenth goes to the "alive" backend, whose replica refuses it in our protocol.
    await asyncio.to_thread(
        wait_for, lambda: all(fleet.status(n) == "DOWN" for n in fleet.replicas), 15, "a full fleet"
    )
    spread = {n: fleet.sessions()[n] - before[n] for n in fleet.replicas}
    assert spread == dict.fromkeys(fleet.replicas, PER_REPLICA)
    extra = await stream_file(fleet.url, read_audio(clips[0]), realtime=True)
    assert [e["code"] for e in extra.errors] == ["server_full"]
    assert extra.close_code == 1013

    results = await asyncio.gather(*streams)
    for clip, result in zip(CLIPS, results, strict=True):
        assert result.close_code == 1000
        assert wer(manifest[clip]["text"], _transcript(result)) < 0.25, (clip, _transcript(result))


async def test_a_dropped_stream_resumes_on_its_own_replica_through_haproxy(
    fleet: Fleet, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    # A resumable stream, cut twice between the client and HAProxy, its replica taking no new
    # streams meanwhile (drained by hand: as if it were full): each resume must still reach
    # that replica (any other refuses it, resume_failed). HAProxy learns where the stream is
    # from the handshake's X-Session-Id.
    clip = "ljspeech/LJ001-0001.flac"  # 9.7 s
    before = fleet.sessions()
    async with CuttingProxy(int(fleet.url.rsplit(":", 1)[1].split("/")[0])) as proxy:
        stream = asyncio.create_task(_stream(f"ws://127.0.0.1:{proxy.port}/v1/stream", data_dir / clip))
        await asyncio.to_thread(wait_for, lambda: fleet.sessions() != before, 10, "the stream's replica")
        holder = next(n for n, count in fleet.sessions().items() if count > before[n])
        fleet.set_state(holder, "drain")
        try:
            for _ in range(2):
                await asyncio.sleep(2.5)
                proxy.cut()
            result = await stream
        finally:
            fleet.set_state(holder, "ready")
    assert result.errors == [], result.errors
    assert result.resumes == 2
    assert result.close_code == 1000
    assert wer(manifest[clip]["text"], _transcript(result)) < 0.2, _transcript(result)
    taken = {n: fleet.sessions()[n] - before[n] for n in fleet.replicas}
    assert taken == {n: 3 if n == holder else 0 for n in fleet.replicas}  # the stream, two resumes


async def test_nginx_as_shipped_proxies_streams_and_whole_files(
    fleet: Fleet, data_dir: Path, manifest: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    with balancers.nginx(fleet.ports, tmp_path) as address:
        clips = CLIPS[:3]
        results = await asyncio.gather(
            *(
                _stream(f"ws://{address}/v1/stream", data_dir / clip, delay=0.2 * i)
                for i, clip in enumerate(clips)
            )
        )
        for clip, result in zip(clips, results, strict=True):
            assert result.close_code == 1000
            assert wer(manifest[clip]["text"], _transcript(result)) < 0.25, _transcript(result)
            assert [m["type"] for m in result.messages].count("segment") >= 1
        blob = (data_dir / CLIPS[3]).read_bytes()
        async with httpx.AsyncClient(timeout=120) as http:
            response = await http.post(
                f"http://{address}/predict", json={"audio": base64.b64encode(blob).decode()}
            )
        assert response.status_code == 200, response.text
        assert wer(manifest[CLIPS[3]]["text"], response.json()["transcription"]) < 0.25
    access = (tmp_path / "access.log").read_text()
    assert access.count('"GET /v1/stream') == 3
    assert " 101 " in access


async def test_a_replica_stopped_mid_stream_finishes_its_streams_and_new_ones_go_elsewhere(
    fleet: Fleet, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    await asyncio.to_thread(
        wait_for, lambda: all(fleet.status(n) == "UP" for n in fleet.replicas), 15, "a fleet with room"
    )
    clip = "ljspeech/LJ001-0001.flac"  # 9.7 s
    before = fleet.sessions()
    first = [asyncio.create_task(_stream(fleet.url, data_dir / clip)) for _ in range(3)]
    await asyncio.to_thread(
        wait_for, lambda: all(fleet.sessions()[n] > before[n] for n in fleet.replicas), 10, "one stream each"
    )
    await asyncio.sleep(2.0)  # mid-stream
    # r2 and r3 taken out by hand (their streams go on): a new stream can only reach r1 now.
    for name in ("r2", "r3"):
        fleet.set_state(name, "maint")
    stopped = fleet.replicas["r1"]
    signalled = time.monotonic()
    stopped.send_signal(signal.SIGTERM)
    at_stop = fleet.sessions()
    # The stopping replica refuses it (shutting_down), whether HAProxy has seen the drain yet or
    # not, and the client starts it again until another replica takes it: nothing is lost.
    refused = asyncio.create_task(_stream(fleet.url, data_dir / CLIPS[0]))
    await asyncio.to_thread(wait_for, lambda: fleet.status("r1") != "UP", 5, "r1 out of the rotation")
    out_after = time.monotonic() - signalled
    await asyncio.sleep(0.3)
    for name in ("r2", "r3"):
        fleet.set_state(name, "ready")
    started = [refused] + [
        asyncio.create_task(_stream(fleet.url, data_dir / CLIPS[i], delay=0.1 * i)) for i in (1, 2)
    ]

    results = await asyncio.gather(*first)
    for result in results:  # the stopping replica's stream too: nothing lost
        assert result.close_code == 1000
        assert wer(manifest[clip]["text"], _transcript(result)) < 0.2, _transcript(result)
    later = await asyncio.gather(*started)
    for i, result in enumerate(later):
        assert result.close_code == 1000
        assert wer(manifest[CLIPS[i]]["text"], _transcript(result)) < 0.25, _transcript(result)
    assert later[0].restarts >= 1
    exit_code = await asyncio.to_thread(stopped.wait, 60)
    assert exit_code == 0
    after = fleet.sessions()
    # r1 may have been offered a new stream before HAProxy saw it drain; it took none.
    taken = {n: after[n] - at_stop[n] for n in fleet.replicas}
    assert taken["r2"] + taken["r3"] == 3
    assert out_after < 1.0, f"r1 left the rotation {out_after:.2f} s after SIGTERM"
    assert not wait_until_healthy(f"http://127.0.0.1:{fleet.ports['r1']}", timeout=0.5)
