"""How many streams this server could hold: an estimate for autoscalers, from what finals cost.

Each utterance of a stream needs one final decode, whatever the load: that is the work the server
cannot shed. Partials are shed under load, and so are eager finals (a final decoded when a pause
begins, thrown away if speech resumes), so the model time they take says nothing about room
left: at one stream, eager finals made 2.8 final decodes per utterance; at eight, 1.3
(docs/benchmarks.md, "Estimated capacity"). The estimate is therefore

    workers * FINALS_SHARE / (seconds of one final decode * utterances per second of a stream)

over the last ``window`` seconds of scrapes: the streams whose finals would fill the share of
the model workers' time that finals can take while their latency holds. FINALS_SHARE is that
share at the capacity bench.capacity measured (p95 final latency under 1.5 s).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# The share of the model workers' time that one final per utterance took at the capacity
# bench.capacity measured on the 5-minute LJ file: 12 streams on a 2-core AVX-512 machine
# (2026-12-04), where 0.22 read 8.3. It is a property of the code's partial policy as much as of
# the machine (0.22 fitted the code and slower machine of 2026-12-03), so it is measured again
# when either changes; held out, two-party calls then read 11 where 14 held (docs/benchmarks.md,
# "Estimated capacity").
FINALS_SHARE = 0.32
# Too little decoded says nothing yet: no estimate below these.
MIN_AUDIO_SECONDS = 60.0
MIN_UTTERANCES = 5


@dataclass(frozen=True, slots=True)
class Totals:
    """The server's running totals, as a scrape reads them."""

    final_model_seconds: float = 0.0
    final_decodes: int = 0
    utterances: int = 0  # utterances of streams finished (their last words sent)
    audio_seconds: float = 0.0  # audio received by streams

    def __sub__(self, other: Totals) -> Totals:
        return Totals(
            self.final_model_seconds - other.final_model_seconds,
            self.final_decodes - other.final_decodes,
            self.utterances - other.utterances,
            self.audio_seconds - other.audio_seconds,
        )

    def enough(self) -> bool:
        return (
            self.audio_seconds >= MIN_AUDIO_SECONDS
            and min(self.utterances, self.final_decodes) >= MIN_UTTERANCES
        )

    def final_seconds_per_stream_second(self) -> float:
        return self.final_model_seconds / self.final_decodes * self.utterances / self.audio_seconds


class CapacityEstimate:
    """Samples the server's totals (at each scrape) and estimates from the newest window of
    them; from the whole life of the process until a window holds enough."""

    def __init__(self, *, window: float = 300.0, share: float = FINALS_SHARE) -> None:
        self.window = window
        self.share = share
        self._samples: deque[tuple[float, Totals]] = deque()

    def sample(self, now: float, totals: Totals) -> None:
        self._samples.append((now, totals))
        # Keep one sample at or before the window's start, so the window is always whole.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def streams(self, workers: int) -> float | None:
        """The estimate, or None while too little has been decoded to tell."""
        if not self._samples:
            return None
        last = self._samples[-1][1]
        seen = last - self._samples[0][1]
        if not seen.enough():
            seen = last
        if not seen.enough():
            return None
        return workers * self.share / seen.final_seconds_per_stream_second()
