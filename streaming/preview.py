"""A display-only partial of speech that the final in flight on its channel does not hear.

A track decodes one clip at a time, since each goes on from what the one before committed. The
first partial of speech that comes while a final is decoding (a new utterance after the
previous one's final, or speech that resumed after the pause an eager final was decoded for)
would wait for that final: beam 5 and alignment, 0.5 to 1.3 s on a small CPU, while another
worker may be idle. A preview is decoded beside it, without the context, from where that
speech began. Its words are shown and never committed, and a decode with the context that has
shown the same speech makes them stale.

A preview that showed nothing (its clip held a word's first sound alone, or its alignment put
its words before the speech it was for) is decoded once more when the speech has grown by the
partial interval; and one whose utterance closed while it decoded still shows its words, until
that utterance's final does. At 8 streams on 2 cores, both left a new utterance's first words
off the screen for 1 to 1.7 s (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import NamedTuple

from streaming.audio import History
from streaming.committed import CONTEXT_LEAD
from streaming.engine import Clip, Decoded
from streaming.jobs import Due, Job
from streaming.spoken import Spoken, looped, overlaps, spoken_words
from streaming.vad import Segmenter


class Previewed(NamedTuple):
    """A preview's words, kept where the speech it was decoded for begins (``origin``)."""

    origin: int
    end: int  # the end of its clip
    words: list[Spoken]


class Preview:
    """One channel's previews: at most one in flight, one per start of unheard speech."""

    def __init__(self) -> None:
        self.job: Job | None = None  # in flight
        self._origin = -1  # where the speech the last preview was decoded for begins
        # The end of the last preview's clip, when it showed no words: another is due once
        # the speech has grown past it.
        self._found_nothing: int | None = None

    @staticmethod
    def origin(final: Job | None, segmenter: Segmenter) -> int | None:
        """Where the speech that ``final`` (the channel's decode in flight, if it is a final)
        does not hear begins, if there is such speech."""
        open_start = segmenter.open_start
        if final is None or final.kind != "final" or open_start is None:
            return None
        if open_start >= final.end:
            return open_start
        if not final.speculative:
            return None
        # An eager final's pause did not end the utterance: the speech after it is new.
        return segmenter.onset_after(final.end)

    def due(
        self,
        final: Job | None,
        segmenter: Segmenter,
        history: History,
        *,
        new_samples: int,
        resumed_samples: int,
    ) -> Due | None:
        """A preview of the speech ``final`` does not hear, once it is long enough: a new
        utterance ``new_samples`` (the VAD opened it on speech already), speech that resumed
        inside one ``resumed_samples``; one per such start (another when it showed nothing and
        the speech has grown by ``resumed_samples``), and none while a pause goes on."""
        origin = self.origin(final, segmenter)
        needed = new_samples if origin == segmenter.open_start else resumed_samples
        if (
            origin is None
            or self.job is not None
            or (origin == self._origin and not self._again(segmenter.received, resumed_samples))
            or segmenter.silence_start is not None
            or segmenter.received - origin < needed
        ):
            return None
        start = max(origin - CONTEXT_LEAD, history.start)
        clip = Clip(history.slice(start, segmenter.received))
        return Due("partial", clip, start, first=True, preview=True)

    def _again(self, received: int, grown: int) -> bool:
        return self._found_nothing is not None and received - self._found_nothing >= grown

    def started(self, job: Job, final: Job | None, segmenter: Segmenter) -> None:
        self.job = job
        origin = self.origin(final, segmenter)
        self._origin = origin if origin is not None else -1
        self._found_nothing = None

    def lost(self) -> None:
        """Shed or failed: a preview only shows words, so nothing is lost with it."""
        self.job = None

    def words(
        self, decoded: Decoded, speech: tuple[tuple[int, int], ...], *, shown_until: int
    ) -> Previewed | None:
        """The preview came back: where its speech begins, and its words there (in ``speech``,
        the ranges not decoded yet, whether their utterance is open or closed), unless a
        decode with the context (which says better) has shown that speech, ending at
        ``shown_until``."""
        job, self.job = self.job, None
        origin = self._origin
        if job is None or shown_until > origin:
            return None
        words = [
            w
            for w in ([] if looped(decoded) else spoken_words(decoded, job.start))
            if overlaps(w, speech) and w.start + w.end >= 2 * origin
        ]
        if not words:
            self._found_nothing = job.end
            return None
        return Previewed(origin, job.end, words)
