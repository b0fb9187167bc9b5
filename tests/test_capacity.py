"""The capacity estimate (pure logic, scripted totals and times), and its gauge in /metrics."""

from __future__ import annotations

import pytest

from streaming.capacity import FINALS_SHARE, CapacityEstimate, Totals
from streaming.metrics import Metrics
from streaming.scheduler import SchedulerStats


def totals(model: float, decodes: int, utterances: int, audio: float) -> Totals:
    return Totals(
        final_model_seconds=model, final_decodes=decodes, utterances=utterances, audio_seconds=audio
    )


def test_no_estimate_until_enough_speech_was_decoded() -> None:
    estimate = CapacityEstimate(window=300)
    assert estimate.streams(workers=2) is None
    estimate.sample(0.0, totals(0, 0, 0, 0))
    estimate.sample(10.0, totals(2.0, 4, 4, 30.0))  # half a minute: too little to tell
    assert estimate.streams(workers=2) is None
    estimate.sample(40.0, totals(6.0, 12, 12, 120.0))
    # 0.5 s a final, one utterance every 10 s: 0.05 s of model per second of a stream.
    assert estimate.streams(workers=2) == pytest.approx(2 * FINALS_SHARE / 0.05)


def test_finals_decoded_twice_per_utterance_cost_what_one_does() -> None:
    # Eager finals at low load: more decodes, the same utterances; they are shed under load,
    # so the estimate counts one decode per utterance.
    estimate = CapacityEstimate(window=300)
    estimate.sample(0.0, totals(0, 0, 0, 0))
    estimate.sample(100.0, totals(12.0, 24, 12, 120.0))
    assert estimate.streams(workers=2) == pytest.approx(2 * FINALS_SHARE / 0.05)


def test_the_estimate_follows_the_newest_window() -> None:
    estimate = CapacityEstimate(window=100)
    estimate.sample(0.0, totals(0, 0, 0, 0))
    estimate.sample(100.0, totals(10.0, 10, 10, 100.0))  # 1 s a final, one every 10 s: 0.1
    slow = 2 * FINALS_SHARE / 0.1
    assert estimate.streams(workers=2) == pytest.approx(slow)
    for t in range(110, 400, 10):  # then finals ten times cheaper
        n = (t - 100) // 10
        estimate.sample(float(t), totals(10.0 + 0.1 * n, 10 + n, 10 + n, float(t)))
    assert estimate.streams(workers=2) == pytest.approx(10 * slow, rel=0.01)


def test_a_quiet_window_falls_back_to_the_whole_life_of_the_process() -> None:
    estimate = CapacityEstimate(window=60)
    estimate.sample(0.0, totals(0, 0, 0, 0))
    estimate.sample(50.0, totals(10.0, 20, 20, 200.0))
    for t in range(60, 600, 30):  # nobody streams: the totals stay
        estimate.sample(float(t), totals(10.0, 20, 20, 200.0))
    assert estimate.streams(workers=1) == pytest.approx(FINALS_SHARE / 0.05)


def test_metrics_export_the_estimate_once_there_is_enough_to_tell() -> None:
    stats = SchedulerStats()
    now = [0.0]
    metrics = Metrics(
        sessions=lambda: (3, 8, 0), stats=lambda: stats, workers=lambda: 2, clock=lambda: now[0]
    )
    assert b"streaming_capacity_streams" not in metrics.render()
    metrics.audio_received(120.0)
    for _ in range(12):  # twelve utterances' last words sent
        metrics.final_latency(0.5)
    stats.finals, stats.final_model_seconds = 12, 6.0
    now[0] = 60.0
    text = metrics.render().decode()
    assert "streaming_final_model_seconds_total 6.0" in text
    estimate = next(line for line in text.splitlines() if line.startswith("streaming_capacity_streams "))
    assert float(estimate.split()[1]) == pytest.approx(2 * FINALS_SHARE / 0.05)
