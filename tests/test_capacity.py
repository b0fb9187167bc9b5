"""The capacity estimate (pure logic, scripted totals and times)."""

from __future__ import annotations

import pytest

from streaming.capacity import FINALS_SHARE, CapacityEstimate
from streaming.metrics import Metrics
from streaming.scheduler import SchedulerStats


def test_no_estimate_until_enough_speech_was_decoded() -> None:
    estimate = CapacityEstimate(window=300)
    assert estimate.streams(workers=2) is None
    estimate.sample(0.0, 0.0, 0.0)
    estimate.sample(10.0, 0.3, 30.0)  # 30 s of audio: too little to tell
    assert estimate.streams(workers=2) is None
    estimate.sample(40.0, 1.2, 120.0)
    # 1.2 model seconds of finals per 120 s of audio: 0.01 per second of a stream.
    assert estimate.streams(workers=2) == pytest.approx(2 * FINALS_SHARE / 0.01)


def test_the_estimate_follows_the_newest_window() -> None:
    estimate = CapacityEstimate(window=100)
    estimate.sample(0.0, 0.0, 0.0)
    estimate.sample(100.0, 10.0, 100.0)  # expensive finals at first: 0.1 s per second
    cheap = 2 * FINALS_SHARE / 0.1
    assert estimate.streams(workers=2) == pytest.approx(cheap)
    for t in range(110, 400, 10):  # then ten times cheaper
        estimate.sample(float(t), 10.0 + (t - 100) * 0.01, float(t))
    assert estimate.streams(workers=2) == pytest.approx(10 * cheap, rel=0.01)


def test_a_quiet_window_falls_back_to_the_whole_life_of_the_process() -> None:
    estimate = CapacityEstimate(window=60)
    estimate.sample(0.0, 0.0, 0.0)
    estimate.sample(50.0, 2.0, 200.0)
    for t in range(60, 600, 30):  # nobody streams: the totals stay
        estimate.sample(float(t), 2.0, 200.0)
    assert estimate.streams(workers=1) == pytest.approx(FINALS_SHARE / 0.01)


def test_metrics_export_the_estimate_once_there_is_enough_to_tell() -> None:
    stats = SchedulerStats(final_model_seconds=0.0)
    now = [0.0]
    metrics = Metrics(
        sessions=lambda: (3, 8, 0), stats=lambda: stats, workers=lambda: 2, clock=lambda: now[0]
    )
    assert b"streaming_capacity_streams" not in metrics.render()
    metrics.audio_received(120.0)
    stats.final_model_seconds = 1.2
    now[0] = 60.0
    text = metrics.render().decode()
    assert "streaming_final_model_seconds_total 1.2" in text
    estimate = next(line for line in text.splitlines() if line.startswith("streaming_capacity_streams "))
    assert float(estimate.split()[1]) == pytest.approx(2 * FINALS_SHARE / 0.01)
