"""OpenAI's Realtime transcription on /v1/realtime, driven by the real openai client's realtime
websocket against the real service (real model, real speech) on loopback, and sans-I/O with a
scripted engine."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import soxr
import websockets
from openai.types.websocket_reconnection import is_recoverable_close

from clients.stream import read_audio
from streaming.audio import encode_mulaw
from streaming.clock import ManualClock
from streaming.config import Config, parse_stream_config
from streaming.driver import settle
from streaming.errors import ServerFull, Unauthorized
from streaming.realtime import RealtimeAdapter, realtime_stream_config, refusal
from streaming.session import Session
from streaming.settings import SessionSettings
from streaming.vad import Segmenter
from tests.conftest import API_KEY, RunningServer
from tests.fakes import TEST_VAD, LoudnessScorer, ScriptedEngine, silence, tone
from tests.wer import wer

JFK = "read/jfk.flac"
DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def client(server: RunningServer, key: str = API_KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url=f"{server.http_url}/v1", max_retries=0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def collect_until(connection: Any, done: Any) -> list[dict[str, Any]]:
    """Events until ``done(events)`` holds, checked as each comes and while none does (it may
    hold only once the client has finished sending)."""
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while not done(got):
            try:
                event = await asyncio.wait_for(connection.recv(), 0.5)  # cancelling recv is safe
            except TimeoutError:
                continue
            got.append(event.model_dump())
    return got


def check_items(got: list[dict[str, Any]]) -> dict[str, str]:
    """Each item's events in OpenAI's order, its transcript the sum of its deltas; every
    event_id unique. Returns each item's transcript."""
    ids = Counter(e["event_id"] for e in got)
    assert max(ids.values()) == 1
    transcripts: dict[str, str] = {}
    deltas: dict[str, str] = {}
    committed: list[str] = []
    for event in got:
        kind = event["type"]
        if kind == "input_audio_buffer.committed":
            assert event["previous_item_id"] == (committed[-1] if committed else None)
            committed.append(event["item_id"])
        elif kind == DELTA:
            assert event["item_id"] in committed  # deltas come after the commit
            assert event["item_id"] not in transcripts  # and before the completion
            deltas[event["item_id"]] = deltas.get(event["item_id"], "") + event["delta"]
        elif kind == COMPLETED:
            assert event["item_id"] in committed
            assert event["transcript"] == deltas.get(event["item_id"], "")
            transcripts[event["item_id"]] = event["transcript"]
    assert list(transcripts) == [i for i in committed if i in transcripts]  # completed in order
    return transcripts


@pytest.mark.model
async def test_server_vad_turns_through_the_openai_realtime_client(
    keyed_server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    recording = read_audio(data_dir / JFK)
    pcm24 = (np.clip(soxr.resample(recording.samples[:, 0], 16000, 24000), -1, 1) * 32767).astype("<i2")
    audio = pcm24.tobytes() + bytes(2 * 24000 * 2)  # and 2 s of silence to close the last turn
    async with client(keyed_server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                            "turn_detection": {"type": "server_vad"},
                        }
                    },
                },
            }
        )

        async def speak() -> None:
            for offset in range(0, len(audio), 4800):  # 100 ms at 24 kHz, at 2x real time
                await connection.send(
                    {"type": "input_audio_buffer.append", "audio": b64(audio[offset : offset + 4800])}
                )
                await asyncio.sleep(0.05)

        speaking = asyncio.create_task(speak())

        def finished(got: list[dict[str, Any]]) -> bool:
            stopped = sum(e["type"] == "input_audio_buffer.speech_stopped" for e in got)
            return speaking.done() and stopped > 0 and sum(e["type"] == COMPLETED for e in got) == stopped

        got = await collect_until(connection, finished)
    kinds = [e["type"] for e in got]
    assert kinds[:2] == ["session.created", "session.updated"]
    assert got[1]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    transcripts = check_items(got)
    said = " ".join(t for t in transcripts.values() if t)
    assert wer(manifest[JFK]["text"], said) < 0.15, said
    started = [e for e in got if e["type"] == "input_audio_buffer.speech_started"]
    assert 200 <= started[0]["audio_start_ms"] <= 800  # JFK starts speaking about 0.35 s in
    assert len(started) >= 3  # the pauses between his phrases are turns


@pytest.mark.model
async def test_manual_commits_of_g711_audio_with_turn_detection_off(
    keyed_server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    recording = read_audio(data_dir / JFK)
    ulaw = encode_mulaw(soxr.resample(recording.samples[:, 0], 16000, 8000))
    async with client(keyed_server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.send(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}},
                },
            }
        )
        await connection.send({"type": "input_audio_buffer.commit"})  # nothing appended yet
        for offset in range(0, len(ulaw), 1600):  # 200 ms at 8 kHz, as fast as it goes
            await connection.send(
                {"type": "input_audio_buffer.append", "audio": b64(ulaw[offset : offset + 1600])}
            )
        await connection.send({"type": "input_audio_buffer.commit"})
        got = await collect_until(connection, lambda got: any(e["type"] == COMPLETED for e in got))
    kinds = [e["type"] for e in got]
    assert "input_audio_buffer.speech_started" not in kinds  # the client decides the turns
    errors = [e for e in got if e["type"] == "error"]
    assert len(errors) == 1
    assert "empty" in errors[0]["error"]["message"]
    transcripts = check_items(got)
    assert len(transcripts) == 1  # one commit, one item, the whole recording
    assert wer(manifest[JFK]["text"], next(iter(transcripts.values()))) < 0.2


@pytest.mark.model
async def test_a_wrong_key_closes_with_a_code_the_sdk_does_not_retry(keyed_server: RunningServer) -> None:
    url = f"ws://{keyed_server.host}:{keyed_server.port}/v1/realtime?intent=transcription"
    async with websockets.connect(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime"
        event = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert event["type"] == "error"
    assert event["error"]["code"] == "invalid_api_key"
    assert ws.close_code == 1008
    assert not is_recoverable_close(1008)
    # The browser form of the right key is taken.
    async with websockets.connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{API_KEY}"]) as ws:  # type: ignore[list-item]
        assert json.loads(await ws.recv())["type"] == "session.created"


def test_refusals_close_with_codes_the_sdk_reads() -> None:
    _, code = refusal(ServerFull("full"))
    assert code == 1013
    assert is_recoverable_close(code)
    text, code = refusal(Unauthorized("no"))
    assert code == 1008
    assert json.loads(text)["error"]["type"] == "invalid_request_error"


# ---------------------------------------------------------------------------- sans-I/O


def adapter() -> tuple[RealtimeAdapter, ScriptedEngine]:
    session = Session(
        session_id="rt",
        stream=realtime_stream_config(),
        settings=SessionSettings.from_config(Config(), "scripted"),
        new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
        clock=ManualClock(),
    )
    return RealtimeAdapter(session, lambda q: parse_stream_config(q, multilingual=False)), ScriptedEngine()


def pump(rt: RealtimeAdapter, engine: ScriptedEngine) -> list[dict[str, Any]]:
    """Run every decode the session asks for; the events it led to."""
    got: list[dict[str, Any]] = []
    while True:
        got += [json.loads(o.text) for o in rt.messages_to_send()]
        jobs = rt.session.jobs_to_start()
        if not jobs:
            return got
        for job in jobs:
            settle(rt.session, job, engine.transcribe(job.clip, job.options))


def pcm24(samples: Any) -> bytes:
    return (soxr.resample(samples, 16000, 24000) * 32767).astype("<i2").tobytes()


def append(rt: RealtimeAdapter, samples: Any) -> None:
    rt.receive_text(json.dumps({"type": "input_audio_buffer.append", "audio": b64(pcm24(samples))}))


def test_each_vad_turn_is_an_item_and_a_cleared_turn_is_never_told() -> None:
    rt, engine = adapter()
    append(rt, np.concatenate([silence(0.3), tone(1.0), silence(0.6)]))
    first = pump(rt, engine)
    assert [e["type"] for e in first] == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        DELTA,
        COMPLETED,
    ]
    assert len(first[-1]["transcript"].split()) == 2  # a word per half second of the tone
    append(rt, tone(0.8, freq=330.0))
    rt.receive_text('{"type": "input_audio_buffer.clear"}')
    append(rt, silence(0.6))
    second = pump(rt, engine)
    assert [e["type"] for e in second] == ["input_audio_buffer.speech_started", "input_audio_buffer.cleared"]


def test_bad_client_events_get_error_events_and_the_session_goes_on() -> None:
    rt, engine = adapter()
    for bad in (
        "not json",
        '{"type": "response.create"}',
        '{"type": "input_audio_buffer.append", "audio": "***"}',
        '{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/opus"}}}}}',
        '{"type": "session.update", "session": {"audio": {"input": {"transcription": {"language": "fr"}}}}}',
        '{"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "x"}}}}}',
        '{"type": "input_audio_buffer.commit", "event_id": "mine"}',
    ):
        rt.receive_text(bad)
    got = pump(rt, engine)
    errors = [e for e in got if e["type"] == "error"]
    assert len(errors) == 7
    assert errors[-1]["error"]["event_id"] == "mine"
    append(rt, np.concatenate([tone(1.0), silence(0.6)]))
    assert any(e["type"] == COMPLETED for e in pump(rt, engine))
    append(rt, silence(0.1))
    rt.receive_text(
        json.dumps(
            {
                "type": "session.update",
                "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": None}}},
            }
        )
    )
    late = [e for e in pump(rt, engine) if e["type"] == "error"]
    assert "cannot change" in late[0]["error"]["message"]  # the format, once audio came
    append(rt, np.concatenate([tone(1.0), silence(0.6)]))  # and nothing of that update applied:
    assert "input_audio_buffer.speech_started" in [e["type"] for e in pump(rt, engine)]  # still server VAD


@pytest.mark.model
@pytest.mark.filterwarnings("ignore:websockets.* is deprecated:DeprecationWarning")  # the Deepgram SDK's
async def test_a_full_server_refuses_each_protocol_in_its_own_way() -> None:
    """One stream open on a server of one: Deepgram's SDK gets HTTP 429 at the handshake, and
    OpenAI's Realtime an ``error`` event and 1013, which its SDK reconnects after."""
    from deepgram.core.api_error import ApiError

    from tests.conftest import running_server
    from tests.test_deepgram import client as deepgram_client

    with running_server(max_sessions=1) as full:
        async with websockets.connect(full.ws_url) as holder:
            assert json.loads(await holder.recv())["type"] == "ready"
            with pytest.raises(ApiError) as refused:
                async with deepgram_client(full).listen.v1.connect(model="nova-3"):
                    pass
            assert refused.value.status_code == 429
            url = f"ws://{full.host}:{full.port}/v1/realtime?intent=transcription"
            async with websockets.connect(url) as ws:
                event = json.loads(await ws.recv())
                with pytest.raises(websockets.ConnectionClosed):
                    await ws.recv()
            assert event["error"]["code"] == "server_full"
            assert event["error"]["type"] == "server_error"
            assert ws.close_code == 1013
            assert is_recoverable_close(1013)
