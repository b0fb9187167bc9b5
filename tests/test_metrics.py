"""What /metrics tells an operator: latency histograms, audio received, model batch sizes.
The sans-I/O timing with scripted events and times; then the real server and model."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from clients.stream import read_audio, stream_file
from streaming import events
from streaming.messages import Transcript
from streaming.timing import Timing
from tests.conftest import RunningServer

RATE = 16000


class Recorded:
    def __init__(self) -> None:
        self.audio = 0.0
        self.finals: list[float] = []
        self.firsts: list[float] = []

    def audio_received(self, seconds: float) -> None:
        self.audio += seconds

    def final_latency(self, seconds: float) -> None:
        self.finals.append(seconds)

    def first_partial_latency(self, seconds: float) -> None:
        self.firsts.append(seconds)


def test_latencies_count_from_the_arrival_of_the_audio_they_are_about() -> None:
    seen = Recorded()
    timing = Timing(seen)
    for tenth in range(1, 51):  # 5 s of audio, 0.1 s every 0.1 s from t=100
        timing.arrived(tenth * RATE // 10, 100.0 + tenth / 10)
    assert seen.audio == pytest.approx(5.0)
    partial = events.Partial(0, Transcript(start=1.0, end=1.5, text="hello"))
    # Speech from 1.05 s (arrived at 101.05) to 3.25 s (arrived at 103.25).
    timing.saw([events.SpeechStarted(0, int(1.05 * RATE))], 101.2)
    timing.saw([partial], 101.85)
    timing.saw([partial], 102.5)  # a later partial of the same utterance: not its first
    timing.saw([events.UtteranceDone(0, int(1.05 * RATE), int(3.25 * RATE))], 104.0)
    assert [round(x, 3) for x in seen.firsts] == [0.8]
    assert [round(x, 3) for x in seen.finals] == [0.75]


def test_a_stream_without_an_observer_measures_nothing() -> None:
    timing = Timing(None)
    timing.arrived(RATE, 1.0)
    timing.saw([events.UtteranceDone(0, 0, RATE)], 2.0)  # nothing to tell, nothing raised


def scrape(server: RunningServer) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.name + str(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_stream_shows_in_the_histograms(server: RunningServer, data_dir: Path) -> None:
    clip = read_audio(data_dir / "read/jfk.flac")
    before = scrape(server)
    result = asyncio.run(stream_file(server.ws_url, clip, realtime=True, speed=2.0))
    assert result.final is not None
    after = scrape(server)

    def grew(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert abs(grew("streaming_audio_seconds_total[]") - clip.duration) < 0.05
    finals = grew("streaming_final_latency_seconds_count[]")
    assert finals >= 3  # one per utterance: the clip has four sentences
    assert 0 < grew("streaming_final_latency_seconds_sum[]") / finals < 5
    assert grew("streaming_first_partial_latency_seconds_count[]") >= 1
    final_calls = "streaming_batch_size_count[('kind', 'final')]"
    assert grew(final_calls) >= finals
    assert grew("streaming_batch_size_bucket[('kind', 'final'), ('le', '+Inf')]") == grew(final_calls)
