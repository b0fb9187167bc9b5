"""What a channel's next decode hears: its clip, the context it carries, how long a partial's
clip may be, and the audio kept for the decodes to come.

A clip runs up to the newest audio (or a closed utterance's end), from the committed words that
still fit its window before the new speech (their text forced on the decoder as the prefix), or,
with no such words, from the first speech not committed yet. A partial's clip fits the partial
window, unless the speech not committed yet does not: words a partial does not hear before its
clip would never be heard again.
"""

from __future__ import annotations

from collections.abc import Sequence

from streaming.audio import History
from streaming.committed import CONTEXT_LEAD, Committed, prefix_of
from streaming.engine import Clip
from streaming.outcome import TrackStats
from streaming.settings import TrackSettings
from streaming.unheard import Unheard
from streaming.vad import Segmenter, Utterance


class Clips:
    """One channel's clip policy, over the state its track owns."""

    def __init__(
        self,
        history: History,
        committed: Committed,
        unheard: Unheard,
        segmenter: Segmenter,
        settings: TrackSettings,
        *,
        stats: TrackStats,
    ) -> None:
        self.history = history
        self.committed = committed
        self.unheard = unheard
        self.segmenter = segmenter
        self.settings = settings
        self.stats = stats  # the track's: a context given up counts there

    def clip(self, end: int, new_start: int, longest: int, max_context: int) -> tuple[Clip, int]:
        """The audio to decode up to ``end``, at most ``longest`` samples, and the stream sample
        it starts at: the committed words that fit before it (as the prefix, at most
        ``max_context`` samples of them), then everything not committed."""
        window = end - longest
        floor = max(window, self.history.start)
        reach = max(new_start, self.committed.until) - max_context
        context = self.committed.context(window, floor, reach, new_start)
        prefix = prefix_of(context)
        if context and self.committed.loops(prefix):
            self.stats.context_resets += 1
            context, prefix = [], ""
        if context:
            start = self.committed.lead_in(context)
        else:
            unheard = self.unheard.reached_from(new_start)
            start = max(min([new_start, *unheard]), self.committed.until, floor)
        start = max(start, self.history.start)
        return Clip(self.history.slice(start, end), prefix), start

    def partial_length(self, load_window: bool) -> int:
        """The longest clip a partial may take: the partial window's (``load_window``: the
        smaller one while the workers are behind on partials), unless the speech not committed
        yet does not fit it (partials shed under load, or speech no decode worded)."""
        longest = self.settings.load_partial if load_window else self.settings.max_partial
        received = self.segmenter.received
        first = self.uncommitted_from([*self.unheard.ranges, *self.segmenter.speech_ranges()])
        if received - (received if first is None else first) + CONTEXT_LEAD <= longest:
            return longest
        return self.settings.max_decode

    def uncommitted_from(self, ranges: Sequence[tuple[int, int]]) -> int | None:
        """The first sample of ``ranges`` that no committed word covers, or None."""
        until = self.committed.until
        return min((max(lo, until) for lo, hi in ranges if hi > until), default=None)

    def trim(self, decoding: Sequence[Utterance]) -> None:
        """Keep the audio a decode may still need: the context window before the oldest decode
        to come (the closed utterances ``decoding`` and the open one), and every sample not
        committed yet; forget the committed words and unheard speech before it."""
        segmenter = self.segmenter
        ends = [segmenter.received, *(u.end for u in decoding)]
        starts = [u.start for u in decoding]
        if segmenter.open_start is not None:
            starts.append(segmenter.open_start)
        floor = min(ends) - self.settings.max_decode
        self.committed.forget_before(floor)
        self.unheard.give_up_before(floor)
        starts += [lo for lo, _ in self.unheard.ranges]
        # Without context, only what the segmenter still holds can start an utterance.
        keep_from = floor if self.committed.words else segmenter.received - segmenter.buffered
        self.history.trim(min([keep_from, *starts]))
