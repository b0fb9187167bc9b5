"""The sans-I/O session with a scripted engine, scripted VAD scores and a manual clock."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import numpy as np
import pytest

from streaming.clock import ManualClock
from streaming.config import Config, StreamConfig
from streaming.errors import Overloaded
from streaming.jobs import Behind, Job, with_voiceprints
from streaming.messages import ServerMessage
from streaming.session import Phase, Session
from streaming.settings import SessionSettings
from streaming.vad import Segmenter
from streaming.voices import Embedder
from tests.fakes import RATE, TEST_VAD, LoudnessScorer, ScriptedEngine, silence, tone


class Harness:
    """Drives a session: runs its jobs on the scripted engine when told to."""

    def __init__(
        self,
        stream: StreamConfig | None = None,
        *,
        embedder: Embedder | None = None,
        behind: Callable[[], Behind] | None = None,
        **settings: object,
    ) -> None:
        self.clock = ManualClock()
        self.embedder = embedder  # makes the voiceprints a diarized stream's jobs ask for
        self.engine = ScriptedEngine()
        self.session = Session(
            session_id="s1",
            stream=stream or StreamConfig(encoding="pcm_f32le"),
            settings=SessionSettings.from_config(Config(**settings), model="scripted"),  # type: ignore[arg-type]
            new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
            clock=self.clock,
            behind=behind,
        )
        self.sent: list[ServerMessage] = []
        self.pending: list[Job] = []
        self.engine_jobs: list[tuple[Job, str]] = []  # every job run, with its text

    def pump(self, run_jobs: bool = True) -> None:
        while True:
            self.sent += self.session.messages_to_send()
            self.pending += self.session.jobs_to_start()
            if not (run_jobs and self.pending):
                return
            job = self.pending.pop(0)
            decoded = self.engine.transcribe(job.clip, job.options)
            if self.embedder is not None:
                [decoded] = with_voiceprints([job], [decoded], self.embedder)
            self.engine_jobs.append((job, decoded.text))
            self.session.receive_result(job.ticket, decoded)

    def audio(self, samples: np.ndarray, chunk_seconds: float = 0.1, run_jobs: bool = True) -> None:
        step = int(chunk_seconds * RATE)
        for i in range(0, len(samples), step):
            self.clock.advance(chunk_seconds)
            self.session.receive_bytes(samples[i : i + step].astype("<f4").tobytes())
            self.pump(run_jobs)

    def text(self, message: dict[str, object]) -> None:
        self.session.receive_text(json.dumps(message))
        self.pump()

    def of_type(self, kind: str) -> list[ServerMessage]:
        return [m for m in self.sent if m["type"] == kind]


def speech_script() -> np.ndarray:
    return np.concatenate([silence(0.5), tone(1.5), silence(0.6), tone(1.0), silence(0.6)])


def test_ready_segments_final_and_close() -> None:
    h = Harness(partial_interval=0)
    h.pump()
    assert h.sent[0]["type"] == "ready"
    h.audio(speech_script())
    segments = h.of_type("segment")
    assert len(segments) == 2
    h.text({"type": "end"})
    [final] = h.of_type("final")
    assert h.session.phase is Phase.CLOSED
    assert h.session.close_code == 1000
    assert final["transcription"] == " ".join(s["segment"]["text"] for s in segments)  # type: ignore[index]
    words = final["response"]["word_segments"]  # type: ignore[index]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert all(w["speaker"] is None for w in words)


def test_partials_follow_the_cadence_and_stop_when_the_utterance_closes() -> None:
    h = Harness(partial_interval=0.5)
    h.audio(np.concatenate([silence(0.5), tone(3.0)]))
    partials = h.of_type("partial")
    assert 4 <= len(partials) <= 7  # about one per 0.5 s of speech
    # A partial shows the words not committed yet: the cut-off last one at least.
    assert all(p["segment"]["text"].endswith("~") for p in partials)  # type: ignore[index]
    h.audio(silence(1.0))
    # The 3 s of speech came as pieces of one sentence, committed while it was spoken.
    pieces = h.of_type("segment")
    assert len(pieces) > 1
    assert [p["continues"] for p in pieces] == [False] + [True] * (len(pieces) - 1)  # type: ignore[typeddict-item]
    count = len(h.of_type("partial"))
    h.audio(silence(2.0))
    assert len(h.of_type("partial")) == count  # no partials in silence


def test_a_partial_says_since_when_the_captions_are_stale() -> None:
    """The scheduler decodes the stalest captions first: a partial's ``stale_since`` is when the
    stream last showed something new (a partial, or the end of the previous utterance)."""
    h = Harness(partial_interval=0.5)
    h.audio(np.concatenate([silence(0.5), tone(1.5)]), run_jobs=False)
    first = [j for j in h.pending if j.kind == "partial"]
    assert len(first) == 1
    assert first[0].stale_since == 0.0  # nothing shown since the stream opened
    shown_at = h.clock.now()
    h.pump()  # the partial is decoded and sent now
    assert len(h.of_type("partial")) == 1
    h.audio(tone(1.0), run_jobs=False)
    [second] = [j for j in h.pending if j.kind == "partial"]
    assert second.stale_since == shown_at


def test_no_partials_when_the_client_asked_for_none() -> None:
    h = Harness(stream=StreamConfig(encoding="pcm_f32le", interim_results=False))
    h.audio(np.concatenate([tone(3.0), silence(1.0)]))
    assert h.of_type("partial") == []
    assert len(h.of_type("segment")) == 1


def test_finals_are_decoded_one_at_a_time_in_order() -> None:
    h = Harness(partial_interval=0)
    # Hold results back: three utterances close, only one decode is asked for at a time.
    h.audio(np.concatenate([tone(0.5), silence(0.5)] * 3), run_jobs=False)
    assert len(h.pending) == 1
    h.pump()
    starts = [s["segment"]["start"] for s in h.of_type("segment")]  # type: ignore[index]
    assert len(starts) == 3
    assert starts == sorted(starts)


def test_finalize_closes_the_utterance_now_and_the_session_goes_on() -> None:
    h = Harness(partial_interval=0)
    h.audio(tone(1.0))
    assert h.of_type("segment") == []
    h.text({"type": "finalize"})
    assert len(h.of_type("segment")) == 1
    assert h.session.phase is Phase.OPEN
    h.audio(np.concatenate([tone(1.0), silence(0.6)]))
    assert len(h.of_type("segment")) == 2


def test_end_transcribes_the_open_utterance() -> None:
    h = Harness(partial_interval=0)
    h.audio(tone(1.0))
    h.text({"type": "end"})
    assert len(h.of_type("segment")) == 1
    assert h.of_type("final")[0]["transcription"]  # type: ignore[index]


def test_base64_audio_equals_binary_audio() -> None:
    a, b = Harness(partial_interval=0), Harness(partial_interval=0)
    samples = speech_script()
    a.audio(samples)
    for i in range(0, len(samples), 1600):
        b.clock.advance(0.1)
        data = base64.b64encode(samples[i : i + 1600].astype("<f4").tobytes()).decode()
        b.text({"type": "audio", "audio": data})
    assert a.of_type("segment") == b.of_type("segment")


@pytest.mark.parametrize(
    ("text", "code", "close"),
    [
        ("not json", "invalid_message", 1007),
        ('{"type": "dance"}', "invalid_message", 1007),
        ('{"type": "audio", "audio": "@@@"}', "invalid_audio", 1007),
        ("[1, 2]", "invalid_message", 1007),
    ],
)
def test_bad_messages_get_a_typed_error_and_audio_already_sent_is_kept(
    text: str, code: str, close: int
) -> None:
    h = Harness(partial_interval=0)
    h.audio(tone(1.0))
    h.session.receive_text(text)
    h.pump()
    [error] = h.of_type("error")
    assert error["code"] == code  # type: ignore[typeddict-item]
    assert len(h.of_type("segment")) == 1  # the open utterance was still transcribed
    assert h.of_type("final")
    assert h.session.close_code == close


def test_audio_after_end_is_reported_once() -> None:
    h = Harness(partial_interval=0)
    h.audio(tone(0.5), run_jobs=False)
    h.session.receive_text('{"type":"end"}')
    for _ in range(5):
        h.session.receive_bytes(tone(0.1).tobytes())
    h.session.receive_text('{"type":"end"}')
    h.pump()
    assert [e["code"] for e in h.of_type("error")] == ["unexpected_message"]  # type: ignore[typeddict-item]
    assert h.session.close_code == 1008


def test_frame_too_large() -> None:
    h = Harness(partial_interval=0, max_frame_bytes=8000)  # a 0.1 s f32 frame is 6400 bytes
    h.audio(tone(0.5))
    h.session.receive_bytes(b"\0" * 16384)
    h.pump()
    assert h.of_type("error")[0]["code"] == "frame_too_large"  # type: ignore[typeddict-item]
    assert h.session.close_code == 1009
    assert h.of_type("segment")


def test_session_too_long_keeps_everything_up_to_the_limit() -> None:
    h = Harness(partial_interval=0, max_session_seconds=2.0)
    h.audio(np.concatenate([tone(1.0), silence(0.5), tone(2.0)]))
    assert h.of_type("error")[0]["code"] == "session_too_long"  # type: ignore[typeddict-item]
    segments = [s["segment"] for s in h.of_type("segment")]
    assert segments[-1]["end"] == pytest.approx(2.0)  # type: ignore[index]
    assert h.session.close_code == 1008


def test_idle_timeout_ends_with_a_final_and_keepalive_holds_it_off() -> None:
    h = Harness(partial_interval=0, idle_timeout=10.0)
    h.audio(np.concatenate([tone(1.0), silence(0.5)]))
    h.clock.advance(9.0)
    h.text({"type": "keepalive"})
    h.clock.advance(9.0)
    h.session.tick()
    h.pump()
    assert h.session.phase is Phase.OPEN
    deadline = h.session.next_deadline()
    assert deadline is not None
    h.clock.advance(deadline - h.clock.now())
    h.session.tick()
    h.pump()
    assert h.of_type("error")[0]["code"] == "idle_timeout"  # type: ignore[typeddict-item]
    assert h.of_type("final")
    assert h.session.close_code == 1000


def test_a_model_failure_ends_the_stream_with_internal_error() -> None:
    h = Harness(partial_interval=0, eager_finals=False)
    h.audio(np.concatenate([tone(0.5), silence(0.5), tone(0.5)]), run_jobs=False)
    [job] = h.pending
    h.pending.clear()
    h.session.receive_failure(job.ticket, "scripted")
    h.pump()  # the rest of what was received is still decoded
    assert [e["code"] for e in h.of_type("error")] == ["internal_error"]  # type: ignore[typeddict-item]
    assert h.session.close_code == 1011
    [final] = h.of_type("final")
    # The failed utterance is lost; the one after it is transcribed.
    assert len(final["response"]["segments"]) == 1  # type: ignore[typeddict-item]
    assert final["response"]["segments"][0]["start"] > 0.5  # type: ignore[typeddict-item]


def test_words_outside_detected_speech_are_dropped() -> None:
    from streaming.engine import DecodedWord, keep_spoken_words

    words = [DecodedWord(" a", 0.0, 0.4, 0.9), DecodedWord(" b", 1.0, 1.4, 0.9)]
    assert [w.text for w in keep_spoken_words(words, [(0.9, 2.0)])] == [" b"]


def test_the_client_going_away_stops_all_work() -> None:
    h = Harness(partial_interval=0)
    h.audio(np.concatenate([tone(0.5), silence(0.5), tone(0.5), silence(0.5)]), run_jobs=False)
    h.session.client_gone()
    assert h.session.phase is Phase.CLOSED
    assert h.session.jobs_to_start() == []


def test_prompt_and_hotwords_reach_the_decoder() -> None:
    h = Harness(
        stream=StreamConfig(encoding="pcm_f32le", prompt="Kubernetes pods", hotwords="kubectl"),
        partial_interval=0,
    )
    h.audio(np.concatenate([tone(1.0), silence(0.6)]))
    [(_, options)] = h.engine.calls
    assert options.prompt == "Kubernetes pods"
    assert options.hotwords == "kubectl"
    assert options.word_timestamps


def stereo(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.stack([left, right], axis=1).reshape(-1)


def test_each_channel_of_a_multichannel_stream_is_its_own_speaker() -> None:
    stream = StreamConfig(encoding="pcm_f32le", channels=2, multichannel=True, speakers=("agent", "customer"))
    h = Harness(stream=stream, partial_interval=0.5)
    # The agent speaks, then the customer, then both at once.
    agent = np.concatenate([silence(0.5), tone(1.0), silence(2.0), tone(1.0), silence(1.0)])
    customer = np.concatenate([silence(2.0), tone(1.0), silence(1.2), tone(1.0), silence(0.3)])
    h.audio(stereo(agent, customer), chunk_seconds=0.1)
    h.text({"type": "end"})
    segments = [m["segment"] for m in h.of_type("segment")]  # type: ignore[typeddict-item]
    [final] = h.of_type("final")
    listed = final["response"]["segments"]  # type: ignore[typeddict-item]
    speakers = [(s["speaker"], s["start"]) for s in listed]
    assert {s for s, _ in speakers} == {"agent", "customer"}
    assert [s for s, _ in sorted(speakers, key=lambda x: x[1])] == ["agent", "customer", "agent", "customer"]
    for segment in segments:
        assert all(w["speaker"] == segment["speaker"] for w in segment["words"])
    partials = h.of_type("partial")
    assert {p["segment"]["speaker"] for p in partials} == {"agent", "customer"}  # type: ignore[typeddict-item]
    assert [s["start"] for s in listed] == sorted(s["start"] for s in listed)
    # The final joins each speaker's pieces into sentences: the same words, none lost or added.
    sent = sorted(str(w) for s in segments for w in s["words"])
    assert sorted(str(w) for s in listed for w in s["words"]) == sent
    words = final["response"]["word_segments"]  # type: ignore[typeddict-item]
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    ready = h.sent[0]["config"]  # type: ignore[typeddict-item]
    assert ready["multichannel"] is True
    assert ready["speakers"] == ["agent", "customer"]


def test_a_silent_channel_asks_for_no_decode() -> None:
    stream = StreamConfig(encoding="pcm_f32le", channels=2, multichannel=True)
    h = Harness(stream=stream, partial_interval=0.5)
    h.audio(stereo(np.concatenate([tone(1.5), silence(1.0)]), silence(2.5)), run_jobs=True)
    h.text({"type": "end"})
    assert {job.track for job, _ in h.engine_jobs} == {0}
    assert {m["segment"]["speaker"] for m in h.of_type("segment")} == {"channel_0"}  # type: ignore[typeddict-item]


def test_a_final_the_scheduler_refuses_as_overloaded_reaches_the_client_as_overloaded() -> None:
    h = Harness(partial_interval=0, eager_finals=False)
    h.audio(np.concatenate([tone(0.5), silence(0.5), tone(0.5)]), run_jobs=False)
    [job] = h.pending
    h.pending.clear()
    h.session.receive_failure(
        job.ticket, "queue full", Overloaded("the server's transcription queue is full")
    )
    h.pump()
    assert [e["code"] for e in h.of_type("error")] == ["overloaded"]  # type: ignore[typeddict-item]
    assert h.session.close_code == 1008
    assert len(h.of_type("final")) == 1
