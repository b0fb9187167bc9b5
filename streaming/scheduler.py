"""One worker thread owns the model and serves every session's decodes.

Invariants:

- only the worker thread calls the engine; the event loop never waits on the model;
- the queue is bounded: finals beyond ``max_pending`` are refused (:class:`Overloaded`), and
  each session holds at most one waiting partial, its newest (an older one is superseded);
- finals come first: a waiting final is always taken before any partial, and finals are
  taken in the order they were submitted (so each session's finals keep their order);
- a failing decode fails only its own request; the worker goes on.

Results cross back to the event loop with ``loop.call_soon_threadsafe``: the only things
shared between the threads are the queues, guarded by one condition variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

from streaming.engine import Decoded, Engine
from streaming.errors import Overloaded
from streaming.session import Job

logger = logging.getLogger(__name__)

# A partial's future resolves to None when a newer partial of its session replaced it.
PartialResult = Decoded | None


class SchedulerStopped(RuntimeError):
    """The scheduler stopped before the request was decoded."""


@dataclass
class SchedulerStats:
    finals: int = 0
    partials: int = 0
    partials_superseded: int = 0
    failures: int = 0
    queued_finals: int = 0
    queued_partials: int = 0


@dataclass
class _Request:
    job: Job
    future: asyncio.Future[PartialResult]


class Scheduler:
    def __init__(self, engine: Engine, *, max_pending: int = 256) -> None:
        self._engine = engine
        self._max_pending = max_pending
        self._cond = threading.Condition()
        self._finals: deque[_Request] = deque()
        self._partials: OrderedDict[str, _Request] = OrderedDict()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = SchedulerStats()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._work, name="model-worker", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Finish the decode in progress, fail the waiting ones, and join the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    def submit(self, job: Job) -> asyncio.Future[PartialResult]:
        """Queue a decode; the future resolves on the event loop that started the scheduler."""
        loop = self._loop
        if loop is None:
            raise SchedulerStopped("the scheduler is not running")
        future: asyncio.Future[PartialResult] = loop.create_future()
        request = _Request(job, future)
        with self._cond:
            if self._stopping:
                raise SchedulerStopped("the server is shutting down")
            if job.kind == "final":
                if len(self._finals) >= self._max_pending:
                    raise Overloaded("the server's transcription queue is full; retry later")
                self._finals.append(request)
            else:
                older = self._partials.pop(job.session_id, None)
                if older is not None:
                    self.stats.partials_superseded += 1
                    if not older.future.done():
                        older.future.set_result(None)
                self._partials[job.session_id] = request
            self._update_depths()
            self._cond.notify()
        return future

    def _update_depths(self) -> None:
        self.stats.queued_finals = len(self._finals)
        self.stats.queued_partials = len(self._partials)

    def _next(self) -> _Request | None:
        with self._cond:
            while not (self._finals or self._partials or self._stopping):
                self._cond.wait()
            if self._stopping:
                return None
            if self._finals:
                request = self._finals.popleft()
            else:
                _, request = self._partials.popitem(last=False)
            self._update_depths()
            return request

    def _work(self) -> None:
        while (request := self._next()) is not None:
            job = request.job
            try:
                decoded = self._engine.transcribe(job.audio, job.options)
            except Exception as exc:  # one bad decode must not take the worker down
                logger.exception("decode failed for session %s", job.session_id)
                self.stats.failures += 1
                self._settle(request, exc)
                continue
            if job.kind == "final":
                self.stats.finals += 1
            else:
                self.stats.partials += 1
            self._settle(request, decoded)
        with self._cond:
            waiting = [*self._finals, *self._partials.values()]
            self._finals.clear()
            self._partials.clear()
        for request in waiting:
            self._settle(request, SchedulerStopped("the server is shutting down"))

    def _settle(self, request: _Request, outcome: Decoded | BaseException) -> None:
        assert self._loop is not None
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, request.future, outcome)


def _resolve(future: asyncio.Future[PartialResult], outcome: Decoded | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
