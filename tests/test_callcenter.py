"""Call-center audio with the real model: one speaker per channel, at 16 and 8 kHz (mu-law and
A-law), and the same call as Twilio Media Streams sends it."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from clients.stream import read_audio, stream_file
from streaming.audio import encode_mulaw
from streaming.twilio import TrackInterleaver
from tests.conftest import RunningServer
from tests.schema import as_sent, validate_message
from tests.wer import wer

pytestmark = pytest.mark.model

SPEAKERS = ("agent", "customer")
CHANNEL_WER_BOUND = 0.15
BOUNDARY_TOLERANCE = 0.35  # seconds around the exact per-channel segments


def per_speaker(final: dict[str, Any]) -> dict[str, str]:
    texts: dict[str, list[str]] = {s: [] for s in SPEAKERS}
    for segment in final["response"]["segments"]:
        texts[segment["speaker"]].append(segment["text"])
    return {speaker: " ".join(parts) for speaker, parts in texts.items()}


def attribution(final: dict[str, Any], entry: dict[str, Any]) -> float:
    """Share of words whose speaker is the one talking, per the exact channel segments."""
    words = final["response"]["word_segments"]
    right = 0
    for word in words:
        middle = (word["start"] + word["end"]) / 2
        channel = entry["channel_segments"][SPEAKERS.index(word["speaker"])]
        right += any(lo - BOUNDARY_TOLERANCE <= middle <= hi + BOUNDARY_TOLERANCE for _, lo, hi in channel)
    return right / len(words)


def check_call(final: dict[str, Any], entry: dict[str, Any]) -> dict[str, float]:
    texts = per_speaker(final)
    figures = {
        speaker: wer(" ".join(s[0] for s in entry["channel_segments"][i]), texts[speaker])
        for i, speaker in enumerate(SPEAKERS)
    }
    for speaker, value in figures.items():
        assert value <= CHANNEL_WER_BOUND, (speaker, texts[speaker])
    assert attribution(final, entry) == 1.0
    # Each segment (a sentence, which may join two turns of its channel under a second apart)
    # starts and ends in its channel's exact segments.
    for segment in final["response"]["segments"]:
        channel = entry["channel_segments"][SPEAKERS.index(segment["speaker"])]
        for edge in (segment["start"], segment["end"]):
            assert any(lo - BOUNDARY_TOLERANCE <= edge <= hi + BOUNDARY_TOLERANCE for _, lo, hi in channel), (
                segment
            )
        assert all(w["speaker"] == segment["speaker"] for w in segment["words"])
    segments = final["response"]["segments"]
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    words = final["response"]["word_segments"]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    return figures


@pytest.mark.parametrize(
    ("file", "encoding"),
    [
        ("stereo/call_0_16k.flac", "pcm_s16le"),
        ("stereo/call_0_8k.flac", "mulaw"),
        ("stereo/call_1_16k.flac", "pcm_s16le"),
        ("stereo/call_1_8k.flac", "alaw"),
    ],
)
def test_each_channel_is_its_own_speaker(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any], file: str, encoding: str
) -> None:
    entry = manifest[file]
    params = {"multichannel": "true", "speakers": ",".join(SPEAKERS)}
    result = asyncio.run(
        stream_file(server.ws_url, read_audio(data_dir / file), encoding=encoding, params=params)
    )
    assert result.close_code == 1000
    for message in result.messages:
        validate_message(message)
    assert result.messages[0]["config"]["speakers"] == list(SPEAKERS)
    check_call(result.final, entry)
    # Every word sent is in the final, with its speaker, and nothing else is (its closing mark may
    # be the next decode's).
    sent = [w for m in result.messages if m["type"] == "segment" for w in m["segment"]["words"]]
    final = result.final["response"]["word_segments"]
    assert sorted(map(json.dumps, as_sent(sent))) == sorted(map(json.dumps, as_sent(final)))


def test_the_interleaver_lines_tracks_up_by_timestamp() -> None:
    lanes = TrackInterleaver()
    lanes.add(0, 0, b"\x01" * 160)
    assert lanes.take() == b""  # the other track may still come
    lanes.add(1, 0, b"\x02" * 160)
    assert lanes.take() == b"\x01\x02" * 160
    lanes.add(0, 40, b"\x03" * 160)  # 20 ms of track 0 went missing: silence keeps the timeline
    lanes.add(1, 20, b"\x04" * 320)
    assert lanes.take() == (b"\xff\x04" * 160) + (b"\x03\x04" * 160)
    for chunk in range(20):  # track 1 goes quiet: track 0 is not held back for long
        lanes.add(0, 60 + 20 * chunk, b"\x05" * 160)
    out = lanes.take()
    assert len(out) >= 2 * 160 * 8
    assert out[1::2] == b"\xff" * (len(out) // 2)


def twilio_events(left: np.ndarray, right: np.ndarray) -> list[dict[str, Any]]:
    """A call as Twilio sends it: 20 ms mu-law chunks of each track, the tracks alternating."""
    sid = "MZ00000000000000000000000000000000"
    events: list[dict[str, Any]] = [
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": sid,
            "start": {
                "accountSid": "AC0",
                "streamSid": sid,
                "callSid": "CA0",
                "tracks": ["inbound", "outbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        },
    ]
    step = 160
    for chunk, offset in enumerate(range(0, len(left), step)):
        for track, samples in (("inbound", left), ("outbound", right)):
            events.append(
                {
                    "event": "media",
                    "sequenceNumber": str(len(events)),
                    "streamSid": sid,
                    "media": {
                        "track": track,
                        "chunk": str(chunk + 1),
                        "timestamp": str(chunk * 20),
                        "payload": base64.b64encode(encode_mulaw(samples[offset : offset + step])).decode(),
                    },
                }
            )
    events.append(
        {"event": "mark", "sequenceNumber": str(len(events)), "streamSid": sid, "mark": {"name": "x"}}
    )
    events.append(
        {"event": "stop", "sequenceNumber": str(len(events)), "streamSid": sid, "stop": {"callSid": "CA0"}}
    )
    return events


def test_a_twilio_media_stream_gets_the_same_transcript(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    file = "stereo/call_0_8k.flac"
    call = read_audio(data_dir / file)
    params = {"multichannel": "true", "speakers": ",".join(SPEAKERS)}
    direct = asyncio.run(stream_file(server.ws_url, call, encoding="mulaw", params=params)).final

    async def as_twilio() -> list[dict[str, Any]]:
        url = f"ws://{server.host}:{server.port}/v1/twilio?speakers={','.join(SPEAKERS)}"
        received: list[dict[str, Any]] = []
        async with websockets.connect(url, ping_interval=None) as ws:

            async def receive() -> None:
                async for raw in ws:
                    received.append(json.loads(raw))

            receiver = asyncio.create_task(receive())
            started = time.monotonic()
            for event in twilio_events(call.samples[:, 0], call.samples[:, 1]):
                if event["event"] == "media" and event["media"]["track"] == "inbound":
                    # Real time, as Twilio sends it: each chunk 20 ms after the one before.
                    due = started + int(event["media"]["timestamp"]) / 1000
                    await asyncio.sleep(max(due - time.monotonic(), 0))
                await ws.send(json.dumps(event))
            await asyncio.wait_for(receiver, 60)
        return received

    messages = asyncio.run(as_twilio())
    for message in messages:
        validate_message(message)
    assert messages[0]["type"] == "ready"
    assert "partial" in [m["type"] for m in messages]
    final = messages[-1]
    assert final["type"] == "final"
    check_call(final, manifest[file])
    # Partials commit words as they come, so the pacing (Twilio's 20 ms frames, or a file sent
    # at once) may change a word; the transcripts agree all but a few.
    assert wer(direct["transcription"], final["transcription"]) <= 0.1
