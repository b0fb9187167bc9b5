"""The scheduler: the batching policy sans-I/O, then the worker thread with a scripted engine."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from streaming.clock import ManualClock
from streaming.engine import Clip, Decoded, DecodeOptions
from streaming.errors import Overloaded
from streaming.jobs import Behind, Job, JobKind
from streaming.logs import SessionFilter
from streaming.scheduler import BEHIND_WAIT, LOAD_WINDOW, DecodeFailed, DecodeQueue, Scheduler
from tests.fakes import FINAL, PARTIAL

_tickets = iter(range(1, 1_000_000))


def job(
    session: str, kind: JobKind = "final", options: DecodeOptions | None = None, stale_since: float = 0.0
) -> Job:
    return Job(
        ticket=next(_tickets),
        kind=kind,
        session_id=session,
        clip=Clip(np.zeros(1600, dtype=np.float32)),
        options=options or (FINAL if kind == "final" else PARTIAL),
        start=0,
        stale_since=stale_since,
    )


def queue(batch_size: int = 4) -> DecodeQueue[str]:
    return DecodeQueue(batch_size=batch_size, max_finals=8, partial_max_age=0.5)


def names(batch: Sequence[object]) -> list[str]:
    return [w.token for w in batch]  # type: ignore[attr-defined]


def test_finals_are_batched_in_submission_order_up_to_the_batch_size() -> None:
    q = queue(batch_size=3)
    for i in range(5):
        q.add(job(f"s{i}"), f"f{i}", now=0.0)
    first, _ = q.take(now=0.0)
    second, _ = q.take(now=0.0)
    assert names(first) == ["f0", "f1", "f2"]
    assert names(second) == ["f3", "f4"]
    assert q.take(now=0.0) == ([], [])


def test_finals_come_before_partials_submitted_earlier() -> None:
    q = queue()
    q.add(job("a", "partial"), "pa", now=0.0)
    q.add(job("b", "partial"), "pb", now=0.0)
    q.add(job("c"), "fc", now=0.1)
    batch, _ = q.take(now=0.2)
    assert names(batch) == ["fc"]
    batch, _ = q.take(now=0.2)
    assert names(batch) == ["pa", "pb"]


def test_a_batch_shares_its_options_and_the_rest_keep_their_order() -> None:
    french = replace(FINAL, language="fr")
    q = queue()
    q.add(job("a"), "en1", now=0.0)
    q.add(job("b", options=french), "fr1", now=0.0)
    q.add(job("c"), "en2", now=0.0)
    q.add(job("d", options=french), "fr2", now=0.0)
    assert names(q.take(now=0.0)[0]) == ["en1", "en2"]
    assert names(q.take(now=0.0)[0]) == ["fr1", "fr2"]


def test_a_newer_partial_supersedes_the_waiting_one_of_its_session() -> None:
    q = queue()
    assert q.add(job("a", "partial"), "old", now=0.0) == []
    assert q.add(job("b", "partial"), "other", now=0.0) == []
    assert q.add(job("a", "partial"), "new", now=0.1) == ["old"]
    batch, _ = q.take(now=0.2)
    assert sorted(names(batch)) == ["new", "other"]
    assert q.stats.partials_superseded == 1


def test_stale_partials_are_shed_and_counted_while_finals_keep_the_worker_busy() -> None:
    q = queue(batch_size=1)
    q.add(job("a", "partial"), "pa", now=0.0)
    q.add(job("b"), "fb", now=0.0)
    q.add(job("c"), "fc", now=0.0)
    batch, shed = q.take(now=0.3)
    assert names(batch) == ["fb"]
    assert shed == []
    batch, shed = q.take(now=0.9)
    assert names(batch) == ["fc"]
    assert shed == ["pa"]
    assert q.stats.partials_shed == 1
    assert len(q) == 0


def test_a_fresh_partial_is_not_shed() -> None:
    q = queue()
    q.add(job("a", "partial"), "pa", now=1.0)
    batch, shed = q.take(now=1.4)
    assert names(batch) == ["pa"]
    assert shed == []


def test_partials_batch_smaller_than_finals() -> None:
    q = DecodeQueue[str](batch_size=4, partial_batch_size=2, max_finals=8, partial_max_age=5.0)
    for i in range(4):
        q.add(job(f"s{i}", "partial"), f"p{i}", now=0.0)
    assert len(q.take(now=0.0)[0]) == 2
    for i in range(4):
        q.add(job(f"t{i}"), f"f{i}", now=0.0)
    assert len(q.take(now=0.0)[0]) == 4


def test_the_stalest_captions_get_their_partial_first() -> None:
    """Under load the stream whose captions went longest without an update goes first, whatever
    the order the partials were submitted in."""
    q = DecodeQueue[str](batch_size=4, partial_batch_size=1, max_finals=8, partial_max_age=5.0)
    q.add(job("recent", "partial", stale_since=9.0), "recent", now=10.0)
    q.add(job("oldest", "partial", stale_since=2.0), "oldest", now=10.1)
    q.add(job("older", "partial", stale_since=5.0), "older", now=10.2)
    order = [names(q.take(now=10.3)[0]) for _ in range(3)]
    assert order == [["oldest"], ["older"], ["recent"]]


def test_the_final_queue_is_bounded() -> None:
    q = DecodeQueue[str](batch_size=2, max_finals=2, partial_max_age=0.5)
    q.add(job("a"), "1", now=0.0)
    q.add(job("b"), "2", now=0.0)
    with pytest.raises(Overloaded):
        q.add(job("c"), "3", now=0.0)
    # Partials are bounded by one per session instead.
    for _ in range(10):
        q.add(job("a", "partial"), "p", now=0.0)
    assert q.stats.queued_partials == 1


def test_the_workers_are_behind_while_finals_wait_and_not_once_they_caught_up() -> None:
    q = queue(batch_size=1)
    assert not q.behind(0.0).finals  # nothing decoded: not behind
    q.add(job("a"), "a1", now=0.0)
    q.take(now=0.05)  # one stream: its final waits for nothing
    assert not q.behind(0.1).finals
    for i in range(3):
        q.add(job(f"s{i}"), f"s{i}", now=1.0)
    q.take(now=1.6)
    q.take(now=2.0)
    assert q.behind(2.0).finals  # waits of 0.05, 0.6 and 1.0 s, and one still waiting
    q.take(now=2.1)
    assert q.behind(2.1).finals
    assert not q.behind(2.2 + LOAD_WINDOW).finals  # nothing waited since
    q.add(job("b"), "b1", now=10.0)
    assert not q.behind(10.1).finals
    assert q.behind(10.0 + 2 * BEHIND_WAIT).finals  # a final waiting counts with its wait so far


def test_the_workers_are_behind_while_partials_wait_though_finals_do_not() -> None:
    """Finals go first: under load they wait for little while the partials wait. The partials'
    waits say so, those decoded and those shed alike."""
    q = DecodeQueue[str](batch_size=1, max_finals=8, partial_max_age=5.0)
    q.add(job("a", "partial"), "a1", now=0.0)
    q.take(now=0.05)  # one stream: its partial waits for nothing
    assert not q.behind(0.1).partials
    for i in range(3):
        q.add(job(f"s{i}", "partial"), f"s{i}", now=1.0)
    q.add(job("f"), "f", now=1.15)
    q.take(now=1.2)  # the final, at once
    assert not q.behind(1.2).partials  # partials waiting 0.2 s: not yet
    q.take(now=1.6)
    # Partial waits of 0.05 and 0.6 s, and two waiting 0.6 s; the final waited 0.05 s.
    assert q.behind(1.6) == Behind(finals=False, partials=True)
    q.take(now=1.7)
    q.take(now=1.8)
    assert q.behind(1.8).partials
    assert not q.behind(1.9 + LOAD_WINDOW).partials  # nothing waited since
    # Partials shed for their age waited too.
    q = queue(batch_size=1)
    q.add(job("b", "partial"), "b1", now=0.0)
    q.add(job("c", "partial"), "c1", now=0.0)
    _, shed = q.take(now=q.partial_max_age + 0.1)
    assert sorted(shed) == ["b1", "c1"]
    assert q.behind(q.partial_max_age + 0.2).partials


def test_clear_returns_every_waiting_token() -> None:
    q = queue()
    q.add(job("a"), "fa", now=0.0)
    q.add(job("b", "partial"), "pb", now=0.0)
    assert sorted(q.clear()) == ["fa", "pb"]
    assert len(q) == 0


class GatedEngine:
    """Blocks each model call until the test opens the gate; records the batches."""

    name = "gated"
    multilingual = False
    languages = frozenset({"en"})

    def __init__(self, fail_when: int | None = None) -> None:
        self.gate = threading.Semaphore(0)
        self.started = threading.Event()
        self.entered: list[list[int]] = []  # calls that began, in order
        self.batches: list[list[int]] = []
        self.fail_when = fail_when  # a batch holding audio of this length raises

    def transcribe_batch(self, clips: Sequence[Clip], options: DecodeOptions) -> list[Decoded]:
        audios = [clip.audio for clip in clips]
        self.entered.append([len(a) for a in audios])
        self.started.set()
        self.gate.acquire()
        self.batches.append([len(a) for a in audios])
        if self.fail_when is not None and self.fail_when in self.batches[-1]:
            raise RuntimeError("scripted model failure")
        return [Decoded(text=f"n{len(a)}", words=(), language="en", seconds=0.01) for a in audios]


def sized_job(session: str, samples: int, kind: JobKind = "final") -> Job:
    return replace(job(session, kind), clip=Clip(np.zeros(samples, dtype=np.float32)))


async def test_the_worker_batches_what_waits_while_it_is_busy() -> None:
    engine = GatedEngine()
    scheduler = Scheduler(engine, batch_size=4, partial_max_age=10.0, clock=ManualClock())
    scheduler.start()
    try:
        first = scheduler.submit(sized_job("a", 100))
        await asyncio.to_thread(engine.started.wait)  # the worker is inside the model
        waiting = [scheduler.submit(sized_job(f"s{i}", 200 + i)) for i in range(5)]
        for _ in range(3):
            engine.gate.release()
        results = await asyncio.gather(first, *waiting)
        assert [r.text for r in results if r] == ["n100", "n200", "n201", "n202", "n203", "n204"]
        assert engine.batches == [[100], [200, 201, 202, 203], [204]]
        assert scheduler.stats.batches == 3
        assert scheduler.stats.largest_batch == 4
    finally:
        await scheduler.stop()


async def test_a_failing_batch_is_retried_one_by_one_and_fails_only_its_culprit() -> None:
    engine = GatedEngine(fail_when=666)
    scheduler = Scheduler(engine, batch_size=4, partial_max_age=10.0, clock=ManualClock())
    scheduler.start()
    try:
        blocker = scheduler.submit(sized_job("a", 100))
        await asyncio.to_thread(engine.started.wait)
        good = scheduler.submit(sized_job("b", 200))
        bad = scheduler.submit(sized_job("c", 666))
        also_good = scheduler.submit(sized_job("d", 300))
        for _ in range(5):  # blocker, the failing batch, then three single retries
            engine.gate.release()
        assert (await blocker) is not None
        assert (await good) is not None
        assert (await also_good) is not None
        with pytest.raises(DecodeFailed):
            await bad
        assert engine.batches == [[100], [200, 666, 300], [200], [666], [300]]
        assert scheduler.stats.failures == 1
        # The worker survived: a new request is served.
        later = scheduler.submit(sized_job("e", 400))
        engine.gate.release()
        assert (await later) is not None
    finally:
        await scheduler.stop()


async def test_a_superseded_partial_resolves_to_none_at_once() -> None:
    engine = GatedEngine()
    scheduler = Scheduler(engine, batch_size=4, partial_max_age=10.0, clock=ManualClock())
    scheduler.start()
    try:
        blocker = scheduler.submit(sized_job("a", 100))
        await asyncio.to_thread(engine.started.wait)
        old = scheduler.submit(sized_job("b", 200, "partial"))
        new = scheduler.submit(sized_job("b", 300, "partial"))
        assert (await old) is None
        engine.gate.release()
        engine.gate.release()
        assert (await blocker) is not None
        result = await new
        assert result is not None
        assert result.text == "n300"
    finally:
        await scheduler.stop()


async def test_two_workers_decode_at_once_so_a_final_need_not_wait_for_a_partial_batch() -> None:
    engine = GatedEngine()
    scheduler = Scheduler(engine, batch_size=4, partial_max_age=10.0, workers=2, clock=ManualClock())
    scheduler.start()
    try:
        partial = scheduler.submit(sized_job("a", 100, "partial"))
        await asyncio.to_thread(engine.started.wait)  # one worker is inside the model
        engine.started.clear()
        final = scheduler.submit(sized_job("b", 200))
        await asyncio.to_thread(engine.started.wait)  # the other one took the final
        engine.gate.release()
        engine.gate.release()
        assert (await final) is not None
        assert (await partial) is not None
        assert sorted(engine.batches) == [[100], [200]]
    finally:
        await scheduler.stop()


async def test_a_decode_logs_what_it_was_and_its_wait_and_model_time_on_its_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At debug level (``--log-levels streaming.scheduler=debug``) each decode is a line on its
    stream's session id, for who reads the logs of a slow stream; no text of the user's."""
    engine = GatedEngine()
    clock = ManualClock()
    scheduler = Scheduler(engine, batch_size=4, partial_max_age=10.0, clock=clock)
    caplog.set_level(logging.DEBUG, logger="streaming.scheduler")
    caplog.handler.addFilter(SessionFilter())
    scheduler.start()
    try:
        blocker = scheduler.submit(sized_job("a", 1600))
        await asyncio.to_thread(engine.started.wait)
        engine.started.clear()
        eager = scheduler.submit(replace(sized_job("b", 32000), speculative=True, start=16000))
        clock.advance(0.25)  # the blocker takes 0.25 s, and the eager final waits as long
        engine.gate.release()
        await blocker
        await asyncio.to_thread(engine.started.wait)
        clock.advance(0.5)
        engine.gate.release()
        await eager
    finally:
        await scheduler.stop()
    lines = {r.session_id: r.getMessage() for r in caplog.records if r.name == "streaming.scheduler"}
    assert lines["b"] == (
        "eager final of channel 0: 2.00 s of audio from 1.00 s, 0 characters of context; waited "
        "0.250 s, decoded in 0.500 s (a batch of 1): 0 words"
    )
    assert lines["a"].startswith("final of channel 0: 0.10 s of audio from 0.00 s")
    assert "n32000" not in " ".join(lines.values())


async def test_stop_fails_what_still_waits() -> None:
    engine = GatedEngine()
    scheduler = Scheduler(engine, batch_size=1, partial_max_age=10.0, clock=ManualClock())
    scheduler.start()
    first = scheduler.submit(sized_job("a", 100))
    await asyncio.to_thread(engine.started.wait)
    second = scheduler.submit(sized_job("b", 200))
    stopping = asyncio.create_task(scheduler.stop())
    # stop() marks the scheduler stopping before its first await; let it get there before the
    # first decode ends, or the worker could take the second job before it sees the flag.
    await asyncio.sleep(0)
    engine.gate.release()
    await stopping
    assert (await first) is not None
    with pytest.raises(Exception, match="shutting down"):
        await second


def test_an_eager_final_is_shed_while_anything_waits_and_urgent_partials_go_first() -> None:
    q = queue()
    eager = replace(job("a"), speculative=True)
    assert q.add(eager, "eager-alone", 0.0) == []  # nothing waits: it is decoded
    q.take(0.0)
    q.add(job("b", "partial", stale_since=1.0), "b", 0.0)
    assert q.add(replace(job("c"), speculative=True), "eager-c", 0.0) == ["eager-c"]
    assert q.stats.eager_shed == 1
    urgent = replace(job("d", "partial", stale_since=5.0), urgent=True)
    q.add(urgent, "d", 0.0)
    batch, shed = q.take(10.0)  # both waited past their cadence: only the urgent one is kept
    assert [w.token for w in batch] == ["d"]
    assert shed == ["b"]


def test_a_new_utterances_first_partial_goes_before_every_other_partial_and_is_not_shed() -> None:
    q = DecodeQueue[str](batch_size=4, partial_batch_size=1, max_finals=8, partial_max_age=0.5)
    q.add(replace(job("a", "partial", stale_since=0.0), urgent=True), "urgent", 0.0)
    q.add(job("b", "partial", stale_since=1.0), "stale", 0.0)
    q.add(replace(job("c", "partial", stale_since=9.0), first=True), "first", 0.0)
    q.add(job("d"), "final", 0.0)
    order = [names(q.take(0.4)[0]) for _ in range(4)]
    assert order == [["final"], ["first"], ["urgent"], ["stale"]]
    q.add(replace(job("e", "partial"), first=True), "late first", 0.0)
    q.add(job("f", "partial"), "late", 0.0)
    batch, shed = q.take(3.0)  # both waited past their cadence: the first words are still wanted
    assert names(batch) == ["late first"]
    assert shed == ["late"]


def test_with_a_patience_a_first_partial_that_waited_it_goes_before_the_finals() -> None:
    """``first_patience``: a burst of finals (streams that end their utterances together) held a
    new utterance's first words for a second at 8 streams. A first partial that waited that long
    is decoded before the finals, the longest waiting first; other partials still wait for every
    final. Without it (the default), finals always go first."""
    patience = 0.3
    q = DecodeQueue[str](
        batch_size=1, partial_batch_size=1, max_finals=8, partial_max_age=10.0, first_patience=patience
    )
    for name in ("a", "b", "c"):
        q.add(job(name), f"final {name}", 0.0)
    q.add(job("d", "partial"), "plain", 0.0)
    q.add(replace(job("e", "partial"), first=True, preview=True), "later first", 0.1)
    q.add(replace(job("f", "partial"), first=True), "first", 0.0)
    assert names(q.take(0.0)[0]) == ["final a"]  # not overdue yet: the finals go first
    assert names(q.take(patience)[0]) == ["first"]
    assert names(q.take(patience)[0]) == ["final b"]  # the other first partial is not overdue yet
    assert names(q.take(patience + 0.1)[0]) == ["later first"]
    assert names(q.take(patience + 0.1)[0]) == ["final c"]
    assert names(q.take(patience + 0.1)[0]) == ["plain"]

    default = DecodeQueue[str](batch_size=1, partial_batch_size=1, max_finals=8, partial_max_age=10.0)
    default.add(replace(job("f", "partial"), first=True), "first", 0.0)
    default.add(job("a"), "final", 0.0)
    assert names(default.take(5.0)[0]) == ["final"]


def test_a_preview_and_the_partial_after_it_wait_side_by_side() -> None:
    """A preview (decoded without context beside the previous final) is not superseded by the
    same stream's next partial: it is usually decoded first, and shows the words sooner."""
    q = queue()
    preview = replace(job("a", "partial"), first=True, preview=True)
    assert q.add(preview, "preview", 0.0) == []
    assert q.add(replace(job("a", "partial"), first=True), "partial", 0.1) == []
    assert q.add(replace(job("a", "partial"), first=True), "newer", 0.2) == ["partial"]
    assert sorted(names(q.take(0.2)[0])) == ["newer", "preview"]
