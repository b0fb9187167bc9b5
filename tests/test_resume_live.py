"""Resumable streams for real: the real service and model, the Python client, and a real TCP
proxy on loopback that cuts the connection at random points and drops what is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from clients.stream import Recording, StreamResult, read_audio, stream_file
from tests.conftest import API_KEY, RunningServer, running_server
from tests.proxy import CuttingProxy
from tests.schema import unmarked, validate_message


@pytest.fixture(scope="module")
def speech(data_dir: Path) -> Recording:
    """The first 30 s of the 5-minute LJ Speech file: nine sentences, short pauses."""
    whole = read_audio(data_dir / "long/ljspeech_5min.flac")
    return Recording(whole.samples[: whole.sample_rate * 30], whole.sample_rate)


async def cut_while_streaming(
    server: RunningServer, speech: Recording, params: dict[str, str], cuts: int, seed: int
) -> tuple[StreamResult, CuttingProxy]:
    async with CuttingProxy(server.port) as proxy:
        rng = random.Random(seed)

        async def cutter() -> None:
            for _ in range(cuts):
                await asyncio.sleep(rng.uniform(0.6, 2.0))
                proxy.cut()

        cutting = asyncio.create_task(cutter())
        url = f"ws://127.0.0.1:{proxy.port}/v1/stream"
        result = await stream_file(url, speech, realtime=True, speed=3.0, params=params, resume=True)
        await cutting
    return result, proxy


def metric(server: RunningServer, line_start: str) -> float:
    with urllib.request.urlopen(f"{server.http_url}/metrics") as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start))


def segment_texts(result: StreamResult) -> str:
    return " ".join(m["segment"]["text"] for m in result.messages if m["type"] == "segment")


@pytest.fixture(scope="module")
def exact_server() -> Iterator[RunningServer]:
    """A server whose words depend on the audio alone: no eager finals (whether one is kept
    depends on when its decode came back, against the audio that followed)."""
    with running_server(eager_finals=False) as running:
        yield running


def test_a_stream_cut_again_and_again_transcribes_word_for_word_as_one_never_cut(
    exact_server: RunningServer, speech: Recording
) -> None:
    """Without partials and eager finals a stream's words depend on its audio alone (with
    them they also depend on when each decode came back, and two uncut runs differ): so the
    cut stream must give exactly the uncut stream's words."""
    server = exact_server
    params = {"interim_results": "false"}
    resumed_before = metric(server, 'streaming_resumes_total{outcome="resumed"}')
    uncut = asyncio.run(
        stream_file(server.ws_url, speech, realtime=True, speed=3.0, params=params, resume=True)
    )
    cut, proxy = asyncio.run(cut_while_streaming(server, speech, params, cuts=4, seed=7))
    assert proxy.cuts == 4
    assert cut.resumes == 4
    assert cut.errors == []
    assert cut.close_code == 1000
    assert uncut.final is not None
    assert cut.final is not None
    assert cut.final["transcription"] == uncut.final["transcription"]
    words = [(w["word"], w["start"], w["end"]) for w in cut.final["response"]["word_segments"]]
    assert words == [(w["word"], w["start"], w["end"]) for w in uncut.final["response"]["word_segments"]]
    for message in cut.messages:
        validate_message(message)
    # Each segment reached the client once: none lost in flight, none sent twice.
    assert unmarked(segment_texts(cut)) == unmarked(cut.final["transcription"])
    assert metric(server, 'streaming_resumes_total{outcome="resumed"}') - resumed_before == 4


def test_with_partials_a_cut_stream_loses_no_segment_and_repeats_none(
    server: RunningServer, speech: Recording
) -> None:
    cut, proxy = asyncio.run(cut_while_streaming(server, speech, {}, cuts=3, seed=11))
    assert cut.resumes == proxy.cuts == 3
    assert cut.final is not None
    assert cut.errors == []
    assert unmarked(segment_texts(cut)) == unmarked(cut.final["transcription"])
    assert any(m["type"] == "partial" for m in cut.messages)


def test_a_final_lost_in_flight_with_the_connection_comes_again_on_resume(
    server: RunningServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy drops the connection as the final passes: the client resumes a stream the
    server has closed, and gets the final again (and no segment twice)."""
    clip = read_audio(data_dir / "read/jfk.flac")
    # Uncompressed frames, so that the proxy sees the final go by.
    monkeypatch.setattr(websockets, "connect", functools.partial(websockets.connect, compression=None))

    async def scenario() -> tuple[StreamResult, CuttingProxy]:
        async with CuttingProxy(server.port) as proxy:
            proxy.cut_on = b'"type": "final"'
            url = f"ws://127.0.0.1:{proxy.port}/v1/stream"
            return await stream_file(url, clip, resume=True), proxy

    result, proxy = asyncio.run(scenario())
    assert proxy.cuts == 1
    assert result.resumes == 1
    assert result.final is not None
    assert result.close_code == 1000
    assert unmarked(segment_texts(result)) == unmarked(result.final["transcription"])


def test_a_drop_right_after_the_end_resends_no_audio(
    server: RunningServer, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy drops the connection as the ack of ``end`` passes (5.23 s of audio: no
    periodic ack holds all of it): the stream has ended, so the client must resend neither
    audio nor ``end`` (either would be an unexpected message), and gets its final cleanly."""
    whole = read_audio(data_dir / "read/jfk.flac")
    clip = Recording(whole.samples[: int(5.23 * whole.sample_rate)], whole.sample_rate)
    total = len(clip.samples) * 2  # pcm_s16le, mono
    monkeypatch.setattr(websockets, "connect", functools.partial(websockets.connect, compression=None))

    resumed: list[dict[str, Any]] = []

    def on_message(message: dict[str, Any]) -> None:
        if message["type"] == "ready" and "resumed" in message:
            resumed.append(message["resumed"])

    async def scenario() -> tuple[StreamResult, CuttingProxy]:
        async with CuttingProxy(server.port) as proxy:
            proxy.cut_on = f'"audio_bytes": {total},'.encode()
            url = f"ws://127.0.0.1:{proxy.port}/v1/stream"
            return await stream_file(url, clip, resume=True, on_message=on_message), proxy

    result, proxy = asyncio.run(scenario())
    assert proxy.cuts == 1
    assert resumed[0]["ended"] is True
    assert resumed[0]["audio_bytes"] == total
    assert result.resumes == 1
    assert result.errors == []
    assert result.final is not None
    assert result.close_code == 1000
    assert result.resent_bytes == 0


async def handshake(url: str) -> tuple[list[dict[str, Any]], int | None]:
    received = []
    async with websockets.connect(url, open_timeout=30) as ws:
        with contextlib.suppress(websockets.ConnectionClosedError):
            async for raw in ws:
                received.append(json.loads(raw))
    return received, ws.close_code


def test_a_resumable_stream_names_itself_in_the_handshake_for_balancers(server: RunningServer) -> None:
    # deploy/haproxy.cfg routes a resume by this header (tests/test_balancer.py).
    async def scenario() -> list[tuple[str | None, str]]:
        out = []
        for query in ("?resumable=true", ""):
            async with websockets.connect(f"{server.ws_url}{query}") as ws:
                ready = json.loads(await ws.recv())
                assert ws.response is not None
                out.append((ws.response.headers.get("x-session-id"), ready["session_id"]))
                await ws.send(json.dumps({"type": "end"}))
                async for _ in ws:
                    pass
        return out

    resumable, plain = asyncio.run(scenario())
    assert resumable[0] == resumable[1]
    assert plain[0] is None  # only a stream that can be resumed needs routing back


def test_an_unknown_or_foreign_resume_is_refused_alike(server: RunningServer, speech: Recording) -> None:
    async def scenario() -> list[tuple[list[dict[str, Any]], int | None]]:
        async with websockets.connect(f"{server.ws_url}?resumable=true") as ws:
            ready = json.loads(await ws.recv())
            session_id = ready["session_id"]
            answers = [
                await handshake(f"{server.ws_url}?resume=nosuchsession&resume_token=x"),
                await handshake(
                    f"{server.ws_url}?resume={session_id}&resume_token=not-{ready['resume_token']}"
                ),
                await handshake(f"{server.ws_url}?resume={session_id}&resume_token=x&language=en"),
            ]
            await ws.send(json.dumps({"type": "end"}))
            async for _ in ws:
                pass
        return answers

    unknown, foreign, malformed = asyncio.run(scenario())
    assert unknown[1] == foreign[1] == 1008
    assert unknown[0][0]["code"] == foreign[0][0]["code"] == "resume_failed"
    assert unknown[0][0]["message"] == foreign[0][0]["message"]  # tells nothing of the stream
    assert malformed[0][0]["code"] == "invalid_parameter"
    assert malformed[1] == 1008


def test_a_kept_stream_holds_its_place_until_the_grace_runs_out(
    speech: Recording, caplog: pytest.LogCaptureFixture
) -> None:
    """With one stream allowed, a dropped resumable stream still holds it: a new stream is
    refused; once the grace is over, the stream is gone, its place free, its resume refused.
    No log line holds the resume token."""
    grace = 2.0
    kept: list[float] = []
    caplog.set_level(logging.INFO)
    with contextlib.ExitStack() as cleanup:
        server = cleanup.enter_context(running_server(max_sessions=1, resume_grace=grace, log_level="info"))
        # uvicorn logs the handshakes on loggers that do not propagate (configured as the
        # server started, which resets their handlers).
        uvicorn = logging.getLogger("uvicorn")
        uvicorn.addHandler(caplog.handler)
        cleanup.callback(uvicorn.removeHandler, caplog.handler)

        async def scenario() -> tuple[dict[str, Any], list[Any], list[Any], list[Any]]:
            async with CuttingProxy(server.port) as proxy:
                ws = await websockets.connect(f"ws://127.0.0.1:{proxy.port}/v1/stream?resumable=true")
                ready = json.loads(await ws.recv())
                await ws.send(b"\0\0" * 16000)
                while json.loads(await ws.recv())["type"] != "ack":
                    pass
                proxy.cut()
                dropped = time.monotonic()
                await asyncio.sleep(0.3)
                kept.append(metric(server, "streaming_sessions_kept"))
                full = await handshake(server.ws_url)
                await asyncio.sleep(max(grace + 0.5 - (time.monotonic() - dropped), 0))
                late = await handshake(
                    f"{server.ws_url}?resume={ready['session_id']}&resume_token={ready['resume_token']}"
                )
                async with websockets.connect(server.ws_url) as fresh:
                    admitted = json.loads(await fresh.recv())
                    await fresh.send(json.dumps({"type": "end"}))
                    async for _ in fresh:
                        pass
            return ready, list(full), list(late), [admitted]

        ready, full, late, admitted = asyncio.run(scenario())
        assert full[0][0]["code"] == "server_full"
        assert full[1] == 1013
        assert late[0][0]["code"] == "resume_failed"
        assert admitted[0]["type"] == "ready"
        assert metric(server, 'streaming_resumes_total{outcome="expired"}') == 1
        assert kept == [1.0]
        assert metric(server, "streaming_sessions_kept") == 0
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "resume_token=[redacted]" in logged  # uvicorn's handshake line for the late resume
    assert ready["resume_token"] not in logged
    assert "not resumed within 2 s" in logged


def test_a_resume_needs_the_api_key_too(keyed_server: RunningServer) -> None:
    """The token proves the stream is the client's; the key still says who may connect."""
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def scenario() -> tuple[int, dict[str, Any]]:
        async with CuttingProxy(keyed_server.port) as proxy:
            url = f"ws://127.0.0.1:{proxy.port}/v1/stream"
            ws = await websockets.connect(f"{url}?resumable=true", additional_headers=headers)
            ready = json.loads(await ws.recv())
            proxy.cut()
            resume = (
                f"{keyed_server.ws_url}?resume={ready['session_id']}&resume_token={ready['resume_token']}"
            )
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(resume)
            async with websockets.connect(resume, additional_headers=headers) as again:
                resumed = json.loads(await again.recv())
                await again.send(json.dumps({"type": "end"}))
                async for _ in again:
                    pass
        return refused.value.response.status_code, resumed

    status, resumed = asyncio.run(scenario())
    assert status == 401
    assert resumed["resumed"] == {"audio_bytes": 0, "time": 0.0, "segments": 0, "ended": False}
