"""The websocket adapter against a scripted socket: a client that stops reading."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import numpy as np
import pytest

from streaming import transport
from streaming.clock import MonotonicClock
from streaming.config import Config, StreamConfig
from streaming.outbox import Outbox
from streaming.scheduler import Scheduler
from streaming.session import Phase, Session
from streaming.settings import SessionSettings
from streaming.transport import StreamConnection
from streaming.vad import Segmenter
from streaming.wire import Outgoing
from tests.fakes import TEST_VAD, LoudnessScorer, ScriptedEngine, silence, tone

UTTERANCES = 8


def scripted_session(session_id: str, config: Config, clock: MonotonicClock) -> Session:
    return Session(
        session_id=session_id,
        stream=StreamConfig(encoding="pcm_f32le"),
        settings=SessionSettings.from_config(config, model="scripted"),
        new_segmenter=lambda: Segmenter(LoudnessScorer(), TEST_VAD),
        clock=clock,
    )


def leftover_tasks() -> list[str]:
    names = [t.get_name() for t in asyncio.all_tasks() if not t.done()]
    return [n for n in names if n.startswith(("read-", "write-", "stop-"))]


class VanishingSocket:
    """Sends some frames of speech, then the client is gone mid-utterance."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = deque(frames)

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0)
        if self.frames:
            return {"type": "websocket.receive", "bytes": self.frames.popleft()}
        return {"type": "websocket.disconnect", "code": 1006}

    async def send_text(self, text: str) -> None:
        await asyncio.sleep(0)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        raise AssertionError("nothing to close: the client is gone")


async def test_a_client_gone_mid_utterance_leaves_no_task_or_buffer() -> None:
    clock = MonotonicClock()
    session = scripted_session("gone", Config(partial_interval=0.5), clock)
    cut = frames()[:25]  # 2.5 s: the second utterance is open when the client vanishes
    scheduler = Scheduler(ScriptedEngine(), batch_size=4, partial_max_age=1.0)
    scheduler.start()
    try:
        connection = StreamConnection(session, scheduler, clock)
        await asyncio.wait_for(connection.run(VanishingSocket(cut)), timeout=10)  # type: ignore[arg-type]
    finally:
        await scheduler.stop()
    assert session.phase is Phase.CLOSED
    assert session.waiting_seconds == 0
    assert session.jobs_to_start() == []
    assert leftover_tasks() == []


class StallingSocket:
    """Sends its frames, reads ``reads_before_stall`` messages, then stops reading (each
    send blocks, as when the TCP window is full) until ``resume`` is set."""

    def __init__(self, frames: list[bytes], reads_before_stall: int) -> None:
        self.frames = deque(frames)
        self.reads_before_stall = reads_before_stall
        self.resume = asyncio.Event()
        self.received: list[dict[str, Any]] = []
        self.close_code: int | None = None

    async def receive(self) -> dict[str, Any]:
        if self.frames:
            await asyncio.sleep(0)
            return {"type": "websocket.receive", "bytes": self.frames.popleft()}
        await asyncio.Event().wait()  # the client holds the socket open, sending nothing more
        raise AssertionError("unreachable")

    async def send_text(self, text: str) -> None:
        if len(self.received) >= self.reads_before_stall:
            await self.resume.wait()
        self.received.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.close_code = code


def frames() -> list[bytes]:
    audio = np.concatenate([np.concatenate([tone(1.0), silence(0.6)]) for _ in range(UTTERANCES)])
    step = 1600
    return [audio[i : i + step].astype("<f4").tobytes() for i in range(0, len(audio), step)]


async def run_stalled(reads_before_stall: int, resume_after: float | None) -> tuple[StallingSocket, Session]:
    clock = MonotonicClock()
    session = scripted_session("slow", Config(partial_interval=0, max_unsent_messages=3), clock)
    socket = StallingSocket(frames(), reads_before_stall)
    scheduler = Scheduler(ScriptedEngine(), batch_size=4, partial_max_age=1.0)
    scheduler.start()
    try:
        connection = StreamConnection(session, scheduler, clock)
        if resume_after is not None:
            asyncio.get_running_loop().call_later(resume_after, socket.resume.set)
        await asyncio.wait_for(connection.run(socket), timeout=10)  # type: ignore[arg-type]
    finally:
        await scheduler.stop()
    return socket, session


async def test_a_client_that_stops_reading_gets_slow_consumer_and_then_everything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "CLOSE_GRACE", 5.0)
    socket, session = await run_stalled(reads_before_stall=2, resume_after=0.5)
    assert leftover_tasks() == []
    assert session.phase is Phase.CLOSED
    assert session.error is not None
    assert session.error.code == "slow_consumer"
    assert socket.close_code == 1008
    kinds = [m["type"] for m in socket.received]
    assert kinds[0] == "ready"
    assert kinds[-1] == "final"
    assert kinds.count("error") == 1
    # What was received before the limit is transcribed and delivered once the client reads.
    final = socket.received[-1]
    sent_segments = [m["segment"] for m in socket.received if m["type"] == "segment"]
    sent_words = [w for s in sent_segments for w in s["words"]]
    assert final["response"]["word_segments"] == sent_words
    assert len(sent_segments) >= 2


async def test_a_client_that_never_reads_again_is_closed_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(transport, "CLOSE_GRACE", 0.3)
    socket, session = await run_stalled(reads_before_stall=2, resume_after=None)
    assert leftover_tasks() == []
    assert session.error is not None
    assert session.error.code == "slow_consumer"
    assert socket.close_code == 1008
    assert len(socket.received) == 2


def test_the_outbox_replaces_a_waiting_partial_of_the_same_channel_and_counts_the_rest() -> None:
    box = Outbox(limit=3)
    assert box.put(Outgoing("partial a", "partial:0"))
    assert box.put(Outgoing("partial a b", "partial:0"))
    assert len(box) == 1  # the newer partial replaced the waiting one
    assert box.put(Outgoing("partial of channel 1", "partial:1"))
    assert len(box) == 2  # another channel's partial does not replace it
    assert box.put(Outgoing("segment"))
    assert not box.put(Outgoing("segment"))
