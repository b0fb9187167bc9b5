"""Resumable streams, sans-I/O: the acks, the token and the replay of a
:class:`~streaming.resume.ResumableProtocol` with a scripted engine and a manual clock; and the
transport handing a stream from a dropped socket to a new one (scripted sockets)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from typing import Any

import numpy as np
import pytest

from streaming.clock import ManualClock, MonotonicClock
from streaming.config import Config, StreamConfig
from streaming.errors import InvalidParameter, ResumeFailed
from streaming.resume import EndedStreams, ResumableProtocol, ResumeRequest
from streaming.scheduler import Scheduler
from streaming.session import Phase, Session
from streaming.settings import SessionSettings
from streaming.transport import StreamConnection
from streaming.vad import Segmenter
from streaming.wire import OwnProtocol
from tests.fakes import RATE, TEST_VAD, LoudnessScorer, ScriptedEngine, silence, tone
from tests.schema import validate_message

F32 = 4  # bytes per sample of pcm_f32le
TOKEN = "a-resume-token-for-tests"


def new_session(clock: Any, **settings: Any) -> Session:
    return Session(
        session_id="s1",
        stream=StreamConfig(encoding="pcm_f32le", resumable=True),
        settings=SessionSettings.from_config(Config(partial_interval=0, **settings), model="scripted"),
        new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
        clock=clock,
    )


class WireHarness:
    """Drives a resumable wire: frames in, its jobs run on the scripted engine, frames out."""

    def __init__(self, journal_limit: int = 256) -> None:
        self.clock = ManualClock()
        self.engine = ScriptedEngine()
        self.wire = ResumableProtocol(new_session(self.clock), journal_limit=journal_limit, token=TOKEN)
        self.sent: list[dict[str, Any]] = []
        self.pump()

    def pump(self) -> None:
        session = self.wire.session
        while True:
            out = [json.loads(frame.text) for frame in self.wire.messages_to_send()]
            for message in out:
                validate_message(message)  # acks, and the ready with its token, as documented
            self.sent += out
            jobs = session.jobs_to_start()
            if not jobs:
                return
            for job in jobs:
                session.receive_result(job.ticket, self.engine.transcribe(job.clip, job.options))

    def audio(self, samples: np.ndarray, chunk: float = 0.1) -> None:
        step = int(chunk * RATE)
        for i in range(0, len(samples), step):
            self.clock.advance(chunk)
            self.wire.receive_bytes(samples[i : i + step].astype("<f4").tobytes())
            self.pump()

    def text(self, message: dict[str, Any]) -> None:
        self.wire.receive_text(json.dumps(message))
        self.pump()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m["type"] == kind]


def speech(utterances: int) -> np.ndarray:
    return np.concatenate([np.concatenate([tone(1.0), silence(0.6)]) for _ in range(utterances)])


def test_ready_gives_a_resume_token_only_to_a_resumable_stream() -> None:
    h = WireHarness()
    [ready] = h.of_type("ready")
    assert ready["resume_token"] == TOKEN
    plain = OwnProtocol(new_session(ManualClock()))
    [message] = [json.loads(f.text) for f in plain.messages_to_send()]
    assert "resume_token" not in message
    assert ResumableProtocol(new_session(ManualClock()), journal_limit=8).token != TOKEN  # random


def test_audio_is_acknowledged_every_half_second_and_at_each_control_message() -> None:
    h = WireHarness()
    h.audio(silence(2.0))
    acks = [m["audio_bytes"] for m in h.of_type("ack")]
    half_second = RATE // 2 * F32
    assert acks == [half_second, 2 * half_second, 3 * half_second, 4 * half_second]
    h.audio(silence(0.2))
    assert len(h.of_type("ack")) == 4  # 0.2 s is not due yet
    h.text({"type": "keepalive"})
    assert h.of_type("ack")[-1] == {"type": "ack", "audio_bytes": int(2.2 * RATE) * F32, "time": 2.2}
    h.text({"type": "finalize"})
    assert h.of_type("ack")[-1]["audio_bytes"] == int(2.2 * RATE) * F32


def test_acks_count_bytes_as_sent_even_a_sample_split_across_frames() -> None:
    h = WireHarness()
    data = silence(0.6).astype("<f4").tobytes()
    h.wire.receive_bytes(data[:4001])  # a sample cut in two
    h.wire.receive_bytes(data[4001:])
    h.pump()
    assert h.of_type("ack")[-1]["audio_bytes"] == len(data)


def test_a_resume_replays_ready_and_what_came_after_the_segments_the_client_holds() -> None:
    h = WireHarness()
    h.audio(speech(3))
    segments = h.of_type("segment")
    assert len(segments) == 3
    h.wire.check(TOKEN)
    with pytest.raises(ResumeFailed):
        h.wire.check(TOKEN + "-not")
    replay = [json.loads(f.text) for f in h.wire.replay(1)]
    validate_message(replay[0])
    assert replay[0]["type"] == "ready"
    assert replay[0]["session_id"] == "s1"
    assert replay[0]["resumed"] == {
        "audio_bytes": len(speech(3)) * F32,
        "time": round(len(speech(3)) / RATE, 3),
        "segments": 3,
        "ended": False,
    }
    assert replay[1:] == segments[1:]
    # The replay is not an ack: the next ack comes after another half second.
    h.audio(silence(0.2))
    assert h.sent[-1]["type"] != "ack"


def test_after_the_end_the_replay_says_so_and_holds_the_final() -> None:
    h = WireHarness()
    h.audio(speech(2))
    h.text({"type": "end"})
    assert h.wire.session.phase is Phase.CLOSED
    replay = [json.loads(f.text) for f in h.wire.replay(2)]
    assert [m["type"] for m in replay] == ["ready", "final"]
    assert replay[0]["resumed"]["ended"] is True
    assert replay[1] == h.of_type("final")[0]


def test_the_journal_is_bounded() -> None:
    h = WireHarness(journal_limit=2)
    h.audio(speech(4))
    replay = [json.loads(f.text) for f in h.wire.replay(0)]
    assert [m["type"] for m in replay] == ["ready", "segment", "segment"]
    assert replay[1:] == h.of_type("segment")[2:]


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ({"resume": "s1"}, "resume_token"),
        ({"resume": "s1", "resume_token": "t", "language": "en"}, "'language'"),
        ({"resume": "s1", "resume_token": "t", "segments": "-1"}, "segments"),
        ({"resume": "s1", "resume_token": "t", "segments": "two"}, "segments"),
    ],
)
def test_a_malformed_resume_is_an_invalid_parameter(query: dict[str, str], complaint: str) -> None:
    with pytest.raises(InvalidParameter, match=complaint):
        ResumeRequest.parse(query)


# --------------------------------------------------------------------- the transport


class ScriptedSocket:
    """A client's socket: sends its frames, records what it receives; ``drop_after`` frames
    in, the connection is gone (no close frame)."""

    def __init__(
        self, frames: list[bytes | str], drop_after: int | None = None, drop_code: int = 1006
    ) -> None:
        self.frames: deque[bytes | str] = deque(frames)
        self.drop_after = drop_after
        self.drop_code = drop_code
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.taken = 0
        self.spent = asyncio.Event()  # it dropped, or sent all its frames

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0.002)
        if self.drop_after is not None and self.taken >= self.drop_after:
            self.spent.set()
            return {"type": "websocket.disconnect", "code": self.drop_code}
        if not self.frames:
            self.spent.set()
            await asyncio.Event().wait()
        self.taken += 1
        frame = self.frames.popleft()
        key = "bytes" if isinstance(frame, bytes) else "text"
        return {"type": "websocket.receive", key: frame}

    async def send_text(self, text: str) -> None:
        if self.drop_after is not None and self.taken >= self.drop_after:
            self.spent.set()
            raise RuntimeError("the connection is gone")
        self.received.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code = code


def chunks(samples: np.ndarray) -> list[bytes]:
    data = samples.astype("<f4").tobytes()
    step = 1600 * F32
    return [data[i : i + step] for i in range(0, len(data), step)]


async def run_stream(
    sockets: list[ScriptedSocket], grace: float, start_gap: float = 0.05
) -> tuple[StreamConnection, Session]:
    """The stream on its first socket; each later socket resumes it in turn, ``start_gap``
    after the one before it dropped."""
    session = new_session(MonotonicClock())
    wire = ResumableProtocol(session, journal_limit=256, token=TOKEN)
    scheduler = Scheduler(ScriptedEngine(), batch_size=4, partial_max_age=1.0)
    scheduler.start()
    connection = StreamConnection(session, scheduler, MonotonicClock(), wire=wire, grace=grace)
    try:
        runner = asyncio.create_task(connection.run(sockets[0]))  # type: ignore[arg-type]
        for before, socket in itertools.pairwise(sockets):
            await before.spent.wait()
            await asyncio.sleep(start_gap)
            await connection.resume(socket, segments=None)  # type: ignore[arg-type]
        await asyncio.wait_for(runner, timeout=10)
    finally:
        await scheduler.stop()
    return connection, session


async def test_a_dropped_stream_resumed_on_a_new_socket_transcribes_as_one() -> None:
    frames = chunks(speech(4))
    whole = ScriptedSocket([*frames, '{"type":"end"}'])
    _, _ = await run_stream([whole], grace=1.0)
    [expected] = [m for m in whole.received if m["type"] == "final"]

    first = ScriptedSocket(list(frames), drop_after=17)
    # The server holds the first 17 frames: the client resends from there (all frames are
    # whole here; the Python client's own test cuts bytes anywhere).
    second = ScriptedSocket([*frames[17:], '{"type":"end"}'])
    connection, session = await run_stream([first, second], grace=1.0)
    ready = second.received[0]
    assert ready["type"] == "ready"
    assert ready["resumed"]["audio_bytes"] == sum(map(len, frames[:17]))
    [final] = [m for m in second.received if m["type"] == "final"]
    assert final["transcription"] == expected["transcription"]
    shown = [m["segment"]["text"] for s in (first, second) for m in s.received if m["type"] == "segment"]
    assert " ".join(shown) == expected["transcription"]  # every segment once
    assert second.close_code == 1000
    assert session.close_code == 1000
    assert not connection.expired


async def test_a_stream_nobody_resumes_ends_after_the_grace() -> None:
    first = ScriptedSocket(chunks(speech(2)), drop_after=10)
    started = asyncio.get_running_loop().time()
    connection, session = await run_stream([first], grace=0.3)
    assert asyncio.get_running_loop().time() - started >= 0.3
    assert connection.expired
    assert session.phase is Phase.CLOSED
    with pytest.raises(ResumeFailed):
        await connection.resume(ScriptedSocket([]), segments=0)  # type: ignore[arg-type]


async def test_a_resume_takes_over_a_socket_that_still_carries_the_stream() -> None:
    frames = chunks(speech(2))
    first = ScriptedSocket(frames[:5])  # still open, silent: a half-open connection
    second = ScriptedSocket([*frames[5:], '{"type":"end"}'])
    session = new_session(MonotonicClock())
    wire = ResumableProtocol(session, journal_limit=256)
    scheduler = Scheduler(ScriptedEngine(), batch_size=4, partial_max_age=1.0)
    scheduler.start()
    connection = StreamConnection(session, scheduler, MonotonicClock(), wire=wire, grace=1.0)
    try:
        runner = asyncio.create_task(connection.run(first))  # type: ignore[arg-type]
        await first.spent.wait()
        await connection.resume(second, segments=None)  # type: ignore[arg-type]
        await asyncio.wait_for(runner, timeout=10)
    finally:
        await scheduler.stop()
    assert first.close_code == 1008
    assert second.received[-1]["type"] == "final"


async def test_a_server_going_away_keeps_no_dropped_stream() -> None:
    session = new_session(MonotonicClock())
    wire = ResumableProtocol(session, journal_limit=256)
    scheduler = Scheduler(ScriptedEngine(), batch_size=4, partial_max_age=1.0)
    scheduler.start()
    stop = asyncio.Event()
    connection = StreamConnection(session, scheduler, MonotonicClock(), wire=wire, grace=30.0, stop=stop)
    first = ScriptedSocket(chunks(speech(2)), drop_after=10)
    try:
        runner = asyncio.create_task(connection.run(first))  # type: ignore[arg-type]
        await first.spent.wait()
        await asyncio.sleep(0.05)
        assert not runner.done()  # kept for a resume
        stop.set()
        await asyncio.wait_for(runner, timeout=2)  # not the 30 s grace
    finally:
        await scheduler.stop()
    assert session.phase is Phase.CLOSED
    assert not connection.expired


def test_an_ended_stream_is_kept_for_the_grace_and_at_most_limit_of_them() -> None:
    h = WireHarness()
    h.audio(speech(2))
    assert h.wire.ended((1000, "")) is None  # no final yet: nothing to send again
    h.text({"type": "end"})
    ended = h.wire.ended((1000, ""))
    assert ended is not None
    replay = [json.loads(f.text) for f in ended.replay(2)]
    assert [m["type"] for m in replay] == ["ready", "final"]
    assert replay[0]["resumed"]["ended"] is True
    clock = ManualClock()
    kept = EndedStreams(grace=30.0, limit=2, clock=clock)
    for name in ("a", "b", "c"):
        kept.add(name, ended)
        clock.advance(10.0)
    assert kept.find("a") is None  # the oldest made room
    assert kept.find("b") is ended
    clock.advance(10.0)  # b ended 40 s ago
    assert kept.find("b") is None
    assert kept.find("c") is ended
    assert len(kept) == 1


@pytest.mark.parametrize("code", [1000, 1001])
async def test_a_client_that_closes_on_purpose_is_not_waited_for(code: int) -> None:
    first = ScriptedSocket(chunks(speech(2)), drop_after=10, drop_code=code)
    started = asyncio.get_running_loop().time()
    connection, session = await run_stream([first], grace=30.0)
    assert asyncio.get_running_loop().time() - started < 5
    assert not connection.expired
    assert session.phase is Phase.CLOSED
