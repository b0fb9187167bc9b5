"""The websocket adapter: the only code that reads or writes a socket for a stream.

It feeds frames into the sans-I/O :class:`~streaming.session.Session`, hands the session's
decode jobs to the :class:`~streaming.scheduler.Scheduler`, feeds their results back, sends
the session's messages, and closes with the session's close code.

Per connection: one reader task and this handler's loop, which owns the session. The reader
stops reading while ``MAX_QUEUED_FRAMES`` frames wait, or while more than half of
``max_buffered_seconds`` of closed utterances wait for the model: a client that sends faster
than the model transcribes is slowed down through TCP instead of losing audio. Decode results
come back as done-callbacks on the same event loop.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from streaming import messages
from streaming.clock import Clock
from streaming.errors import InternalError, StreamingError
from streaming.scheduler import PartialResult, Scheduler, SchedulerStopped
from streaming.session import Job, Phase, Session

logger = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 32


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
        stop: asyncio.Event | None = None,
    ) -> None:
        self._stop = stop or asyncio.Event()  # set when the server drains: end the stream
        self._ws = websocket
        self._session = session
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
        self._connected = True

    async def run(self) -> None:
        session = self._session
        reader = asyncio.create_task(self._read(), name=f"read-{session.id}")
        stopper = asyncio.create_task(self._watch_stop(), name=f"stop-{session.id}")
        try:
            await self._flush()
            while session.phase is not Phase.CLOSED:
                event = await self._next_event()
                if event is None:
                    session.tick()
                else:
                    self._handle(event)
                await self._flush()
            if self._connected:
                code = session.close_code or 1000
                reason = session.error.code if session.error else ""
                await self._ws.close(code=code, reason=reason)
        except WebSocketDisconnect:
            session.client_gone()
        except Exception:
            logger.exception("session %s failed", session.id)
            await self._abort()
            raise
        finally:
            reader.cancel()
            stopper.cancel()
            for future in self._pending:
                future.cancel()
            await asyncio.gather(reader, stopper, return_exceptions=True)
        logger.info("session %s closed with %s", session.id, session.close_code)

    async def _abort(self) -> None:
        if not self._connected:
            return
        error = InternalError("the server failed while handling this stream; please retry")
        try:
            await self._ws.send_text(json.dumps(messages.error(error)))
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
                    session.receive_bytes(data)
                else:
                    session.receive_text(data)
            case _Result(job, future):
                self._pending.discard(future)
                if future.cancelled():
                    return
                exc = future.exception()
                if exc is not None:
                    reason = "server shutting down" if isinstance(exc, SchedulerStopped) else str(exc)
                    session.receive_failure(job.ticket, reason)
                    return
                decoded = future.result()
                if decoded is not None:
                    session.receive_result(job.ticket, decoded)
                else:
                    session.receive_failure(job.ticket, "superseded")
            case _Stop():
                session.going_away()
            case _Disconnected(code):
                logger.info("session %s: client disconnected (%d)", session.id, code)
                self._connected = False
                session.client_gone()

    async def _flush(self) -> None:
        session = self._session
        while jobs := session.jobs_to_start():
            self._submit(jobs)
        waiting = session.waiting_seconds
        if waiting > self._high_water:
            self._may_read.clear()
        elif waiting < self._low_water:
            self._may_read.set()
        if not self._connected:
            session.messages_to_send()
            return
        for message in session.messages_to_send():
            await self._ws.send_text(json.dumps(message, ensure_ascii=False))

    def _submit(self, jobs: list[Job]) -> None:
        session = self._session
        for job in jobs:
            try:
                future = self._scheduler.submit(job)
            except (StreamingError, SchedulerStopped) as exc:
                session.receive_failure(job.ticket, str(exc))
                continue
            self._pending.add(future)
            future.add_done_callback(functools.partial(self._on_done, job))

    def _on_done(self, job: Job, future: asyncio.Future[PartialResult]) -> None:
        self._inbox.put_nowait(_Result(job, future))
