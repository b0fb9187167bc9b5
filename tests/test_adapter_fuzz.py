"""Hostile input on the Deepgram and OpenAI Realtime adapters: any sequence of frames ends in a
typed error or a clean close (never 1011), in bounded memory, with the vendor's invariants kept
(Deepgram's final words never overlap; Realtime's deltas add up to each completed transcript)."""

from __future__ import annotations

import base64
import itertools
import json
import tracemalloc
from typing import Any

import numpy as np
from deepgram.listen.v1 import types as deepgram_types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types import realtime as openai_types

from streaming.clock import ManualClock
from streaming.config import Config, parse_stream_config
from streaming.deepgram import DeepgramAdapter, parse_listen_query
from streaming.driver import settle
from streaming.realtime import RealtimeAdapter, realtime_stream_config
from streaming.session import Phase, Session
from streaming.settings import SessionSettings
from streaming.vad import Segmenter
from streaming.wire import Wire
from tests.fakes import TEST_VAD, LoudnessScorer, ScriptedEngine, silence, tone
from tests.test_realtime import check_items

# Every message validates against the vendor SDK's own model of it (strictly: required fields
# present, types right), not only the SDK's lenient parse.
DEEPGRAM_MODELS = {
    "Results": deepgram_types.ListenV1Results,
    "Metadata": deepgram_types.ListenV1Metadata,
    "SpeechStarted": deepgram_types.ListenV1SpeechStarted,
    "UtteranceEnd": deepgram_types.ListenV1UtteranceEnd,
    "Error": deepgram_types.ListenV1Error,
}
REALTIME_MODELS = {
    "session.created": openai_types.SessionCreatedEvent,
    "session.updated": openai_types.SessionUpdatedEvent,
    "input_audio_buffer.speech_started": openai_types.InputAudioBufferSpeechStartedEvent,
    "input_audio_buffer.speech_stopped": openai_types.InputAudioBufferSpeechStoppedEvent,
    "input_audio_buffer.committed": openai_types.InputAudioBufferCommittedEvent,
    "input_audio_buffer.cleared": openai_types.InputAudioBufferClearedEvent,
    "conversation.item.input_audio_transcription.delta": (
        openai_types.ConversationItemInputAudioTranscriptionDeltaEvent
    ),
    "conversation.item.input_audio_transcription.completed": (
        openai_types.ConversationItemInputAudioTranscriptionCompletedEvent
    ),
    "error": openai_types.RealtimeErrorEvent,
}

SETTINGS = SessionSettings.from_config(Config(max_frame_bytes=64_000), "scripted")
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))


def new_session(stream: Any) -> Session:
    return Session(
        session_id="fuzz",
        stream=stream,
        settings=SETTINGS,
        new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
        clock=ManualClock(),
    )


def pcm16(kind: str, seconds: float, rate: int) -> bytes:
    samples = tone(seconds) if kind == "tone" else silence(seconds)
    if rate != 16000:
        samples = np.interp(np.arange(0, len(samples), 16000 / rate), np.arange(len(samples)), samples)
    return (np.asarray(samples) * 32767).astype("<i2").tobytes()


def drive(wire: Wire, frames: list[Any], closing: str, audio: Any) -> list[dict[str, Any]]:
    """Feed the frames, run every decode asked for after each, then close as the client
    would; every frame the adapter sent, parsed."""
    engine = ScriptedEngine()
    sent: list[dict[str, Any]] = []

    def pump() -> None:
        while True:
            sent.extend(json.loads(o.text) for o in wire.messages_to_send())
            jobs = wire.session.jobs_to_start()
            if not jobs:
                return
            for job in jobs:
                settle(wire.session, job, engine.transcribe(job.clip, job.options))

    for sent_frame in [*frames, closing]:
        if wire.session.phase is Phase.CLOSED:
            break
        frame = audio(*sent_frame) if isinstance(sent_frame, tuple) else sent_frame
        if isinstance(frame, bytes):
            wire.receive_bytes(frame)
        else:
            wire.receive_text(frame)
        pump()
    wire.session.end()
    pump()
    assert all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in sent)
    return sent


def bounded(run: Any) -> Any:
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, peak
    return result


audio = st.tuples(st.sampled_from(["tone", "silence"]), st.floats(0.05, 1.2))
# Audio as (kind, seconds), made when sent: a failing example prints short.
deepgram_frames = st.one_of(
    audio,
    st.binary(max_size=9),  # empty (the old close), odd lengths
    st.sampled_from(
        ['{"type": "KeepAlive"}', '{"type": "Finalize"}', "{", "[]", '{"type": 7}', '{"type": "Nope"}']
    ),
    st.builds(lambda v: json.dumps({"type": v}), scalars),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(deepgram_frames, max_size=20), st.booleans())
def test_deepgram_survives_any_frames(frames: list[Any], interim: bool) -> None:
    query = [("encoding", "linear16"), ("sample_rate", "16000"), ("interim_results", str(interim).lower())]
    options = parse_listen_query(query, multilingual=False, languages=frozenset(), max_speakers=2)
    adapter = DeepgramAdapter(new_session(options.stream), options)
    sent = bounded(lambda: drive(adapter, frames, '{"type": "CloseStream"}', lambda *a: pcm16(*a, 16000)))
    code, _ = adapter.close_frame()
    assert code in (1000, 1008, 1009)  # a typed close: frame_too_large is 1009, never 1011
    for message in sent:
        DEEPGRAM_MODELS[message["type"]].model_validate(message)
    assert sent[-1]["type"] == "Metadata"
    assert [m["type"] for m in sent].count("Metadata") == 1
    finals = [m for m in sent if m["type"] == "Results" and m["is_final"]]
    words = [w for m in finals for w in m["channel"]["alternatives"][0]["words"]]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))
    assert sum(m["from_finalize"] for m in finals) <= sum(f == '{"type": "Finalize"}' for f in frames)


def append(kind: str, seconds: float) -> str:
    return json.dumps(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm16(kind, seconds, 24000)).decode()}
    )


SERVER_VAD = {"type": "server_vad"}
update = st.fixed_dictionaries(
    {
        "type": st.just("session.update"),
        "session": st.dictionaries(st.sampled_from(["audio", "type", "x"]), scalars),
    }
)
realtime_frames = st.one_of(
    audio,
    st.sampled_from(
        [
            '{"type": "input_audio_buffer.commit"}',
            '{"type": "input_audio_buffer.clear"}',
            '{"type": "session.update", "session": {"audio": {"input": {"turn_detection": null}}}}',
            json.dumps(
                {"type": "session.update", "session": {"audio": {"input": {"turn_detection": SERVER_VAD}}}}
            ),
            '{"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}}',
            '{"type": "input_audio_buffer.append", "audio": "!!"}',
            '{"type": "transcription_session.update", "session": {"input_audio_format": "nope"}}',
            "{",
        ]
    ),
    st.builds(json.dumps, update),
    st.binary(max_size=5),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(realtime_frames, max_size=20))
def test_realtime_survives_any_frames(frames: list[Any]) -> None:
    adapter = RealtimeAdapter(
        new_session(realtime_stream_config()), lambda q: parse_stream_config(q, multilingual=False)
    )
    sent = bounded(lambda: drive(adapter, frames, '{"type": "input_audio_buffer.commit"}', append))
    code, _ = adapter.close_frame()
    assert code in (1000, 1008, 1009)  # a typed close: frame_too_large is 1009, never 1011
    assert sent[0]["type"] == "session.created"
    for event in sent:
        REALTIME_MODELS[event["type"]].model_validate(event)
    check_items(sent)
    assert all(
        e["error"]["type"] in ("invalid_request_error", "server_error") for e in sent if e["type"] == "error"
    )
