"""The Twilio adapter, sans-I/O: Twilio's events in, our messages out, whatever the events say.

Invariants, for any sequence of events (well-formed or not, wrong types in any field, huge,
negative or jumping timestamps, payloads that are not base64, unknown tracks, media before
start): nothing raises out of the session; every error is a documented code with its close
code (a malformed event is ``invalid_message``, 1007); the session ends with one ``final``; and
the audio it takes in is bounded by the events' payloads plus capped gaps, not by what the
timestamps claim.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.audio import encode_mulaw
from streaming.clock import ManualClock
from streaming.config import Config
from streaming.driver import run_to_final
from streaming.session import Phase, Session
from streaming.settings import SessionSettings
from streaming.twilio import BYTES_PER_MS, MAX_GAP_MS, TrackInterleaver, TwilioAdapter, twilio_stream_config
from streaming.vad import Segmenter
from tests.fakes import TEST_VAD, LoudnessScorer, ScriptedEngine, scripted_decode, tone
from tests.test_session_fuzz import CODES

SID = "MZ00000000000000000000000000000000"
CHUNK = base64.b64encode(encode_mulaw(tone(0.02, freq=300)[::2])).decode()  # 20 ms at 8 kHz


def new_session() -> TwilioAdapter:
    session = Session(
        session_id="t1",
        stream=twilio_stream_config(),
        settings=SessionSettings.from_config(Config(), model="scripted"),
        new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
        clock=ManualClock(),
    )
    return TwilioAdapter(session)


def start(media_format: Any = None, **start_fields: Any) -> dict[str, Any]:
    fields = {"streamSid": SID, "callSid": "CA0", "tracks": ["inbound", "outbound"], **start_fields}
    fields["mediaFormat"] = (
        {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        if media_format is None
        else media_format
    )
    return {"event": "start", "streamSid": SID, "start": fields}


def media(timestamp: Any, track: Any = "inbound", payload: Any = CHUNK) -> dict[str, Any]:
    return {
        "event": "media",
        "streamSid": SID,
        "media": {"track": track, "timestamp": timestamp, "payload": payload},
    }


def run(adapter: TwilioAdapter, events: list[Any]) -> list[dict[str, Any]]:
    """Send the events (dicts as JSON, strings as they are), stop the stream, run its decodes."""
    for event in events:
        adapter.receive_text(event if isinstance(event, str) else json.dumps(event))
    adapter.receive_text(json.dumps({"event": "stop", "streamSid": SID}))
    assert adapter.session.phase is not Phase.OPEN  # a stop ends the stream, or is refused before a start
    return [dict(m) for m in asyncio.run(run_to_final(adapter.session, scripted_decode(ScriptedEngine())))]


def errors(sent: list[dict[str, Any]]) -> list[str]:
    return [m["code"] for m in sent if m["type"] == "error"]


def test_malformed_start_and_media_fields_are_invalid_messages_not_crashes() -> None:
    cases = [
        [start({"encoding": "audio/x-mulaw", "sampleRate": "abc", "channels": 1})],
        [start("x")],
        [start(), media([1])],
        [start(customParameters=["token"])],
        [start(), media(0, payload=12)],
        [start(), media(0, track=["inbound"])],
        [start(), media(-20)],
        [start(), start()],
    ]
    for events in cases:
        adapter = new_session()
        sent = run(adapter, events)
        assert errors(sent)[:1] == ["invalid_message"], events
        assert adapter.session.close_code == 1007, events
        assert [m["type"] for m in sent].count("final") == 1


def test_a_timestamp_that_jumps_hours_fills_a_capped_gap_only() -> None:
    adapter = new_session()
    session = adapter.session
    run(adapter, [start(), media(0), media("30000000"), media(30000020)])
    received = session.received_seconds * 16000
    # 60 ms of payload and one capped gap, at 16 kHz: not 8 hours of silence.
    assert received <= (60 + MAX_GAP_MS + 200) * 16
    assert session.close_code == 1000


def test_padding_moves_a_quiet_track_on_so_its_late_chunk_is_not_placed_twice() -> None:
    lanes = TrackInterleaver()
    for chunk in range(20):  # the outbound track is quiet: it is padded after 200 ms
        lanes.add(0, 20 * chunk, b"\x01" * 160)
    first = lanes.take()
    lanes.add(1, 0, b"\x02" * 160)  # its chunk for the padded stretch comes late: dropped
    lanes.add(1, 400, b"\x03" * 160)
    lanes.add(0, 400, b"\x04" * 160)
    rest = lanes.take(flush=True)
    assert len(first) + len(rest) == 2 * 21 * 20 * BYTES_PER_MS
    assert b"\x02" not in first + rest


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["20", "-5", "30000000", "9" * 30, CHUNK, "inbound", "outbound", "audio/x-mulaw"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
well_formed_media = st.builds(
    media,
    st.integers(0, 5000).map(lambda ms: ms - ms % 20),
    st.sampled_from(["inbound", "outbound"]),
)
events = st.one_of(
    st.just(start()),
    well_formed_media,
    st.builds(media, scalars, scalars, scalars),
    st.builds(start, scalars),
    st.builds(
        lambda e, v: {"event": e, "start": v, "media": v}, st.sampled_from(["start", "media"]), scalars
    ),
    st.sampled_from(
        [
            '{"event":"connected"}',
            '{"event":"mark"}',
            '{"event":"dtmf","dtmf":{"digit":"1"}}',
            "[]",
            "{",
            '"x"',
        ]
    ),
    st.builds(lambda v: {"event": v}, scalars),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=25))
def test_any_sequence_of_events_ends_cleanly_with_bounded_audio(sequence: list[Any]) -> None:
    adapter = new_session()
    session = adapter.session
    tracemalloc.start()
    try:
        sent = run(adapter, sequence)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Whatever the timestamps claim: the session's own buffers (the recent audio it keeps for
    # context, at 16 kHz float32, per track) and the events themselves, not hours of silence.
    assert peak < 16 * 2**20, peak
    assert [m["type"] for m in sent].count("final") == 1
    assert set(errors(sent)) <= CODES
    assert session.close_code in (1000, 1007)
    media_events = sum(isinstance(e, dict) and e.get("event") == "media" for e in sequence)
    received = session.received_seconds * 16000
    # Per media event at most one capped gap and 20 ms of the other track's padding, at 16 kHz.
    assert received <= media_events * (MAX_GAP_MS + 200 + 20) * 16 + 16
    # Each accepted sample is transcribed once: a speaker's words never overlap or go back.
    for speaker in {m["segment"]["speaker"] for m in sent if m["type"] == "segment"}:
        words = [
            w
            for m in sent
            if m["type"] == "segment"
            for w in m["segment"]["words"]
            if w["speaker"] == speaker
        ]
        assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))
