"""Property-based fuzz of the sans-I/O session: random frames, messages, results and time.

Invariants, whatever a client sends and whenever decodes finish or fail:

- nothing raises out of the session;
- every ``error`` carries a documented code, and the first error decides the close code;
- audio is decoded at most once: final decodes cover disjoint stretches of the stream, in
  order, and no ticket is answered twice;
- every stretch the VAD closed as an utterance is decoded (none is lost), even after the model
  failed on another, unless the client left;
- the session ends with exactly one ``final`` (unless the client left), whose segments are the
  ``segment`` messages sent, in order, and then a close code.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.clock import ManualClock
from streaming.config import Config, StreamConfig
from streaming.errors import StreamingError
from streaming.jobs import Job
from streaming.session import Phase, Session
from streaming.settings import SessionSettings
from streaming.vad import Segmenter
from tests.fakes import TEST_VAD, LoudnessScorer, ScriptedEngine, silence, tone


def _codes(cls: type[StreamingError]) -> set[str]:
    return {cls.code} | {code for sub in cls.__subclasses__() for code in _codes(sub)}


CODES = _codes(StreamingError)


def audio_bytes(kind: str, seconds: float) -> bytes:
    samples = tone(seconds) if kind == "tone" else silence(seconds)
    return samples.astype("<f4").tobytes()


# (kind, seconds): the bytes are made when sent, so a failing example prints short.
audio = st.tuples(st.sampled_from(["tone", "silence"]), st.floats(0.01, 1.5))
actions = st.one_of(
    st.tuples(st.just("bytes"), audio),
    st.tuples(st.just("odd_bytes"), st.binary(min_size=1, max_size=7)),  # a sample split across frames
    st.tuples(st.just("nan"), st.sampled_from([math.nan, math.inf, -math.inf])),
    st.tuples(st.just("base64"), audio),
    st.tuples(st.just("bad_base64"), st.text(min_size=1, max_size=20)),
    st.tuples(st.just("huge"), st.integers(1, 3)),
    st.tuples(
        st.just("text"),
        st.sampled_from(
            [
                '{"type":"end"}',
                '{"type":"keepalive"}',
                '{"type":"finalize"}',
                '{"type":"nonsense"}',
                '{"type":"audio"}',
                "[1, 2]",
                "not json",
                "",
                '{"type":"audio","audio":5}',
            ]
        ),
    ),
    st.tuples(st.just("tick"), st.floats(0.0, 90.0)),
    st.tuples(st.just("run_jobs"), st.integers(0, 3)),
    st.tuples(st.just("fail_job"), st.just(0)),
    st.tuples(st.just("gone"), st.just(0)),
)


class Client:
    def __init__(self) -> None:
        self.clock = ManualClock()
        config = Config(partial_interval=0.5, max_frame_bytes=64_000, idle_timeout=30.0)
        self.session = Session(
            session_id="fuzz",
            stream=StreamConfig(encoding="pcm_f32le"),
            settings=SessionSettings.from_config(config, model="scripted"),
            new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
            clock=self.clock,
        )
        self.engine = ScriptedEngine()
        self.sent: list[dict[str, Any]] = []
        self.pending: list[Job] = []
        self.finals: list[Job] = []
        self.answered: set[int] = set()
        self.gone = False

    def collect(self) -> None:
        self.sent += self.session.messages_to_send()  # type: ignore[arg-type]
        for job in self.session.jobs_to_start():
            self.pending.append(job)
            if job.kind == "final":
                self.finals.append(job)

    def answer(self, job: Job, *, fail: bool = False) -> None:
        assert job.ticket not in self.answered
        self.answered.add(job.ticket)
        if fail:
            self.session.receive_failure(job.ticket, "scripted failure")
        else:
            self.session.receive_result(job.ticket, self.engine.transcribe(job.clip, job.options))

    def act(self, name: str, value: Any) -> None:
        session = self.session
        self.clock.advance(0.05)
        match name:
            case "bytes":
                session.receive_bytes(audio_bytes(*value))
            case "odd_bytes":
                session.receive_bytes(value)
            case "nan":
                session.receive_bytes(np.array([0.1, value, 0.2], dtype="<f4").tobytes())
            case "base64":
                data = base64.b64encode(audio_bytes(*value)).decode()
                session.receive_text(json.dumps({"type": "audio", "audio": data}))
            case "bad_base64":
                session.receive_text(json.dumps({"type": "audio", "audio": value + "!"}))
            case "huge":
                session.receive_bytes(b"\0" * (64_000 * value + 4))
            case "text":
                session.receive_text(value)
            case "tick":
                self.clock.advance(value)
                session.tick()
            case "run_jobs":
                for job in self.pending[:value]:
                    self.answer(job)
                del self.pending[:value]
            case "fail_job":
                if self.pending:
                    self.answer(self.pending.pop(0), fail=True)
            case "gone":
                session.client_gone()
                self.gone = True
        self.collect()

    def finish(self) -> None:
        """The client ends the stream, and every decode is answered."""
        if self.session.phase is Phase.OPEN:
            self.session.receive_text('{"type":"end"}')
        self.collect()
        for _ in range(10_000):
            if not self.pending or self.session.phase is Phase.CLOSED:
                break
            self.answer(self.pending.pop(0))
            self.collect()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(actions, max_size=40))
def test_the_session_survives_any_client(script: list[tuple[str, Any]]) -> None:
    client = Client()
    client.collect()
    for name, value in script:
        if client.session.phase is Phase.CLOSED:
            break
        client.act(name, value)
    client.finish()
    session, sent = client.session, client.sent

    assert session.phase is Phase.CLOSED
    assert session.close_code is not None
    errors = [m for m in sent if m["type"] == "error"]
    assert all(e["code"] in CODES for e in errors)
    if errors and not client.gone:
        assert session.error is not None
        assert session.error.code == errors[0]["code"]
        assert session.close_code == session.error.close_code

    # Each stretch of the stream is committed once: the words sent are disjoint and in order
    # (decodes overlap, by their context, but only their new words are sent).
    words = [w for m in sent if m["type"] == "segment" for w in m["segment"]["words"]]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))

    if client.gone:
        return  # nothing more can be sent to a client that left
    finals = [m for m in sent if m["type"] == "final"]
    assert len(finals) == 1
    assert sent[-1]["type"] == "final"
    assert finals[0]["response"]["word_segments"] == words
    # Nothing the VAD closed was left undecoded, even after a model failure.
    assert all(job.ticket in client.answered for job in client.finals)
