"""Prometheus metrics at ``GET /metrics``: streams, the scheduler's work, and the process.

Each app has its own registry (tests run several apps in one process). The scheduler's
counters are not copied: they are read from :class:`~streaming.scheduler.SchedulerStats` at
scrape time, so there is one source of truth.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from streaming.capacity import CapacityEstimate, Totals
from streaming.scheduler import SchedulerStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class _Live(Collector):
    """Gauges and counters read from the running service at each scrape."""

    def __init__(
        self,
        sessions: Callable[[], tuple[int, int, int]],
        stats: Callable[[], SchedulerStats | None],
        eager: dict[str, int],
        capacity: Callable[[SchedulerStats], float | None],
    ) -> None:
        self._sessions = sessions
        self._stats = stats
        self._eager = eager
        self._capacity = capacity

    def collect(self) -> Iterator[Metric]:
        open_, limit, kept = self._sessions()
        yield GaugeMetricFamily("streaming_sessions", "streams open now", value=open_)
        yield GaugeMetricFamily(
            "streaming_sessions_kept",
            "resumable streams whose connection dropped, kept for a resume (counted in streaming_sessions)",
            value=kept,
        )
        yield GaugeMetricFamily("streaming_max_sessions", "streams admitted at most", value=limit)
        stats = self._stats()
        if stats is None:
            return
        decodes = CounterMetricFamily("streaming_decodes", "utterances decoded by the model", labels=["kind"])
        decodes.add_metric(["final"], stats.finals)
        decodes.add_metric(["partial"], stats.partials)
        yield decodes
        dropped = CounterMetricFamily(
            "streaming_partials_dropped",
            "partials not decoded: superseded by a newer one of the same stream, or shed "
            "because they waited past their cadence while the worker was behind",
            labels=["reason"],
        )
        dropped.add_metric(["superseded"], stats.partials_superseded)
        dropped.add_metric(["shed"], stats.partials_shed)
        yield dropped
        yield CounterMetricFamily("streaming_batches", "model calls", value=stats.batches)
        yield CounterMetricFamily(
            "streaming_batched_items", "utterances over all model calls", value=stats.batched_items
        )
        yield GaugeMetricFamily(
            "streaming_largest_batch", "most utterances in one model call", value=stats.largest_batch
        )
        yield CounterMetricFamily(
            "streaming_model_seconds", "seconds the model spent decoding", value=stats.model_seconds
        )
        yield CounterMetricFamily(
            "streaming_final_model_seconds",
            "of streaming_model_seconds, the seconds spent on finals (the work that cannot be shed)",
            value=stats.final_model_seconds,
        )
        yield CounterMetricFamily(
            "streaming_voice_seconds",
            "seconds the speaker model spent on voiceprints of diarized streams",
            value=stats.voice_seconds,
        )
        estimate = self._capacity(stats)
        if estimate is not None:  # absent until enough speech was decoded to tell
            yield GaugeMetricFamily(
                "streaming_capacity_streams",
                "estimated streams this server holds with its latency kept: the share of its "
                "workers' time that finals may take, over what one stream's finals cost lately "
                "(one decode per utterance; streaming.capacity)",
                value=estimate,
            )
        yield CounterMetricFamily(
            "streaming_decode_failures", "decodes the model raised on", value=stats.failures
        )
        eager = CounterMetricFamily(
            "streaming_eager_finals",
            "finals decoded when a pause began: used, discarded (speech resumed, or words missed), "
            "or shed under load (the utterance was decoded when it closed)",
            labels=["outcome"],
        )
        eager.add_metric(["used"], self._eager["used"])
        eager.add_metric(["discarded"], self._eager["discarded"])
        eager.add_metric(["shed"], stats.eager_shed)
        yield eager
        sizes = HistogramMetricFamily(
            "streaming_batch_size", "utterances per model call, by kind of decode", labels=["kind"]
        )
        for kind in ("final", "partial"):
            counts = {size: n for (k, size), n in stats.batch_sizes.items() if k == kind}
            buckets = [(str(b), sum(n for size, n in counts.items() if size <= b)) for b in BATCH_BUCKETS]
            buckets.append(("+Inf", sum(counts.values())))
            sizes.add_metric([kind], buckets, sum_value=sum(size * n for size, n in counts.items()))
        yield sizes
        queued = GaugeMetricFamily("streaming_queued", "decodes waiting for the model", labels=["kind"])
        queued.add_metric(["final"], stats.queued_finals)
        queued.add_metric(["partial"], stats.queued_partials)
        yield queued


class Metrics:
    def __init__(
        self,
        sessions: Callable[[], tuple[int, int, int]],
        stats: Callable[[], SchedulerStats | None],
        workers: Callable[[], int] = lambda: 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # RSS, CPU seconds, open file descriptors
        # Eager finals of closed streams, added by :meth:`stream_closed`.
        self._eager = {"used": 0, "discarded": 0}
        self._capacity = CapacityEstimate()
        self._workers = workers
        self._clock = clock
        self.registry.register(_Live(sessions, stats, self._eager, self._estimate))
        self.refused = Counter(
            "streaming_refused",
            "streams refused before any audio, by error code",
            ["code"],
            registry=self.registry,
        )
        self.lean = Counter(
            "streaming_lean_decodes",
            "decodes of closed streams made cheaper because the model workers were behind: "
            "load_context of context rather than max_context, and partials in the "
            "load_partial_encoder_window",
            registry=self.registry,
        )
        self.closed = Counter(
            "streaming_closed",
            "streams ended, by websocket close code and error code ('' when none)",
            ["close_code", "error"],
            registry=self.registry,
        )

        self.resumes = Counter(
            "streaming_resumes",
            "dropped resumable streams: resumed on a new connection, or expired (not resumed "
            "within resume_grace); a refused resume counts in streaming_refused_total",
            ["outcome"],
            registry=self.registry,
        )

        self._final_latency = Histogram(
            "streaming_final_latency_seconds",
            "from the arrival of an utterance's last speech to its last words sent (segment)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._first_partial = Histogram(
            "streaming_first_partial_latency_seconds",
            "from the arrival of an utterance's first speech to its first partial sent",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._audio = Counter(
            "streaming_audio_seconds", "seconds of audio received by streams", registry=self.registry
        )

    # The session's observer (streaming.timing.Observer)

    def audio_received(self, seconds: float) -> None:
        self._audio.inc(seconds)

    def _estimate(self, stats: SchedulerStats) -> float | None:
        # Read back from the counter and the histogram: one record of each.
        utterances = round(_sample(self._final_latency, "streaming_final_latency_seconds_count"))
        audio = _sample(self._audio, "streaming_audio_seconds_total")
        totals = Totals(stats.final_model_seconds, stats.finals, utterances, audio)
        self._capacity.sample(self._clock(), totals)
        return self._capacity.streams(self._workers())

    def final_latency(self, seconds: float) -> None:
        self._final_latency.observe(seconds)

    def first_partial_latency(self, seconds: float) -> None:
        self._first_partial.observe(seconds)

    def stream_closed(self, eager_used: int, eager_discarded: int, lean: int = 0) -> None:
        self._eager["used"] += eager_used
        self._eager["discarded"] += eager_discarded
        self.lean.inc(lean)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _sample(metric: Counter | Histogram, name: str) -> float:
    """The value of one sample of a metric, as a scrape would read it."""
    return next(s.value for family in metric.collect() for s in family.samples if s.name == name)
