"""How many streams this server could hold: an estimate for autoscalers, from what its finals cost.

A stream's finals are the work the server cannot shed (partials are: under load they thin out,
so the share of model time they take says nothing about room left). The estimate is

    workers * FINALS_SHARE / (final model seconds per second of stream audio)

over the last ``window`` seconds of scrapes: the streams whose finals would fill the share of
the model workers' time that finals can take while their latency holds. FINALS_SHARE comes
from bench.capacity (docs/benchmarks.md, "Estimated capacity"): at the measured capacity
(p95 final latency under 1.5 s), the finals took that share of the workers' time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# The share of the model workers' time that finals took at the measured capacity (bench.capacity).
FINALS_SHARE = 0.5
# Too little speech decoded says nothing yet: no estimate below these.
MIN_AUDIO_SECONDS = 60.0
MIN_MODEL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float
    final_model_seconds: float
    audio_seconds: float


class CapacityEstimate:
    """Samples the server's running totals (at each scrape) and estimates from the newest
    window of them; the whole life of the process until a window holds enough."""

    def __init__(self, *, window: float = 300.0, share: float = FINALS_SHARE) -> None:
        self.window = window
        self.share = share
        self._samples: deque[_Sample] = deque()

    def sample(self, now: float, final_model_seconds: float, audio_seconds: float) -> None:
        self._samples.append(_Sample(now, final_model_seconds, audio_seconds))
        # Keep one sample at or before the window's start, so the window is always whole.
        while len(self._samples) > 2 and self._samples[1].at <= now - self.window:
            self._samples.popleft()

    def streams(self, workers: int) -> float | None:
        """The estimate, or None while too little has been decoded to tell."""
        if not self._samples:
            return None
        last = self._samples[-1]
        first = self._samples[0]
        audio = last.audio_seconds - first.audio_seconds
        model = last.final_model_seconds - first.final_model_seconds
        if audio < MIN_AUDIO_SECONDS or model < MIN_MODEL_SECONDS:
            audio, model = last.audio_seconds, last.final_model_seconds  # since the start
        if audio < MIN_AUDIO_SECONDS or model < MIN_MODEL_SECONDS:
            return None
        return workers * self.share * audio / model
