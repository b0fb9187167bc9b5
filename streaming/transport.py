"""The websocket adapter: the only code that reads or writes a socket for a stream.

It feeds frames into the stream's :class:`~streaming.wire.Wire` (our protocol, or another's
adapter), which parses them and drives the sans-I/O :class:`~streaming.session.Session`; it
hands the session's decode jobs to the :class:`~streaming.scheduler.Scheduler`, feeds their
results back, sends the frames the wire renders from the session's events, and closes with
the wire's close code.

Per connection: one reader task, one writer task, and this handler's loop, which owns the
session. The reader stops reading while ``MAX_QUEUED_FRAMES`` frames wait, or while more than
half of ``max_buffered_seconds`` of closed utterances wait for the model: a client that sends
faster than the model transcribes is slowed down through TCP instead of losing audio. Decode
results come back as done-callbacks on the same event loop.

The writer sends the session's messages from a bounded :class:`Outbox`, so the session never
waits on a client that does not read: an unsent partial is replaced by a newer one, and when
more than ``max_unsent_messages`` wait, the stream ends with ``slow_consumer`` (what was
received is still transcribed and its ``final`` queued; the close follows once the writer has
sent it, or after ``CLOSE_GRACE`` seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from streaming import messages
from streaming.clock import Clock
from streaming.driver import settle
from streaming.errors import InternalError, StreamingError
from streaming.jobs import Job
from streaming.scheduler import PartialResult, Scheduler, SchedulerStopped
from streaming.session import Phase, Session
from streaming.wire import Outgoing, OwnProtocol, Wire

logger = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 32
CLOSE_GRACE = 10.0  # seconds a slow reader gets to take its last messages before the close


class Outbox:
    """Frames waiting for the socket, in order; a waiting partial is replaced by a newer one
    of the same channel (it would be stale by the time the client read it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Outgoing] = deque()
        self._changed = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: Outgoing) -> bool:
        """Queue a frame; False once more than ``limit`` wait."""
        if frame.replaces is not None and self._items and self._items[-1].replaces == frame.replaces:
            self._items[-1] = frame
        else:
            self._items.append(frame)
        self._changed.set()
        return len(self._items) <= self.limit

    async def get(self) -> str:
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        return self._items[0].text

    def sent(self) -> None:
        self._items.popleft()
        self._changed.set()

    async def drained(self) -> None:
        while self._items:
            self._changed.clear()
            await self._changed.wait()


@dataclass(frozen=True, slots=True)
class _Frame:
    data: bytes | str


@dataclass(frozen=True, slots=True)
class _Disconnected:
    code: int


@dataclass(frozen=True, slots=True)
class _Stop:
    """The server is shutting down."""


@dataclass(frozen=True, slots=True)
class _Result:
    job: Job
    future: asyncio.Future[PartialResult]


_Event = _Frame | _Disconnected | _Result | _Stop


async def refuse(websocket: WebSocket, exc: StreamingError) -> None:
    """Accept, say why in an ``error`` message, and close: before any audio is taken."""
    logger.info("refused stream: %s: %s", exc.code, exc.message)
    await websocket.accept()
    await websocket.send_text(json.dumps(messages.error(exc)))
    await websocket.close(code=exc.close_code, reason=exc.code)


class StreamConnection:
    """Runs one session over one accepted websocket."""

    def __init__(
        self,
        websocket: WebSocket,
        session: Session,
        scheduler: Scheduler,
        clock: Clock,
        *,
        stop: asyncio.Event | None = None,
        wire: Wire | None = None,
    ) -> None:
        self._stop = stop or asyncio.Event()  # set when the server drains: end the stream
        self._ws = websocket
        self._session = session
        self._wire: Wire = wire or OwnProtocol(session)
        self._scheduler = scheduler
        self._clock = clock
        self._inbox: asyncio.Queue[_Event] = asyncio.Queue()
        self._frame_slots = asyncio.Semaphore(MAX_QUEUED_FRAMES)
        # Backpressure: stop reading while this much audio waits for the model.
        self._high_water = session.settings.max_buffered_seconds / 2
        self._low_water = self._high_water / 2
        self._may_read = asyncio.Event()
        self._may_read.set()
        self._pending: set[asyncio.Future[PartialResult]] = set()
        self._outbox = Outbox(session.settings.max_unsent_messages)
        self._connected = True
        self._close_frame: tuple[int, str] | None = None  # the close this side sent

    async def run(self) -> None:
        session = self._session
        reader = asyncio.create_task(self._read(), name=f"read-{session.id}")
        writer = asyncio.create_task(self._write(), name=f"write-{session.id}")
        stopper = asyncio.create_task(self._watch_stop(), name=f"stop-{session.id}")
        try:
            self._flush()
            while session.phase is not Phase.CLOSED:
                event = await self._next_event()
                if event is None:
                    session.tick()
                else:
                    self._handle(event)
                self._flush()
            if self._connected:
                await self._close(writer)
        except WebSocketDisconnect:
            session.client_gone()
        except Exception:
            logger.exception("session %s failed", session.id)
            writer.cancel()
            await self._abort()
            raise
        finally:
            tasks = (reader, writer, stopper)
            for task in tasks:
                task.cancel()
            for future in self._pending:
                future.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._close_frame is not None:  # what the client saw: the wire's code and reason
            logger.info("session %s closed with %d %s", session.id, *self._close_frame)
        else:
            logger.info("session %s ended without a close frame (%s)", session.id, session.close_code)

    async def _close(self, writer: asyncio.Task[None]) -> None:
        """Send what is queued (within the grace a slow reader gets), then close."""
        session = self._session
        try:
            await asyncio.wait_for(self._outbox.drained(), CLOSE_GRACE)
        except TimeoutError:
            logger.info(
                "session %s: %d messages unread after %g s; closing",
                session.id,
                len(self._outbox),
                CLOSE_GRACE,
            )
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        if not self._connected:
            return
        code, reason = self._wire.close_frame()
        self._close_frame = (code, reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ws.close(code=code, reason=reason), CLOSE_GRACE)

    async def _write(self) -> None:
        while True:
            text = await self._outbox.get()
            try:
                await self._ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                # The client is gone; the reader reports the disconnect.
                self._connected = False
                self._inbox.put_nowait(_Disconnected(1006))
                return
            self._outbox.sent()

    async def _abort(self) -> None:
        if not self._connected:
            return
        error = InternalError("the server failed while handling this stream; please retry")
        try:
            await self._ws.send_text(self._wire.failure_frame(error).text)
            await self._ws.close(code=error.close_code, reason=error.code)
        except (WebSocketDisconnect, RuntimeError):
            pass

    async def _read(self) -> None:
        while True:
            await self._frame_slots.acquire()
            await self._may_read.wait()
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self._inbox.put_nowait(_Disconnected(int(message.get("code", 1005))))
                return
            data = message.get("bytes")
            self._inbox.put_nowait(_Frame(data if data is not None else message.get("text", "")))

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        self._inbox.put_nowait(_Stop())

    async def _next_event(self) -> _Event | None:
        """The next input, or None when the session's deadline comes first."""
        deadline = self._session.next_deadline()
        if deadline is None:
            return await self._inbox.get()
        try:
            return await asyncio.wait_for(self._inbox.get(), timeout=max(deadline - self._clock.now(), 0.0))
        except TimeoutError:
            return None

    def _handle(self, event: _Event) -> None:
        session = self._session
        match event:
            case _Frame(data):
                self._frame_slots.release()
                if isinstance(data, bytes):
                    self._wire.receive_bytes(data)
                else:
                    self._wire.receive_text(data)
            case _Result(job, future):
                self._pending.discard(future)
                if future.cancelled():
                    return
                exc = future.exception()
                reason = "server shutting down" if isinstance(exc, SchedulerStopped) else None
                settle(session, job, exc if exc is not None else future.result(), reason)
            case _Stop():
                session.going_away()
            case _Disconnected(code):
                logger.info("session %s: client disconnected (%d)", session.id, code)
                self._connected = False
                session.client_gone()

    def _flush(self) -> None:
        session = self._session
        while True:
            while jobs := session.jobs_to_start():
                self._submit(jobs)
            waiting = session.waiting_seconds
            if waiting > self._high_water:
                self._may_read.clear()
            elif waiting < self._low_water:
                self._may_read.set()
            out = self._wire.messages_to_send()
            if not self._connected:
                return
            overflow = False
            for frame in out:
                overflow |= not self._outbox.put(frame)
            if not overflow:
                return
            # The client does not read: end the stream; its error and final are queued past the
            # limit, and the loop goes round for the jobs and messages that follow.
            session.slow_consumer(self._outbox.limit)

    def _submit(self, jobs: list[Job]) -> None:
        session = self._session
        for job in jobs:
            try:
                future = self._scheduler.submit(job)
            except (StreamingError, SchedulerStopped) as exc:  # Overloaded: told so, in those words
                settle(session, job, exc)
                continue
            self._pending.add(future)
            future.add_done_callback(functools.partial(self._on_done, job))

    def _on_done(self, job: Job, future: asyncio.Future[PartialResult]) -> None:
        self._inbox.put_nowait(_Result(job, future))
