"""Deepgram's live protocol on /v1/listen, driven by the real deepgram-sdk (7.x) and by a real
pipecat pipeline, against the real service (real model, real speech) on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import websockets
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from deepgram.listen.v1.types import (
    ListenV1Metadata,
    ListenV1Results,
    ListenV1SpeechStarted,
    ListenV1UtteranceEnd,
)

from clients.stream import Recording, read_audio
from streaming import events
from streaming.clock import ManualClock
from streaming.config import Config
from streaming.deepgram import DeepgramAdapter, parse_listen_query
from streaming.errors import InvalidParameter
from streaming.messages import Transcript, Word
from streaming.session import Session
from streaming.settings import SessionSettings
from streaming.vad import Segmenter
from tests.conftest import API_KEY, RunningServer
from tests.fakes import TEST_VAD, LoudnessScorer, silence, tone
from tests.wer import wer

KEY = API_KEY
# The SDK reaches websockets through its deprecated legacy names.
pytestmark = pytest.mark.filterwarnings("ignore:websockets.* is deprecated:DeprecationWarning")


def pcm16(recording: Recording, channel: int | None = None) -> bytes:
    samples = recording.samples if channel is None else recording.samples[:, channel]
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def client(server: RunningServer, key: str = KEY) -> AsyncDeepgramClient:
    base = f"{server.host}:{server.port}"
    environment = DeepgramClientEnvironment(
        base=f"http://{base}", production=f"ws://{base}", agent=f"ws://{base}", agent_rest=f"http://{base}"
    )
    return AsyncDeepgramClient(api_key=key, environment=environment)


async def send_paced(connection: Any, audio: bytes, rate: int, channels: int = 1, speed: float = 2.0) -> None:
    """100 ms frames at ``speed`` times real time."""
    frame = rate * channels * 2 // 10
    for offset in range(0, len(audio), frame):
        await connection.send_media(audio[offset : offset + frame])
        await asyncio.sleep(0.1 / speed)


def collect(connection: Any, into: list[Any]) -> asyncio.Task[None]:
    """Read the SDK connection's messages into ``into`` until it closes."""

    async def read() -> None:
        async for message in connection:
            into.append(message)

    return asyncio.create_task(read())


async def read_until_closed(ws: Any) -> list[dict[str, Any]]:
    messages = []
    try:
        while True:
            messages.append(json.loads(await ws.recv()))
    except websockets.ConnectionClosed:
        return messages


@pytest.mark.model
async def test_the_deepgram_sdk_streams_a_file_with_interim_final_and_finalize(
    keyed_server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    entry = manifest["read/jfk.flac"]
    recording = read_audio(data_dir / entry["audio"])
    got: list[Any] = []
    async with client(keyed_server).listen.v1.connect(
        model="nova-3",
        encoding="linear16",
        sample_rate="16000",
        interim_results="true",
        vad_events="true",
        utterance_end_ms="1000",
        punctuate="true",
        smart_format="true",  # accepted and ignored
    ) as connection:
        reader = collect(connection, got)
        await send_paced(connection, pcm16(recording), 16000)
        await connection.send_keep_alive()
        await send_paced(connection, pcm16(Recording(silence(1.5)[:, None], 16000)), 16000, speed=1.0)
        await connection.send_finalize()
        for _ in range(100):
            if any(isinstance(m, ListenV1Results) and m.from_finalize for m in got):
                break
            await asyncio.sleep(0.1)
        await connection.send_close_stream()
        await asyncio.wait_for(reader, 30)

    results = [m for m in got if isinstance(m, ListenV1Results)]
    finals = [m for m in results if m.is_final]
    interims = [m for m in results if not m.is_final]
    assert interims, "interim results were asked for"
    transcript = " ".join(
        m.channel.alternatives[0].transcript for m in finals if m.channel.alternatives[0].transcript
    )
    assert wer(entry["text"], transcript) < 0.15, transcript
    assert any(m.speech_final for m in finals)
    assert sum(1 for m in finals if m.from_finalize) == 1
    words = [w for m in finals for w in m.channel.alternatives[0].words]
    assert [w.punctuated_word for w in words] == transcript.split()
    assert all(w.word == w.word.lower() and 0 <= w.start <= w.end <= recording.duration + 2 for w in words)
    assert all(0 < w.confidence <= 1 for w in words)
    assert any(isinstance(m, ListenV1SpeechStarted) for m in got)
    ends = [m for m in got if isinstance(m, ListenV1UtteranceEnd)]
    assert ends
    assert ends[-1].last_word_end == pytest.approx(words[-1].end, abs=0.01)
    assert isinstance(got[-1], ListenV1Metadata)
    assert got[-1].duration == pytest.approx(recording.duration + 1.5, abs=0.2)
    assert got[-1].channels == 1


@pytest.mark.model
async def test_the_deepgram_sdk_gets_speakers_on_one_channel_with_diarize(
    keyed_server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    from bench.speakers import score

    name = "mono_call/conv_1_8k.flac"
    recording = read_audio(data_dir / name)
    got: list[Any] = []
    async with client(keyed_server).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate="8000", diarize="true"
    ) as connection:
        reader = collect(connection, got)
        await send_paced(connection, pcm16(recording), 8000)
        await connection.send_close_stream()
        await asyncio.wait_for(reader, 60)

    finals = [m for m in got if isinstance(m, ListenV1Results) and m.is_final]
    words = [
        {"speaker": w.speaker, "start": w.start, "end": w.end}
        for m in finals
        for w in m.channel.alternatives[0].words
    ]
    assert words
    assert all(isinstance(w["speaker"], int) for w in words)
    found = score(manifest[name]["speaker_segments"], words)
    assert found["right_speaker"] >= 0.9
    assert found["speakers_found"] == 2


@pytest.mark.model
async def test_a_wrong_key_is_refused_at_the_handshake_with_401(keyed_server: RunningServer) -> None:
    with pytest.raises(ApiError) as raised:
        async with client(keyed_server, key="wrong").listen.v1.connect(model="nova-3"):
            pass
    assert raised.value.status_code == 401


@pytest.mark.model
async def test_deepgram_errors_have_its_shape_and_close_codes(keyed_server: RunningServer) -> None:
    url = f"ws://{keyed_server.host}:{keyed_server.port}/v1/listen"
    # A refused parameter: HTTP 400 with Deepgram's body, never a websocket.
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(
            url + "?callback=https://x", additional_headers={"Authorization": f"Token {KEY}"}
        ):
            pass
    assert refused.value.response.status_code == 400
    body = json.loads(refused.value.response.body or b"{}")
    assert body["err_code"] == "Bad Request"
    assert "callback" in body["err_msg"]
    # The browser form of the key: subprotocols ["token", KEY], answered with "token".
    async with websockets.connect(
        url + "?encoding=linear16&sample_rate=16000", subprotocols=["token", KEY]
    ) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        await ws.send(json.dumps({"type": "Nonsense"}))
        messages = await read_until_closed(ws)
        assert ws.close_code == 1008
        assert ws.close_reason == "DATA-0000"
    assert messages[0]["type"] == "Error"
    assert messages[-1]["type"] == "Metadata"


@pytest.mark.model
async def test_multichannel_results_carry_their_channel(
    keyed_server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    entry = manifest["stereo/call_0_8k.flac"]
    recording = read_audio(data_dir / entry["audio"])
    got: list[Any] = []
    async with client(keyed_server).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate="8000", channels="2", multichannel="true"
    ) as connection:
        reader = collect(connection, got)
        await send_paced(connection, pcm16(recording), 8000, channels=2, speed=4.0)
        await connection.send_close_stream()
        await asyncio.wait_for(reader, 60)
    finals = [m for m in got if isinstance(m, ListenV1Results) and m.is_final]
    assert not [m for m in got if isinstance(m, ListenV1Results) and not m.is_final]  # none asked for
    for channel, segments in enumerate(entry["channel_segments"]):
        said = " ".join(
            m.channel.alternatives[0].transcript for m in finals if m.channel_index == [channel, 2]
        )
        assert wer(" ".join(text for text, _, _ in segments), said) < 0.25, (channel, said)
    assert isinstance(got[-1], ListenV1Metadata)
    assert got[-1].channels == 2


# ---------------------------------------------------------------------------- sans-I/O


def options(**query: str) -> Any:
    return parse_listen_query(query.items(), multilingual=False, languages=frozenset(), max_speakers=2)


def test_the_query_maps_onto_our_stream_and_refuses_what_it_cannot_honour() -> None:
    taken = parse_listen_query(
        [
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("keyterm", "Twilio"),
            ("keywords", "Deepgram:2"),
            ("language", "en-US"),
            ("model", "nova-3"),
            ("endpointing", "300"),
            ("interim_results", "true"),
        ],
        multilingual=False,
        languages=frozenset(),
        max_speakers=2,
    )
    assert taken.stream.encoding == "mulaw"
    assert taken.stream.sample_rate == 8000
    assert taken.stream.hotwords == "Twilio Deepgram"
    assert taken.interim_results
    assert not options().interim_results  # Deepgram's default
    for bad in (
        {"encoding": "opus"},
        {"redact": "pci"},
        {"language": "fr"},
        {"utterance_end_ms": "10"},
        {"vad_events": "maybe"},
    ):
        with pytest.raises(InvalidParameter):
            options(**bad)


def adapter(**query: str) -> tuple[DeepgramAdapter, ManualClock]:
    clock = ManualClock()
    config = Config(partial_interval=0.5)
    listen = options(**query)
    session = Session(
        session_id="t",
        stream=listen.stream,
        settings=SessionSettings.from_config(config, "tiny.en"),
        new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
        clock=clock,
    )
    return DeepgramAdapter(session, listen), clock


def test_finalize_with_nothing_to_transcribe_still_answers_from_finalize() -> None:
    dg, _ = adapter()
    dg.receive_bytes(pcm16(Recording(silence(0.5)[:, None], 16000)))
    dg.receive_text('{"type": "Finalize"}')
    sent = [json.loads(o.text) for o in dg.messages_to_send()]
    assert [(m["type"], m["is_final"], m["from_finalize"]) for m in sent] == [("Results", True, True)]
    assert sent[0]["channel"]["alternatives"][0]["transcript"] == ""


def test_vad_events_announce_speech_and_keepalive_is_quiet() -> None:
    dg, _ = adapter(vad_events="true")
    dg.receive_bytes(pcm16(Recording(silence(0.3)[:, None], 16000)))
    dg.receive_text('{"type": "KeepAlive"}')
    assert dg.messages_to_send() == []
    dg.receive_bytes(pcm16(Recording(tone(0.6)[:, None], 16000)))
    sent = [json.loads(o.text) for o in dg.messages_to_send()]
    assert [m["type"] for m in sent] == ["SpeechStarted"]
    assert 0.2 <= sent[0]["timestamp"] <= 0.35
    assert sent[0]["channel"] == [0, 1]


class ScriptedSession:
    """What the adapter reads of a session when it writes: its events, and the audio received.
    The events are scripted to a real order that a loaded server produces."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []
        self.received_samples = 0
        self.settings = SessionSettings.from_config(Config(), "tiny.en")

    def events_to_send(self) -> list[events.Event]:
        out, self.events = self.events, []
        return out


def test_utterance_end_comes_when_one_final_decode_committed_the_next_utterance_too() -> None:
    # Under load the final decode of one utterance ran while the next was spoken and heard its
    # words, so that one was done with no words of its own; 1 s after the last word, with no
    # speech going on, UtteranceEnd still comes (CI saw it missing once).
    script = ScriptedSession()
    dg = DeepgramAdapter(cast(Session, script), options(utterance_end_ms="1000"))
    rate = 16000
    words = (Word("ask", 3 * rate, 4 * rate, 0.9), Word("country.", 9 * rate, 10 * rate, 0.9))
    script.received_samples = 9 * rate
    script.events = [
        events.SpeechStarted(0, 3 * rate),
        events.SpeechStopped(0, 3 * rate, 5 * rate),
        events.SpeechStarted(0, 6 * rate),
        events.Segment(0, Transcript(start=3 * rate, end=10 * rate, text="ask country.", words=words)),
        events.UtteranceDone(0, 3 * rate, 5 * rate),  # done while the next is spoken: not armed
    ]
    assert [m["type"] for m in map(json.loads, (o.text for o in dg.messages_to_send()))] == ["Results"]
    script.received_samples = 10 * rate + rate // 2
    script.events = [
        events.SpeechStopped(0, 6 * rate, 10 * rate),
        events.UtteranceDone(0, 6 * rate, 10 * rate),
    ]
    assert dg.messages_to_send() == []  # half a second after the last word
    script.received_samples = 11 * rate
    sent = [json.loads(o.text) for o in dg.messages_to_send()]
    assert sent == [{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 10.0}]
    script.received_samples = 20 * rate
    assert dg.messages_to_send() == []  # once


def test_utterance_end_comes_after_a_blip_too_short_to_be_an_utterance() -> None:
    # The last utterance was done while a blip of noise was "speech"; the blip brings no
    # UtteranceDone of its own, and its end arms UtteranceEnd. A blip while an utterance is
    # still decoding arms nothing: that utterance's words are not in yet.
    script = ScriptedSession()
    dg = DeepgramAdapter(cast(Session, script), options(utterance_end_ms="1000"))
    rate = 16000
    word = Word("country.", 1 * rate, 2 * rate, 0.9)
    script.received_samples = 3 * rate
    script.events = [
        events.SpeechStarted(0, 1 * rate),
        events.SpeechStopped(0, 1 * rate, 2 * rate),
        events.SpeechStarted(0, rate * 5 // 2),
        events.SpeechStopped(0, rate * 5 // 2, rate * 26 // 10, kept=False),  # still decoding
    ]
    assert dg.messages_to_send() == []
    script.events = [
        events.SpeechStarted(0, rate * 28 // 10),
        events.Segment(0, Transcript(start=1 * rate, end=2 * rate, text="country.", words=(word,))),
        events.UtteranceDone(0, 1 * rate, 2 * rate),
    ]
    assert [json.loads(o.text)["type"] for o in dg.messages_to_send()] == ["Results"]
    script.events = [events.SpeechStopped(0, rate * 28 // 10, 3 * rate, kept=False)]
    sent = [json.loads(o.text) for o in dg.messages_to_send()]
    assert sent == [{"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 2.0}]


# ---------------------------------------------------------------------------- pipecat


@pytest.mark.model
async def test_a_pipecat_pipeline_with_deepgram_stt_gets_the_transcript(
    keyed_server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    """pipecat's own DeepgramSTTService, pointed at us by its base_url, in a real pipeline: it
    finalizes when its VAD says the user stopped, and hands on TranscriptionFrames."""
    from pipecat.frames.frames import (
        EndFrame,
        InputAudioRawFrame,
        InterimTranscriptionFrame,
        TranscriptionFrame,
        VADUserStartedSpeakingFrame,
        VADUserStoppedSpeakingFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import Frame, FrameDirection, FrameProcessor
    from pipecat.services.deepgram.stt import DeepgramSTTService
    from pipecat.workers.runner import WorkerRunner

    class Collect(FrameProcessor):
        def __init__(self) -> None:
            super().__init__()
            self.finals: list[str] = []
            self.interims: list[str] = []

        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, TranscriptionFrame):
                self.finals.append(frame.text)
            elif isinstance(frame, InterimTranscriptionFrame):
                self.interims.append(frame.text)
            await self.push_frame(frame, direction)

    entry = manifest["read/jfk.flac"]
    audio = pcm16(read_audio(data_dir / entry["audio"]))
    stt = DeepgramSTTService(
        api_key=KEY, base_url=f"ws://{keyed_server.host}:{keyed_server.port}", sample_rate=16000
    )
    collect = Collect()
    worker = PipelineWorker(Pipeline([stt, collect]), params=PipelineParams(audio_in_sample_rate=16000))
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)

    async def speak() -> None:
        await asyncio.sleep(1.0)  # the service connects on its StartFrame
        await worker.queue_frame(VADUserStartedSpeakingFrame())
        for offset in range(0, len(audio), 3200):
            await worker.queue_frame(
                InputAudioRawFrame(audio=audio[offset : offset + 3200], sample_rate=16000, num_channels=1)
            )
            await asyncio.sleep(0.05)
        await worker.queue_frame(VADUserStoppedSpeakingFrame())  # pipecat sends Finalize
        for _ in range(150):
            if wer(entry["text"], " ".join(collect.finals)) < 0.15:
                break
            await asyncio.sleep(0.1)
        await worker.queue_frame(EndFrame())

    await asyncio.wait_for(asyncio.gather(runner.run(), speak()), 60)
    assert wer(entry["text"], " ".join(collect.finals)) < 0.15, collect.finals
    assert collect.interims


# ---------------------------------------------------------------------------- LiveKit


@pytest.mark.model
async def test_livekits_deepgram_plugin_gets_turns_and_their_transcripts(
    keyed_server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    """LiveKit Agents' Deepgram STT (aiohttp, its own query and messages), pointed at us by its
    base_url: our SpeechStarted and speech_final become its start and end of speech."""
    import aiohttp
    from livekit import rtc
    from livekit.agents.stt import SpeechEventType
    from livekit.plugins import deepgram as livekit_deepgram

    entry = manifest["read/jfk.flac"]
    samples = np.frombuffer(pcm16(read_audio(data_dir / entry["audio"])), "<i2")
    kinds: list[SpeechEventType] = []
    finals: list[str] = []
    async with aiohttp.ClientSession() as http:
        stt = livekit_deepgram.STT(
            api_key=KEY,
            base_url=f"{keyed_server.http_url}/v1/listen",
            http_session=http,
            sample_rate=16000,
        )
        stream = stt.stream()

        async def speak() -> None:
            for offset in range(0, len(samples), 1600):
                chunk = samples[offset : offset + 1600]
                stream.push_frame(
                    rtc.AudioFrame(
                        data=chunk.tobytes(),
                        sample_rate=16000,
                        num_channels=1,
                        samples_per_channel=len(chunk),
                    )
                )
                await asyncio.sleep(0.05)
            stream.flush()
            stream.end_input()

        speaking = asyncio.create_task(speak())

        async def listen() -> None:
            async for event in stream:
                kinds.append(event.type)
                if event.type == SpeechEventType.FINAL_TRANSCRIPT:
                    finals.append(event.alternatives[0].text)

        await asyncio.wait_for(listen(), 60)
        await speaking
    assert wer(entry["text"], " ".join(finals)) < 0.15, finals
    assert SpeechEventType.INTERIM_TRANSCRIPT in kinds
    starts = kinds.count(SpeechEventType.START_OF_SPEECH)
    assert starts >= 3  # his phrases are turns
    assert kinds.count(SpeechEventType.END_OF_SPEECH) == starts
