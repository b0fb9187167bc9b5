"""Bad clients against the real server over loopback, each beside a well-behaved stream that
must still get exactly the transcript it gets alone."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import threading
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from clients.stream import encode, read_audio, stream_file
from tests.conftest import RunningServer, running_server
from tests.schema import validate_message
from tests.wer import wer

pytestmark = pytest.mark.model

MAX_FRAME = 64 * 1024
IDLE = 3.0
GOOD_CLIP = "read/jfk.flac"
SPEECH_CLIP = "ljspeech/LJ001-0002.flac"


@dataclass
class Outcome:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @property
    def kinds(self) -> list[str]:
        return [m["type"] for m in self.messages]

    @property
    def codes(self) -> list[str]:
        return [m["code"] for m in self.messages if m["type"] == "error"]

    @property
    def final(self) -> dict[str, Any] | None:
        return next((m for m in self.messages if m["type"] == "final"), None)


@pytest.fixture(scope="module")
def strict_server() -> Iterator[RunningServer]:
    with running_server(max_frame_bytes=MAX_FRAME, idle_timeout=IDLE, max_sessions=32) as running:
        yield running


@pytest.fixture(scope="module")
def speech(data_dir: Path) -> bytes:
    """A few seconds of real speech as s16le at 16 kHz, then silence that ends the utterance."""
    clip = read_audio(data_dir / SPEECH_CLIP)
    return encode(np.concatenate([clip.samples[:, 0], np.zeros(16000, np.float32)]), "pcm_s16le")


async def client(
    server: RunningServer, steps: Callable[[Any], Awaitable[None]], query: str = "encoding=pcm_s16le"
) -> Outcome:
    outcome = Outcome()
    async with websockets.connect(f"{server.ws_url}?{query}", max_size=None, ping_interval=None) as ws:

        async def receive() -> None:
            try:
                async for raw in ws:
                    outcome.messages.append(json.loads(raw))
            except websockets.ConnectionClosed:
                pass

        receiver = asyncio.create_task(receive())
        with contextlib.suppress(websockets.ConnectionClosed):
            await steps(ws)
        await asyncio.wait_for(receiver, 60)
        outcome.close_code = ws.close_code
    for message in outcome.messages:
        validate_message(message)
    return outcome


def frames(data: bytes, size: int = 3200) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def bad_clients(speech: bytes) -> dict[str, tuple[Callable[[Any], Awaitable[None]], str]]:
    """Name -> (what the client does, its query string)."""

    async def send_all(ws: Any) -> None:
        for frame in frames(speech):
            await ws.send(frame)

    async def then(ws: Any, *texts: str | bytes) -> None:
        await send_all(ws)
        for text in texts:
            await ws.send(text)

    async def invalid_json(ws: Any) -> None:
        await then(ws, "{not json")

    async def unknown_type(ws: Any) -> None:
        await then(ws, '{"type":"shout"}')

    async def invalid_base64(ws: Any) -> None:
        await then(ws, json.dumps({"type": "audio", "audio": "@@@not base64@@@"}))

    async def odd_and_empty_frames(ws: Any) -> None:
        await ws.send(b"")
        await ws.send(speech[:3])  # a sample split across frames
        for frame in frames(speech[3:], 3001):  # odd sizes: every frame splits a sample
            await ws.send(frame)
        await ws.send('{"type":"end"}')

    async def nan_audio(ws: Any) -> None:
        await ws.send(np.array([0.0, np.nan, 0.0], dtype="<f4").tobytes())

    async def text_after_end(ws: Any) -> None:
        await then(ws, '{"type":"end"}', '{"type":"keepalive"}', b"\0\0" * 800)

    async def second_end(ws: Any) -> None:
        await then(ws, '{"type":"end"}', '{"type":"end"}')

    async def large_frame(ws: Any) -> None:
        await send_all(ws)
        await ws.send(b"\0" * (MAX_FRAME + 2))  # above our limit: a typed error

    async def gigantic_frame(ws: Any) -> None:
        await send_all(ws)
        await ws.send(b"\0" * (MAX_FRAME * 4))  # above the protocol layer's limit

    async def base64_and_binary_mixed(ws: Any) -> None:
        half = len(speech) // 2 & ~1
        for frame in frames(speech[:half]):
            await ws.send(json.dumps({"type": "audio", "audio": base64.b64encode(frame).decode()}))
        for frame in frames(speech[half:]):
            await ws.send(frame)
        await ws.send('{"type":"end"}')

    async def never_ends(ws: Any) -> None:
        await send_all(ws)
        await asyncio.sleep(IDLE + 2)  # the server's idle timeout ends it

    async def disconnects_mid_utterance(ws: Any) -> None:
        for frame in frames(speech)[:20]:
            await ws.send(frame)
        await ws.close()

    async def invalid_parameter(ws: Any) -> None:
        await asyncio.sleep(0.5)

    return {
        "invalid_json": (invalid_json, ""),
        "unknown_type": (unknown_type, ""),
        "invalid_base64": (invalid_base64, ""),
        "odd_and_empty_frames": (odd_and_empty_frames, ""),
        "nan_audio": (nan_audio, "encoding=pcm_f32le"),
        "text_after_end": (text_after_end, ""),
        "second_end": (second_end, ""),
        "large_frame": (large_frame, ""),
        "gigantic_frame": (gigantic_frame, ""),
        "base64_and_binary_mixed": (base64_and_binary_mixed, ""),
        "never_ends": (never_ends, ""),
        "disconnects_mid_utterance": (disconnects_mid_utterance, ""),
        "invalid_parameter": (invalid_parameter, "sample_rate=5"),
    }


# What each bad client must be told: (error codes in order, close code, a final with speech).
EXPECTED: dict[str, tuple[list[str], int | None, bool]] = {
    "invalid_json": (["invalid_message"], 1007, True),
    "unknown_type": (["invalid_message"], 1007, True),
    "invalid_base64": (["invalid_audio"], 1007, True),
    "odd_and_empty_frames": ([], 1000, True),
    "nan_audio": (["invalid_audio"], 1007, False),
    "text_after_end": (["unexpected_message"], 1008, True),
    "second_end": (["unexpected_message"], 1008, True),
    "large_frame": (["frame_too_large"], 1009, True),
    "gigantic_frame": ([], 1009, False),  # refused by the protocol layer: no message, no final
    "base64_and_binary_mixed": ([], 1000, True),
    "never_ends": (["idle_timeout"], 1000, True),
    "disconnects_mid_utterance": ([], None, False),
    "invalid_parameter": (["invalid_parameter"], 1008, False),
}


def open_fds() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return found


def sessions_open(server: RunningServer) -> float:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("streaming_sessions "):
                return float(line.split()[1])
    raise AssertionError("no streaming_sessions metric")


def test_bad_clients_get_typed_errors_and_a_good_stream_beside_them_is_unharmed(
    strict_server: RunningServer, data_dir: Path, manifest: dict[str, Any], speech: bytes
) -> None:
    good = read_audio(data_dir / GOOD_CLIP)
    alone = asyncio.run(stream_file(strict_server.ws_url, good))
    assert alone.close_code == 1000
    assert wer(manifest[GOOD_CLIP]["text"], alone.final["transcription"]) <= 0.15
    fds_before = len(open_fds())

    async def together() -> tuple[Any, dict[str, Outcome]]:
        bad = bad_clients(speech)
        names = list(bad)
        results = await asyncio.gather(
            stream_file(strict_server.ws_url, good, realtime=True, speed=2.0),
            *(client(strict_server, steps, query or "encoding=pcm_s16le") for steps, query in bad.values()),
        )
        return results[0], dict(zip(names, results[1:], strict=True))

    beside, outcomes = asyncio.run(together())
    assert beside.close_code == 1000
    assert not beside.errors
    # Partials commit words as they come, so load may change a word, not more.
    assert wer(alone.final["transcription"], beside.final["transcription"]) <= 0.1

    speech_text = manifest[SPEECH_CLIP]["text"]
    for name, (codes, close_code, has_speech) in EXPECTED.items():
        outcome = outcomes[name]
        assert outcome.codes == codes, name
        assert outcome.close_code == close_code or (close_code is None), (name, outcome.close_code)
        if has_speech:
            # Everything received before the error was still transcribed.
            assert outcome.final is not None, name
            assert wer(speech_text, outcome.final["transcription"]) <= 0.2, name
        if name == "invalid_parameter":
            assert outcome.kinds == ["error"]  # refused before ready, before any audio

    # Nothing is left behind by the streams that ended, the one that vanished included.
    for _ in range(50):
        if sessions_open(strict_server) == 0 and len(open_fds()) <= fds_before:
            break
        threading.Event().wait(0.1)
    assert sessions_open(strict_server) == 0
    # The test process also holds other servers' sockets, which may open one while this runs;
    # a leak per stream would show as one descriptor for each of the 14 streams.
    assert len(open_fds()) <= fds_before + 2, open_fds()


def test_invalid_query_strings_are_refused_before_audio(strict_server: RunningServer) -> None:
    async def nothing(ws: Any) -> None:
        await asyncio.sleep(0.2)

    for query in ("encoding=opus", "channels=0", "language=xx", "task=translate", "bogus=1"):
        outcome = asyncio.run(client(strict_server, nothing, urllib.parse.quote(query, safe="=&")))
        assert outcome.codes == ["invalid_parameter"], query
        assert outcome.close_code == 1008


# The server runs in this process: its memory is this process's. One event of the kind below
# made the landed code fill 8 hours of silence (1.17 GB); now each jump adds at most 2 s.
HOSTILE_RSS_BOUND = 200 * 2**20


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def twilio_event(kind: str, **fields: Any) -> str:
    return json.dumps({"event": kind, "streamSid": "MZ0", **fields})


TWILIO_START = {
    "streamSid": "MZ0",
    "callSid": "CA0",
    "tracks": ["inbound", "outbound"],
    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
}
MULAW_20MS = base64.b64encode(b"\x7f" * 160).decode()


def hostile_twilio_clients() -> dict[str, tuple[list[str], list[str], int]]:
    """Name -> (the events it sends, the error codes it must get, its close code)."""
    start = twilio_event("start", start=TWILIO_START)

    def media(timestamp: Any, payload: Any = MULAW_20MS, track: Any = "inbound") -> str:
        return twilio_event("media", media={"track": track, "timestamp": timestamp, "payload": payload})

    jumps = [media(str(30_000_000 * (i + 1)), track=("inbound", "outbound")[i % 2]) for i in range(40)]
    bad_rate = {**TWILIO_START, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": "abc"}}
    return {
        "timestamps_jump_hours": ([start, *jumps, twilio_event("stop")], [], 1000),
        "sample_rate_not_a_number": ([twilio_event("start", start=bad_rate)], ["invalid_message"], 1007),
        "media_format_not_an_object": (
            [twilio_event("start", start={**TWILIO_START, "mediaFormat": "x"})],
            ["invalid_message"],
            1007,
        ),
        "timestamp_a_list": ([start, media([1])], ["invalid_message"], 1007),
        "payload_not_base64": ([start, media(0, payload="@@@")], ["invalid_message"], 1007),
        "unknown_track": ([start, media(0, track="sideways")], ["invalid_message"], 1007),
        "media_before_start": ([media(0)], ["invalid_message"], 1007),
        "binary_frame": ([start, "\x00binary"], ["invalid_message"], 1007),
    }


async def twilio_client(server: RunningServer, events: list[str]) -> Outcome:
    outcome = Outcome()
    url = f"ws://{server.host}:{server.port}/v1/twilio"
    async with websockets.connect(url, max_size=None, ping_interval=None) as ws:
        for event in events:
            with contextlib.suppress(websockets.ConnectionClosed):
                await ws.send(event.encode()[1:] if event.startswith("\x00") else event)
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in ws:
                outcome.messages.append(json.loads(raw))
        outcome.close_code = ws.close_code
    for message in outcome.messages:
        validate_message(message)
    return outcome


def test_hostile_twilio_clients_get_typed_errors_within_bounded_memory_beside_a_good_stream(
    strict_server: RunningServer, data_dir: Path
) -> None:
    good = read_audio(data_dir / GOOD_CLIP)
    alone = asyncio.run(stream_file(strict_server.ws_url, good))
    before = peak = rss_bytes()
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, rss_bytes())

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()

    async def together() -> tuple[Any, dict[str, Outcome]]:
        hostile = hostile_twilio_clients()
        results = await asyncio.gather(
            stream_file(strict_server.ws_url, good, realtime=True, speed=2.0),
            *(twilio_client(strict_server, events) for events, _, _ in hostile.values()),
        )
        return results[0], dict(zip(hostile, results[1:], strict=True))

    try:
        beside, outcomes = asyncio.run(together())
    finally:
        done.set()
        watcher.join()
    assert beside.close_code == 1000
    assert wer(alone.final["transcription"], beside.final["transcription"]) <= 0.1
    for name, (_, codes, close_code) in hostile_twilio_clients().items():
        outcome = outcomes[name]
        assert outcome.codes == codes, (name, outcome.messages[-2:])
        assert outcome.close_code == close_code, name
        assert outcome.final is not None, name  # every stream that was admitted ends with its final
    # 40 jumps of hours each: 80 s of silence per track at most, not 40 x 8 hours.
    assert peak - before < HOSTILE_RSS_BOUND, (before, peak)
