"""Model workers serve every session's decodes, in batches.

:class:`DecodeQueue` is the policy, sans-I/O (no thread, no clock of its own):

- finals come first: a batch of partials is formed only when no final waits, and finals are
  taken in the order they were submitted (a session's finals keep their order; a session
  also never has more than one final submitted at a time);
- a batch holds requests that share their decode options (one model call decodes them
  together), taken from the first waiting request's options: up to ``batch_size`` finals, or
  up to ``partial_batch_size`` partials. Partial batches are kept smaller because a model call
  cannot be interrupted: a final that arrives while partials are decoding waits for them;
- partials are best effort: a session's newer partial replaces its older one still waiting
  (superseded), a partial that waited longer than ``partial_max_age`` is dropped (shed: the
  worker is behind, and the session asks again with fresher audio), and the partial of the
  session whose captions have gone longest without an update (``Job.stale_since``) goes
  first, so that under load every stream's captions keep moving, a new utterance's first
  words first;
- a new utterance's first partial (``Job.first``: none of its words is on screen yet) goes
  before every other partial and is not shed for its age: there is about one per utterance,
  and it is what a viewer waits for;
- with ``first_patience`` set, a first partial that waited that long goes before the finals
  too, the longest waiting first: it is short, and a burst of finals (streams that end their
  utterances together) held one for a second. Finals then wait for those, which near capacity
  they never make up (the trade is measured in docs/benchmarks.md), so it is off by default;
- urgent partials (their words reach the commit bound) go next and are not shed for their
  age; finals still go first (at 8 streams on 2 cores, urgent partials queued with the finals
  tripled the p95 final latency, docs/benchmarks.md);
- eager finals (``Job.speculative``: decoded when a pause begins, in case it ends the
  utterance) are a luxury: one that arrives while anything waits is shed at once, and counted
  (``eager_shed``); the session then decodes the utterance when it closes;
- bounded: at most ``max_finals`` finals wait (more is :class:`Overloaded`), at most one
  partial per session;
- it says when the workers are behind (:meth:`DecodeQueue.behind`: finals, or partials, have
  been waiting), so that sessions can ask for cheaper decodes (:class:`~streaming.jobs.Behind`).

:class:`Scheduler` runs the queue on ``workers`` threads that alone call the engine (on a CPU,
two workers of one thread each decode about a fifth more than one worker of two threads:
docs/benchmarks.md), so a final that arrives while one worker decodes partials usually
finds the other free. Results cross back to the event loop with
``loop.call_soon_threadsafe``. Only the queue is shared between the threads, guarded by one
condition variable. A failing batch is retried item by item, so one bad request fails only
itself, and the worker goes on.

A diarized stream's jobs name stretches to embed (``Job.voices``): the same worker embeds them
with the speaker model right after the decode, so a voiceprint never waits in the queue
behind other streams' decodes, and arrives with the words it labels (``Decoded.voices``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from streaming import logs
from streaming.clock import Clock, MonotonicClock
from streaming.config import MODEL_SAMPLE_RATE
from streaming.engine import Decoded, Engine
from streaming.errors import Overloaded
from streaming.jobs import Behind, Job, JobKind, with_voiceprints
from streaming.voices import Embedder

logger = logging.getLogger(__name__)

# The workers are behind on finals, or on partials, while they waited this long on average
# (those taken over the last LOAD_WINDOW seconds, and those waiting): at one stream a decode
# waits for nothing, at the capacity limit a final waits about a decode.
BEHIND_WAIT = 0.25
LOAD_WINDOW = 5.0

# A partial's future resolves to None when it was superseded or shed.
PartialResult = Decoded | None
T = TypeVar("T")


class SchedulerStopped(RuntimeError):
    """The scheduler stopped before the request was decoded."""


@dataclass
class SchedulerStats:
    finals: int = 0
    partials: int = 0
    partials_superseded: int = 0
    partials_shed: int = 0
    batches: int = 0
    batched_items: int = 0
    largest_batch: int = 0
    failures: int = 0
    eager_shed: int = 0
    model_seconds: float = 0.0
    final_model_seconds: float = 0.0  # of model_seconds, on finals (streaming.capacity)
    voice_seconds: float = 0.0  # compute time spent on voiceprints (diarized streams)
    queued_finals: int = 0
    queued_partials: int = 0
    batch_sizes: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, size) -> calls


@dataclass(frozen=True, slots=True)
class Waiting(Generic[T]):
    job: Job
    token: T  # what the caller resolves when the job is done (a future, in the Scheduler)
    submitted: float


class DecodeQueue(Generic[T]):
    """Which decodes run next, and together."""

    def __init__(
        self,
        *,
        batch_size: int,
        max_finals: int,
        partial_max_age: float,
        partial_batch_size: int | None = None,
        first_patience: float = 0.0,
    ) -> None:
        if batch_size < 1 or (partial_batch_size is not None and partial_batch_size < 1):
            raise ValueError("batch sizes must be >= 1")
        self.first_patience = first_patience  # 0: finals always first
        self.batch_size = batch_size
        self.partial_batch_size = partial_batch_size or batch_size
        self.max_finals = max_finals
        self.partial_max_age = partial_max_age
        self._finals: deque[Waiting[T]] = deque()
        self._partials: OrderedDict[tuple[str, int, bool], Waiting[T]] = OrderedDict()
        # Per kind, (taken at, waited) of the decodes taken in the last LOAD_WINDOW seconds.
        self._waits: dict[JobKind, deque[tuple[float, float]]] = {"final": deque(), "partial": deque()}
        self.stats = SchedulerStats()

    def __len__(self) -> int:
        return len(self._finals) + len(self._partials)

    def add(self, job: Job, token: T, now: float) -> list[T]:
        """Queue a job; returns the tokens of the partials it supersedes and of a shed eager
        final (to resolve to None)."""
        waiting = Waiting(job, token, now)
        superseded: list[T] = []
        if job.speculative and (self._finals or self._partials):
            self.stats.eager_shed += 1
            return [token]
        if job.kind == "final":
            if len(self._finals) >= self.max_finals:
                raise Overloaded("the server's transcription queue is full; retry later")
            self._finals.append(waiting)
        else:
            older = self._partials.pop(job.stream_key, None)
            if older is not None:
                self.stats.partials_superseded += 1
                superseded.append(older.token)
            self._partials[job.stream_key] = waiting
        self._count()
        return superseded

    def take(self, now: float) -> tuple[list[Waiting[T]], list[T]]:
        """The next batch (empty when nothing waits) and the tokens of the partials shed."""
        shed = self._shed(now)
        self._forget_waits(now)
        overdue = self._overdue_firsts(now)  # only ever while finals wait
        if self._finals and not overdue:
            batch = _take_alike(self._finals, self.batch_size)
        else:
            queue = overdue or deque(sorted(self._partials.values(), key=_partial_rank))
            batch = _take_alike(queue, self.partial_batch_size)
            for waiting in batch:
                del self._partials[waiting.job.stream_key]
        for waiting in batch:
            self._waits[waiting.job.kind].append((now, now - waiting.submitted))
        self._count()
        return batch, shed

    def _overdue_firsts(self, now: float) -> deque[Waiting[T]]:
        """The first partials that waited ``first_patience``, the longest waiting first."""
        if not self.first_patience or not self._finals:
            return deque()
        late = (
            w for w in self._partials.values() if w.job.first and now - w.submitted >= self.first_patience
        )
        return deque(sorted(late, key=lambda w: w.submitted))

    def behind(self, now: float) -> Behind:
        """Are the workers behind, on finals and on partials? They are on a kind whose decodes
        waited ``BEHIND_WAIT`` or more on average: those taken (or, partials, shed) in the last
        ``LOAD_WINDOW`` seconds and those still waiting."""
        self._forget_waits(now)
        return Behind(
            finals=self._waited(now, "final", self._finals),
            partials=self._waited(now, "partial", self._partials.values()),
        )

    def _waited(self, now: float, kind: JobKind, waiting: Iterable[Waiting[T]]) -> bool:
        waits = [waited for _, waited in self._waits[kind]] + [now - w.submitted for w in waiting]
        return bool(waits) and sum(waits) / len(waits) >= BEHIND_WAIT

    def _forget_waits(self, now: float) -> None:
        for taken in self._waits.values():
            while taken and now - taken[0][0] > LOAD_WINDOW:
                taken.popleft()

    def clear(self) -> list[T]:
        tokens = [w.token for w in (*self._finals, *self._partials.values())]
        self._finals.clear()
        self._partials.clear()
        self._count()
        return tokens

    def _shed(self, now: float) -> list[T]:
        stale = [
            sid
            for sid, w in self._partials.items()
            if now - w.submitted > self.partial_max_age and not (w.job.urgent or w.job.first)
        ]
        self.stats.partials_shed += len(stale)
        shed = [self._partials.pop(sid) for sid in stale]
        self._waits["partial"].extend((now, now - w.submitted) for w in shed)
        return [w.token for w in shed]

    def _count(self) -> None:
        self.stats.queued_finals = len(self._finals)
        self.stats.queued_partials = len(self._partials)


def _partial_rank(waiting: Waiting[T]) -> tuple[bool, bool, float]:
    """Partials' order: a new utterance's first words, then words reaching their bound, then
    the stream whose captions have gone longest without an update."""
    job = waiting.job
    return (not job.first, not job.urgent, job.stale_since)


def _take_alike(queue: deque[Waiting[T]], limit: int) -> list[Waiting[T]]:
    """Up to ``limit`` requests with the oldest one's options, oldest first; the rest keep
    their order in ``queue``."""
    if not queue:
        return []
    options = queue[0].job.options
    batch: list[Waiting[T]] = []
    rest: deque[Waiting[T]] = deque()
    while queue:
        waiting = queue.popleft()
        if len(batch) < limit and waiting.job.options == options:
            batch.append(waiting)
        else:
            rest.append(waiting)
    queue.extend(rest)
    return batch


Future = asyncio.Future[PartialResult]


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        batch_size: int,
        partial_max_age: float,
        partial_batch_size: int | None = None,
        first_patience: float = 0.0,
        workers: int = 1,
        max_finals: int = 1024,
        clock: Clock | None = None,
        voices: Embedder | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._engine = engine
        self._voices = voices
        self._clock = clock or MonotonicClock()
        self._queue: DecodeQueue[Future] = DecodeQueue(
            batch_size=batch_size,
            partial_batch_size=partial_batch_size,
            max_finals=max_finals,
            partial_max_age=partial_max_age,
            first_patience=first_patience,
        )
        self._cond = threading.Condition()
        self._stopping = False
        self._workers = workers
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def stats(self) -> SchedulerStats:
        return self._queue.stats

    @property
    def batch_size(self) -> int:
        return self._queue.batch_size

    @property
    def workers(self) -> int:
        return self._workers

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._threads = [
            threading.Thread(target=self._work, name=f"model-worker-{i}", daemon=True)
            for i in range(self._workers)
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self) -> None:
        """Finish the batches in progress, fail the waiting ones, and join the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        self._threads = []
        with self._cond:
            waiting = self._queue.clear()
        for future in waiting:
            self._settle(future, SchedulerStopped("the server is shutting down"))

    def behind(self) -> Behind:
        """See :meth:`DecodeQueue.behind`."""
        with self._cond:
            return self._queue.behind(self._clock.now())

    def submit(self, job: Job) -> Future:
        """Queue a decode; the future resolves on the event loop that started the scheduler."""
        loop = self._loop
        if loop is None:
            raise SchedulerStopped("the scheduler is not running")
        future: Future = loop.create_future()
        with self._cond:
            if self._stopping:
                raise SchedulerStopped("the server is shutting down")
            superseded = self._queue.add(job, future, self._clock.now())
            self._cond.notify()
        for older in superseded:
            _resolve(older, None)  # on the loop's thread: submit is called there
        return future

    def _next(self) -> list[Waiting[Future]] | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                batch, shed = self._queue.take(self._clock.now())
                for future in shed:
                    self._settle(future, None)
                if batch:
                    return batch
                self._cond.wait()

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            self._run(batch)

    def _run(self, batch: list[Waiting[Future]]) -> None:
        options = batch[0].job.options
        began = self._clock.now()
        try:
            results = self._engine.transcribe_batch([w.job.clip for w in batch], options)
            if self._voices is not None and any(w.job.voices for w in batch):
                results = self._embed(batch, results, self._voices)
        except Exception:  # one bad request must not take the worker, or its batch, down
            if len(batch) == 1:
                logger.exception("decode failed for session %s", batch[0].job.session_id)
                self._count_failure()
                self._settle(batch[0].token, _failure(batch[0].job))
                return
            logger.warning(
                "a batch of %d failed; retrying its requests one by one", len(batch), exc_info=True
            )
            for waiting in batch:
                self._run([waiting])
            return
        with self._cond:
            stats = self.stats
            stats.batches += 1
            stats.batched_items += len(batch)
            stats.largest_batch = max(stats.largest_batch, len(batch))
            key = (batch[0].job.kind, len(batch))
            stats.batch_sizes[key] = stats.batch_sizes.get(key, 0) + 1
            stats.model_seconds += sum(r.seconds for r in results)
            if key[0] == "final":
                stats.final_model_seconds += sum(r.seconds for r in results)
            for waiting in batch:
                if waiting.job.kind == "final":
                    stats.finals += 1
                else:
                    stats.partials += 1
        if logger.isEnabledFor(logging.DEBUG):
            _log_decodes(batch, results, began, self._clock.now())
        for waiting, decoded in zip(batch, results, strict=True):
            self._settle(waiting.token, decoded)

    def _embed(
        self, batch: list[Waiting[Future]], results: list[Decoded], embedder: Embedder
    ) -> list[Decoded]:
        began = time.perf_counter()
        results = with_voiceprints([w.job for w in batch], results, embedder)
        spent = time.perf_counter() - began
        with self._cond:
            self.stats.voice_seconds += spent
        return results

    def _count_failure(self) -> None:
        with self._cond:
            self.stats.failures += 1

    def _settle(self, future: Future, outcome: PartialResult | BaseException) -> None:
        assert self._loop is not None
        # A closed loop raises RuntimeError: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_resolve, future, outcome)


def _log_decodes(batch: list[Waiting[Future]], results: list[Decoded], began: float, ended: float) -> None:
    """A line per decode (``--log-levels streaming.scheduler=debug``), on its stream's session
    id: what was decoded, how long it waited for a worker and how long the model call took. No
    text: a transcript is the user's."""
    for waiting, decoded in zip(batch, results, strict=True):
        job = waiting.job
        token = logs.session_id.set(job.session_id)
        try:
            logger.debug(
                "%s of channel %d: %.2f s of audio from %.2f s, %d characters of context; waited "
                "%.3f s, decoded in %.3f s (a batch of %d): %d words",
                job.label,
                job.track,
                len(job.clip.audio) / MODEL_SAMPLE_RATE,
                job.start / MODEL_SAMPLE_RATE,
                len(job.clip.prefix),
                began - waiting.submitted,
                ended - began,
                len(batch),
                len(decoded.words),
            )
        finally:
            logs.session_id.reset(token)


class DecodeFailed(RuntimeError):
    """The model raised while decoding this request (logged with its traceback)."""


def _failure(job: Job) -> DecodeFailed:
    return DecodeFailed(f"the model failed on a {job.kind} of session {job.session_id}")


def _resolve(future: Future, outcome: PartialResult | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
