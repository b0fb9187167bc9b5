"""The websocket adapter: the only code that reads or writes a socket for a stream.

It feeds frames into the stream's :class:`~streaming.wire.Wire` (our protocol, or another's
adapter), which parses them and drives the sans-I/O :class:`~streaming.session.Session`; it
hands the session's decode jobs to the :class:`~streaming.scheduler.Scheduler`, feeds their
results back, sends the frames the wire renders from the session's events, and closes with
the wire's close code.

Per socket: one reader task and one writer task; per stream, the loop of the handler that
opened it, which owns the session. The reader stops reading while ``MAX_QUEUED_FRAMES``
frames wait, or while more than half of ``max_buffered_seconds`` of closed utterances wait for
the model: a client that sends faster than the model transcribes is slowed down through TCP
instead of losing audio. Decode results come back as done-callbacks on the same event loop.

The writer sends the session's messages from a bounded :class:`~streaming.outbox.Outbox`, so the session never
waits on a client that does not read: an unsent partial is replaced by a newer one, and when
more than ``max_unsent_messages`` wait, the stream ends with ``slow_consumer`` (what was
received is still transcribed and its ``final`` queued; the close follows once the writer has
sent it, or after ``CLOSE_GRACE`` seconds).

A resumable stream (:mod:`streaming.resume`) outlives its socket. When the socket drops, the
loop goes on without one for ``grace`` seconds: decodes finish, and the wire's journal keeps
what they produce. A client that resumes hands the loop a new :class:`Link` (the socket and
its outbox, reader and writer), which starts with the wire's replay; a socket still carrying
the stream then is closed with 1008 ``resumed_elsewhere``. If nobody resumes in time, or the
server is stopping, the session ends as if its client had disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from dataclasses import dataclass

from starlette.websockets import WebSocket, WebSocketDisconnect

from streaming import messages
from streaming.clock import Clock
from streaming.driver import settle
from streaming.errors import InternalError, ResumeFailed, StreamingError
from streaming.jobs import Job
from streaming.outbox import Outbox
from streaming.resume import UNKNOWN, EndedStream, ResumableProtocol
from streaming.scheduler import PartialResult, Scheduler, SchedulerStopped
from streaming.session import Phase, Session
from streaming.wire import OwnProtocol, Wire

logger = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 32
CLOSE_GRACE = 10.0  # seconds a slow reader gets to take its last messages before the close
CLIENT_LEFT = frozenset({1000, 1001})  # closes from a client that will not resume
READER_GRACE = 1.0  # seconds a failed send waits for the reader to say how the client went


class Link:
    """One websocket carrying a stream: a stream that resumes has several, one after another."""

    def __init__(self, websocket: WebSocket, outbox: Outbox) -> None:
        self.ws = websocket
        self.outbox = outbox
        self.frame_slots = asyncio.Semaphore(MAX_QUEUED_FRAMES)
        self.connected = True
        self.tasks: list[asyncio.Task[None]] = []
        # Set when this socket's part is over (the stream closed it, it dropped, or a resume
        # took the stream over); ``refused`` says why a resume that never started was turned down.
        self.ended = asyncio.Event()
        self.refused: StreamingError | None = None
        self.after_end: EndedStream | None = None  # the stream closed first: its final again


@dataclass(frozen=True, slots=True)
class _Frame:
    link: Link
    data: bytes | str


@dataclass(frozen=True, slots=True)
class _Disconnected:
    link: Link
    code: int


@dataclass(frozen=True, slots=True)
class _Attach:
    """A client resumed the stream on a new socket."""

    link: Link
    segments: int | None


@dataclass(frozen=True, slots=True)
class _Stop:
    """The server is shutting down."""


@dataclass(frozen=True, slots=True)
class _Result:
    job: Job
    future: asyncio.Future[PartialResult]


_Event = _Frame | _Disconnected | _Attach | _Result | _Stop


async def refuse(websocket: WebSocket, exc: StreamingError) -> None:
    """Accept, say why in an ``error`` message, and close: before any audio is taken."""
    logger.info("refused stream: %s: %s", exc.code, exc.message)
    await websocket.accept()
    await refuse_accepted(websocket, exc)


async def replay_ended(websocket: WebSocket, ended: EndedStream, segments: int | None) -> None:
    """A resume after the stream's final was written (and lost in flight with the connection):
    ``ready``, what the client lacks, the final again, and the stream's close."""
    seen = ended.journal.segments if segments is None else segments
    for frame in ended.replay(seen):
        await websocket.send_text(frame.text)
    await websocket.close(*ended.close)


async def refuse_accepted(websocket: WebSocket, exc: StreamingError) -> None:
    """Say why in an ``error`` message, and close."""
    await websocket.send_text(json.dumps(messages.error(exc)))
    await websocket.close(code=exc.close_code, reason=exc.code)


class StreamConnection:
    """Runs one session over the websockets that carry it: one, or, for a resumable stream,
    one after another (:meth:`resume`), with a grace period between them."""

    def __init__(
        self,
        session: Session,
        scheduler: Scheduler,
        clock: Clock,
        *,
        stop: asyncio.Event | None = None,
        wire: Wire | None = None,
        grace: float = 0.0,
    ) -> None:
        self._stop = stop or asyncio.Event()  # set when the server drains: end the stream
        self._session = session
        self._wire: Wire = wire or OwnProtocol(session)
        # Only a resumable stream outlives its socket, and only while the server is not stopping.
        self._grace = grace if isinstance(self._wire, ResumableProtocol) else 0.0
        self._scheduler = scheduler
        self._clock = clock
        self._inbox: asyncio.Queue[_Event] = asyncio.Queue()
        # Backpressure: stop reading while this much audio waits for the model.
        self._high_water = session.settings.max_buffered_seconds / 2
        self._low_water = self._high_water / 2
        self._may_read = asyncio.Event()
        self._may_read.set()
        self._pending: set[asyncio.Future[PartialResult]] = set()
        self._link: Link | None = None
        self._dropped_at: float | None = None  # when the last socket dropped, while none carries it
        self._segments_written = 0  # the number of the last ``segment`` frame written
        self._finished = False
        self._retiring: set[asyncio.Task[None]] = set()
        self._close_frame: tuple[int, str] | None = None  # the close this side sent
        self.expired = False  # dropped, and not resumed within the grace

    @property
    def wire(self) -> Wire:
        return self._wire

    @property
    def close_frame(self) -> tuple[int, str] | None:
        """The close the client was sent (None: it never got one)."""
        return self._close_frame

    @property
    def connected(self) -> bool:
        """Does a socket carry the stream now? (False while a dropped stream waits.)"""
        return self._link is not None

    async def run(self, websocket: WebSocket) -> None:
        """Run the session on its first socket until it is closed (or dropped for good)."""
        session = self._session
        stopper = asyncio.create_task(self._watch_stop(), name=f"stop-{session.id}")
        self._link = Link(websocket, Outbox(session.settings.max_unsent_messages))
        self._start(self._link)
        try:
            self._flush()
            while True:
                if session.phase is Phase.CLOSED:
                    # Its final is delivered, or kept for a resume while the grace lasts.
                    if self._link is not None and await self._close(self._link):
                        break
                    if self._link is None and not (self._dropped_at is not None and self._keeping()):
                        break
                event = await self._next_event()
                if event is None:
                    if self._grace_over():
                        self._give_up(expired=True)
                    else:
                        session.tick()
                else:
                    self._handle(event)
                self._flush()
        except WebSocketDisconnect:
            session.client_gone()
        except Exception:
            logger.exception("session %s failed", session.id)
            await self._abort()
            raise
        finally:
            self._finished = True
            self._refuse_waiting()
            tasks = [stopper, *self._retiring]
            if self._link is not None:
                tasks += self._link.tasks
                self._link.ended.set()
            for task in tasks:
                task.cancel()
            for future in self._pending:
                future.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._close_frame is not None:  # what the client saw: the wire's code and reason
            code, reason = self._close_frame
            logger.info("session %s closed with %d%s", session.id, code, f" {reason}" if reason else "")
        else:
            logger.info("session %s ended without a close frame (%s)", session.id, session.close_code)

    async def resume(self, websocket: WebSocket, segments: int | None) -> None:
        """Carry the stream on ``websocket`` (accepted) from now on, until it closes or drops.
        If the stream closed first, after its final, the final is sent again; raises
        :class:`ResumeFailed` if it ended without one."""
        if self._finished:
            ended = self.ended()
            if ended is None:
                raise ResumeFailed(UNKNOWN)
            await replay_ended(websocket, ended, segments)
            return
        link = Link(websocket, Outbox(self._session.settings.max_unsent_messages))
        self._inbox.put_nowait(_Attach(link, segments))
        await link.ended.wait()
        if link.refused is not None:
            raise link.refused
        if link.after_end is not None:  # it came as the stream closed, after its final
            await replay_ended(websocket, link.after_end, segments)

    def _start(self, link: Link) -> None:
        name = self._session.id
        link.tasks = [
            asyncio.create_task(self._read(link), name=f"read-{name}"),
            asyncio.create_task(self._write(link), name=f"write-{name}"),
        ]

    def _keeping(self) -> bool:
        """Is a stream without a socket kept for its client to resume?"""
        return self._grace > 0 and not self._stop.is_set() and not self._grace_over()

    def _grace_deadline(self) -> float | None:
        return None if self._dropped_at is None else self._dropped_at + self._grace

    def _grace_over(self) -> bool:
        return self._dropped_at is not None and self._clock.now() >= self._dropped_at + self._grace

    def _give_up(self, *, expired: bool) -> None:
        """Nobody resumed the stream in time (or the server is going away): stop its work."""
        session = self._session
        if expired:
            logger.info("session %s: not resumed within %g s; ended", session.id, self._grace)
        self.expired = expired
        self._dropped_at = None
        self._grace = 0.0
        session.client_gone()

    def _drop(self, link: Link, code: int) -> None:
        """The socket carrying the stream is gone."""
        session = self._session
        link.connected = False
        self._retire(link)
        self._link = None
        self._dropped_at = None
        # A client that closes with 1000 or 1001 (a page that goes away) meant to leave.
        if self._keeping() and code not in CLIENT_LEFT:
            self._dropped_at = self._clock.now()
            logger.info(
                "session %s: connection lost (%d); kept %g s for a resume", session.id, code, self._grace
            )
            return
        logger.info("session %s: client disconnected (%d)", session.id, code)
        session.client_gone()

    def _attach(self, link: Link, segments: int | None) -> None:
        """A resume: the stream goes on on ``link``; a socket still carrying it is closed."""
        session = self._session
        old = self._link
        if old is not None:
            logger.info("session %s: resumed on a new connection; closing the old one", session.id)
            self._retire(old, (1008, "resumed_elsewhere"))
        assert isinstance(self._wire, ResumableProtocol)
        seen = self._segments_written if segments is None else segments
        for frame in self._wire.replay(seen):
            link.outbox.put(frame)
        self._segments_written = min(self._segments_written, seen)
        self._link = link
        self._dropped_at = None
        logger.info("session %s: resumed at %.3f s of audio", session.id, session.received_seconds)
        self._start(link)

    def _retire(self, link: Link, close: tuple[int, str] | None = None) -> None:
        """Stop using ``link``; close its socket with ``close`` if it may still be open."""
        for task in link.tasks:
            task.cancel()
        link.ended.set()
        if close is not None and link.connected:
            link.connected = False
            task = asyncio.create_task(self._close_socket(link.ws, *close))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    @staticmethod
    async def _close_socket(websocket: WebSocket, code: int, reason: str) -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError, TimeoutError):
            await asyncio.wait_for(websocket.close(code=code, reason=reason), CLOSE_GRACE)

    def ended(self) -> EndedStream | None:
        """What a client that resumes after the stream closed is sent (None: nothing, as it
        had no final, or its client never got a close)."""
        if self._close_frame is None or not isinstance(self._wire, ResumableProtocol):
            return None
        return self._wire.ended(self._close_frame)

    def _refuse_waiting(self) -> None:
        """Resumes that came as the stream closed get its final again, if it had one."""
        ended = self.ended()
        while not self._inbox.empty():
            event = self._inbox.get_nowait()
            if isinstance(event, _Attach):
                event.link.after_end = ended
                if ended is None:
                    event.link.refused = ResumeFailed(UNKNOWN)
                event.link.ended.set()

    async def _close(self, link: Link) -> bool:
        """Send what is queued (within the grace a slow reader gets), then close. False if the
        socket dropped first and the stream is kept for a resume."""
        session = self._session
        try:
            await asyncio.wait_for(link.outbox.drained(), CLOSE_GRACE)
        except TimeoutError:
            logger.info(
                "session %s: %d messages unread after %g s; closing",
                session.id,
                len(link.outbox),
                CLOSE_GRACE,
            )
        if not link.connected and self._keeping():
            self._drop(link, 1006)
            return False
        for task in link.tasks:
            task.cancel()
        if link.connected:
            code, reason = self._wire.close_frame()
            self._close_frame = (code, reason)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.ws.close(code=code, reason=reason), CLOSE_GRACE)
        link.ended.set()  # only now: the handler that waits for it would close the socket itself
        return True

    async def _write(self, link: Link) -> None:
        while True:
            frame = await link.outbox.get()
            try:
                await link.ws.send_text(frame.text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                link.connected = False
                link.outbox.abandon()
                # The reader reports how the client went (a close it chose, 1000, is not a
                # drop to keep the stream for); if it cannot tell at once, the socket dropped.
                reader = link.tasks[0]
                await asyncio.wait([reader], timeout=READER_GRACE)
                if not reader.done():
                    self._inbox.put_nowait(_Disconnected(link, 1006))
                return
            if frame.segment is not None:
                self._segments_written = frame.segment
            link.outbox.sent()

    async def _abort(self) -> None:
        link = self._link
        if link is None or not link.connected:
            return
        error = InternalError("the server failed while handling this stream; please retry")
        try:
            await link.ws.send_text(self._wire.failure_frame(error).text)
            await link.ws.close(code=error.close_code, reason=error.code)
        except (WebSocketDisconnect, RuntimeError):
            pass

    async def _read(self, link: Link) -> None:
        while True:
            await link.frame_slots.acquire()
            await self._may_read.wait()
            message = await link.ws.receive()
            if message["type"] == "websocket.disconnect":
                link.outbox.abandon()
                self._inbox.put_nowait(_Disconnected(link, int(message.get("code", 1005))))
                return
            data = message.get("bytes")
            self._inbox.put_nowait(_Frame(link, data if data is not None else message.get("text", "")))

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        self._inbox.put_nowait(_Stop())

    async def _next_event(self) -> _Event | None:
        """The next input, or None when the session's deadline (or the grace) comes first."""
        deadlines = [d for d in (self._session.next_deadline(), self._grace_deadline()) if d is not None]
        if not deadlines:
            return await self._inbox.get()
        try:
            timeout = max(min(deadlines) - self._clock.now(), 0.0)
            return await asyncio.wait_for(self._inbox.get(), timeout=timeout)
        except TimeoutError:
            return None

    def _handle(self, event: _Event) -> None:
        session = self._session
        match event:
            case _Frame(link, data):
                link.frame_slots.release()
                if link is not self._link:
                    return  # in flight from a socket a resume replaced
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
                if self._link is None and self._dropped_at is not None:
                    self._give_up(expired=False)  # nobody can resume on a server that is going away
            case _Disconnected(link, code):
                if link is self._link:
                    self._drop(link, code)
            case _Attach(link, segments):
                self._attach(link, segments)

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
            link = self._link
            if link is None or not link.connected:
                return  # a resumable stream's journal keeps what a resume must replay
            overflow = False
            for frame in out:
                overflow |= not link.outbox.put(frame)
            if not overflow:
                return
            # The client does not read: end the stream; its error and final are queued past the
            # limit, and the loop goes round for the jobs and messages that follow.
            session.slow_consumer(link.outbox.limit)

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
