"""How long a stream's words take, as its operator sees it: when its audio arrived, and how long
after the end of each utterance's speech its last words went out (and after its start, its
first partial).

A :class:`Timing` watches a session's audio and events (it does no I/O, and reads the time
the session is given) and tells an :class:`Observer` (the server's metrics) what it measured.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol

from streaming import events
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE

LOG_STEP = SAMPLE_RATE // 10  # one arrival kept per 0.1 s of audio
LOG_LENGTH = 600  # the last 60 s of audio: a final later than that is not measured


class Observer(Protocol):
    def audio_received(self, seconds: float) -> None:
        """Audio taken in by a stream (the longest channel's)."""

    def final_latency(self, seconds: float) -> None:
        """From the arrival of an utterance's last speech to its last words sent."""

    def first_partial_latency(self, seconds: float) -> None:
        """From the arrival of an utterance's first speech to its first partial sent."""


class Timing:
    def __init__(self, observer: Observer | None) -> None:
        self._observer = observer
        self._log: deque[tuple[int, float]] = deque(maxlen=LOG_LENGTH)  # (samples, arrival)
        self._received = 0
        self._waiting_partial: dict[int, int] = {}  # channel -> its open utterance's speech start

    def arrived(self, samples: int, now: float) -> None:
        """The stream holds ``samples`` since ``now`` (16 kHz samples from its start)."""
        if self._observer is None or samples <= self._received:
            return
        self._observer.audio_received((samples - self._received) / SAMPLE_RATE)
        if not self._log or samples - self._log[-1][0] >= LOG_STEP:
            self._log.append((samples, now))
        self._received = samples

    def saw(self, sent: Iterable[events.Event], now: float) -> None:
        """The session's events, as they are handed to its protocol at ``now``."""
        if self._observer is None:
            return
        for event in sent:
            match event:
                case events.SpeechStarted(channel, at):
                    self._waiting_partial[channel] = at
                case events.Partial(channel, _):
                    start = self._waiting_partial.pop(channel, None)
                    arrival = self._arrival(start) if start is not None else None
                    if arrival is not None:
                        self._observer.first_partial_latency(max(now - arrival, 0.0))
                case events.UtteranceDone(channel, _, end):
                    self._waiting_partial.pop(channel, None)
                    arrival = self._arrival(end)
                    if arrival is not None:
                        self._observer.final_latency(max(now - arrival, 0.0))

    def _arrival(self, sample: int) -> float | None:
        """When the audio holding ``sample`` arrived (between two kept arrivals, interpolated);
        None when it is older than the log."""
        if not self._log or sample < self._log[0][0] - LOG_STEP:
            return None
        before = (0, self._log[0][1])
        for samples, arrival in self._log:
            if samples >= sample:
                span = samples - before[0]
                share = (sample - before[0]) / span if span > 0 else 1.0
                return before[1] + share * (arrival - before[1])
            before = (samples, arrival)
        return self._log[-1][1]
