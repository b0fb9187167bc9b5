"""Speech a channel heard that no committed word covers yet, and the decodes it is owed.

Whisper decodes without timestamp tokens here, and may leave speech unsaid: the words after a
sentence end and a short pause ("...of that epoch." and not "By far,": LJ001-0058 as one
piece), the last words of a clip that ends abruptly, or a whole turn of another voice in a
long clip. That speech is not given up while a decode can still reach it: the next decode,
prefixed with what was committed, hears it, or it is decoded once more on its own.
"""

from __future__ import annotations

import itertools

from streaming.audio import History
from streaming.committed import CONTEXT_LEAD, CONTEXT_MAX_GAP
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.spoken import Spoken, skipped, union
from streaming.vad import Utterance

# Speech an eager final may leave unworded before the pause: the last word's aligned end
# falls up to 0.45 s before the VAD's first silent window when nothing was missed (long
# numbers such as "1465." most), and 0.8 s or more when a word was (the 5-minute LJ file).
UNHEARD_TAIL = round(0.5 * SAMPLE_RATE)
# Speech between two words of a final that the decode said nothing for. Whisper, decoding a
# long clip without timestamp tokens, can pass over a whole turn of another voice ("She had
# your dark suit in greasy wash water all year.", 2.9 s, in a 28 s piece of a call), the
# turn's first words too (on a CPU with AVX-512, whose int8 arithmetic gives other words: the
# piece's first word came 1.6 s of that turn's speech after the words before the piece). Where
# it said all, the speech between two words was at most 0.96 s (VAD padding and pauses; the
# call, long and read files through /predict), and 0.54 s in streamed finals.
SKIPPED_SPEECH = round(1.2 * SAMPLE_RATE)
# The context of a retry of speech a final passed over: none. Decoded again with its window
# full of context, the same turn was passed over again; with the sentence before it as the
# prefix (5 s), or with no prefix but the rest of the piece after it (13.6 s), as well. Alone,
# from the last committed word to where the final's words went on, it was heard.
SKIP_RETRY_CONTEXT = 0

Span = tuple[int, int]  # stream samples, end exclusive


class Unheard:
    """One channel's speech past its committed words, in stream-sample ranges."""

    def __init__(self) -> None:
        self.ranges: list[Span] = []
        self._retried_until = 0  # the end of the last utterance retried
        self.skip_retry: int | None = None  # where a retry of speech a final skipped starts

    def covered(self, until: int) -> None:
        """Speech up to ``until`` is covered by committed words."""
        self.ranges = [(max(lo, until), hi) for lo, hi in self.ranges if hi > until]

    def add(self, speech: tuple[Span, ...], until: int) -> None:
        """A decoded utterance's speech past the committed words (``until``) stays unheard."""
        self.ranges = union([*self.ranges, *speech])
        self.covered(until)

    def give_up_before(self, floor: int) -> None:
        """Speech no decode can reach any more: a decode heard no words in it."""
        self.ranges = [(max(lo, floor), hi) for lo, hi in self.ranges if hi > floor]

    def reached_from(self, new_start: int) -> list[int]:
        """Where the unheard speech that a clip of new speech from ``new_start`` reaches back
        to begins. Speech long before is no more to be heard than old words are context: a clip
        reaching back to it holds the silence between, where Whisper writes a word or two of
        its own ("You.", "which") timed from the clip's start."""
        return [lo for lo, hi in self.ranges if new_start - hi <= CONTEXT_MAX_GAP]

    def before_skip(
        self, words: list[Spoken], utterance: Utterance, heard_until: int
    ) -> tuple[list[Spoken], int | None]:
        """A final's words before speech it passed over (``SKIPPED_SPEECH``), between two of
        them or before the first (after ``heard_until``, the last committed word's end), to
        commit, and where its words went on after it (None: it passed over none), for
        :meth:`retries`. Once retried, an utterance's words all stand."""
        if utterance.end <= self._retried_until or not words:
            return words, None
        kept = skipped(words, utterance.speech, SKIPPED_SPEECH, since=heard_until)
        if kept == len(words):
            return words, None
        return words[:kept], words[kept].start

    def retries(
        self,
        utterance: Utterance,
        history: History,
        *,
        resumed: int | None,
        next_clip: Span | None,
        max_decode: int,
    ) -> list[Utterance]:
        """The decodes owed to the speech a final of ``utterance`` left unworded, in order
        (none: nothing is owed, or a later decode will hear it).

        The next decode hears that speech when its clip (``next_clip``, None when nothing
        follows) reaches back to it: then no retry is needed (under load an extra final only
        adds to the queue: at 8 streams, retrying every miss pushed the p95 final from 6 s to
        24 s). It does not at the end of a stream or a file, when the speech is further back
        than the next clip's window (a file's next piece fills most of its 30 s), or past a
        silence that ends the context (``CONTEXT_MAX_GAP``). More than ``UNHEARD_TAIL`` of
        speech is a miss (less is the padding the VAD keeps around speech). Speech a final
        skipped is retried whatever follows: decoded alone, up to where the final's words
        ``resumed``, without context (``SKIP_RETRY_CONTEXT``), then the rest goes on from its
        words. An utterance is retried once."""
        if utterance.end <= self._retried_until:
            return []
        unheard = [(lo, hi) for lo, hi in self.ranges if lo < utterance.end]
        if sum(min(hi, utterance.end) - lo for lo, hi in unheard) <= UNHEARD_TAIL:
            return []
        if resumed is None and next_clip is not None:
            start, end = next_clip
            lo, hi = unheard[0][0], unheard[-1][1]
            if start - hi <= CONTEXT_MAX_GAP and lo - CONTEXT_LEAD >= end - max_decode:
                return []
        self._retried_until = utterance.end
        cuts = [unheard[0][0], utterance.end]
        if resumed is not None and cuts[0] < resumed < utterance.end:
            # The skipped stretch alone, then the rest, which goes on from its words.
            cuts.insert(1, resumed)
            self.skip_retry = cuts[0]
        return [
            Utterance(
                lo,
                history.slice(lo, hi),
                tuple((max(a, lo), min(b, hi)) for a, b in unheard if a < hi and b > lo),
            )
            for lo, hi in itertools.pairwise(cuts)
        ]
