"""A channel's committed words: final once made, and the context its next decodes go on from.

A decode carries the committed words that fit its window as its prefix (their text forced on
the decoder), so a sentence cut at a pause goes on in its own case and punctuation. This
module holds those words and the rules at their edge: which of them a decode carries, which
new words say them again, and how a decode that heard what follows the last of them ends it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.context import repeated, repeats_itself
from streaming.engine import Decoded
from streaming.sentences import ends_sentence
from streaming.spoken import Spoken, capitalised, overlaps, unended

# Audio kept before the first context word, for its onset.
CONTEXT_LEAD = SAMPLE_RATE // 10
# Committed words (or unworded speech) this far before new speech are no context: a silence
# that long (on a call, the other party's turn) is a new turn, and decoded across it the new
# words' alignment began where the old ones ended (a call's "He began" timed from 15.0 s,
# spoken at 27.5 s), or Whisper wrote words of its own into the silence.
CONTEXT_MAX_GAP = 2 * SAMPLE_RATE


def prefix_of(context: list[Spoken]) -> str:
    """The text a decode carrying ``context`` is prefixed with: the last word without a stop
    that its own clip's end put there (see :func:`~streaming.spoken.unended`)."""
    if not context:
        return ""
    return ("".join(w.raw for w in context[:-1]) + unended(context[-1])).strip()


class Committed:
    """One channel's committed words, as far back as a decode's window may still reach."""

    def __init__(self) -> None:
        self.words: deque[Spoken] = deque()
        self.until = 0  # stream sample: the end of the last committed word
        # The committed word that ends the prefix of the decode in flight: the first words that
        # decode commits come with the model's own ending of it (the stop the prefix left out,
        # or the letters of a word its clip cut short).
        self._ending_of: Spoken | None = None
        self._said = False  # has the channel committed a word yet
        self.count = 0  # words committed so far (a decode's mark: see :meth:`since`)

    def opening(self, words: list[Spoken]) -> list[Spoken]:
        """``words`` as the channel's transcript has them: its first word begins a sentence.
        Whisper writes the first words of a short clip in lower case when it cannot tell that
        a sentence starts there ("stuff it into you", "it will be seen that"; each read clip
        streamed alone, 4 of 16): offline, the same file begins with a capital."""
        if self._said or not words:
            return words
        return [capitalised(words[0]), *words[1:]]

    def context(self, window: int, floor: int, reach: int, new_start: int) -> list[Spoken]:
        """The words a decode of new speech from ``new_start`` carries: those starting (with
        their lead) inside its ``window``, after ``floor`` and ``reach``, and not a turn
        before (``CONTEXT_MAX_GAP``)."""
        context = [w for w in self.words if w.start - CONTEXT_LEAD >= window and w.start >= max(floor, reach)]
        if context and new_start - context[-1].end > CONTEXT_MAX_GAP:
            return []
        return context

    def loops(self, prefix: str) -> bool:
        """Does a decode's ``prefix`` say the same words over and over? Then every committed
        word is forgotten as context: a loop in the prefix feeds itself."""
        if not repeats_itself(prefix):
            return False
        self.words.clear()
        return True

    def lead_in(self, context: list[Spoken]) -> int:
        """Where a clip carrying ``context`` starts: a little before its first word, but not
        inside the word before it."""
        start = context[0].start - CONTEXT_LEAD
        before = [w.end for w in self.words if w.end <= context[0].start]
        return max(start, before[-1]) if before else start

    def decoding(self, *, prefixed: bool) -> None:
        """A decode starts, carrying the committed words as its prefix or not: the decode's own
        ending of the prefix's last word is awaited."""
        self._ending_of = self.words[-1] if self.words and prefixed else None

    def since(self, count: int) -> list[Spoken]:
        """The words committed after the first ``count`` (those still kept)."""
        after = self.count - count
        return list(self.words)[-after:] if after > 0 else []

    def new_words(
        self, words: list[Spoken], heard: tuple[tuple[int, int], ...], *, cut_at: int | None
    ) -> tuple[list[Spoken], int]:
        """A decode's ``words`` that are new, with how many said committed words again: those
        over ``heard`` speech (not yet covered), and after what is committed, or aligned over
        committed audio but not saying a word there again (:meth:`says_again`). ``cut_at``:
        the count of committed words when the decode's clip was cut (None: not known)."""
        # Words committed after the clip was cut (by the partial an eager final displaced, or
        # the one before it) go on from the same prefix: this decode hears them as new, and
        # its first words say them again. Aligned a little later, "the" and "rejecting" were
        # taken as new words and said twice ("of the the true printed book").
        again = [] if cut_at is None else self.since(cut_at)
        same = 0
        while same < min(len(again), len(words)) and words[same].key == again[same].key:
            same += 1
        words = words[same:]
        # The last committed word's span is heard speech too: its end is where its decode's
        # path ran out, over any speech that decode left unsaid after it ("of" kept 0.7 s of
        # "the true printed book,": streaming.alignment). A decode forced to go on after it
        # places the words said there under it.
        if self.words:
            heard = (*heard, (self.words[-1].start, self.until))
        kept = self.without_repeats(words)
        new = [
            w
            for w in kept
            if overlaps(w, heard) and ((w.start + w.end) // 2 >= self.until or not self.says_again(w))
        ]
        return self.opening(new), same + len(words) - len(kept)

    def without_repeats(self, words: list[Spoken]) -> list[Spoken]:
        """The new words less any run that says the committed words, or themselves, again."""
        said = [*self.words, *words]
        starts = {0} | {i + 1 for i, w in enumerate(said) if ends_sentence(w.raw)}
        dropped = set(repeated([w.key for w in said], starts, len(self.words)))
        return [w for i, w in enumerate(words, len(self.words)) if i not in dropped]

    def says_again(self, word: Spoken) -> bool:
        """Does ``word``, aligned over committed audio, say a committed word there again? Only
        then is it a repeat. A new word can be aligned there too: a committed word's alignment
        can stretch into the next word ("the" of "as the invention" ended 0.46 s after it began,
        where "invention" was half said), and the decode that said "invention" had it centred
        before that end. Dropped for that, one to four words were lost in a stream or two of
        some runs at 8 streams (docs/benchmarks.md)."""
        for committed in reversed(self.words):
            if committed.end <= word.start:
                return False
            if committed.start < word.end and committed.key == word.key:
                return True
        return False

    def add(self, words: list[Spoken], decoded: Decoded) -> tuple[list[Spoken], tuple[Spoken, str] | None]:
        """Commit ``words``, of ``decoded``: they are returned as committed (none starting
        before the last), with the word before them as this decode ends it, if that differs
        from how it was sent."""
        amended = None
        if words:
            amended, capital = self._ending(decoded, words[0])
            if amended is not None:
                self._rewrite(*amended)
            if capital:
                words = [capitalised(words[0]), *words[1:]]
        self._said = self._said or bool(words)
        out = []
        for w in words:
            start = max(w.start, self.until)
            kept = replace(w, start=start, end=max(w.end, start))
            out.append(kept)
            self.words.append(kept)
            self.until = kept.end
            self.count += 1
        return out, amended

    def _rewrite(self, word: Spoken, text: str) -> None:
        """The context goes on with ``word`` as the decode that heard what follows it ended it,
        which is how the reader has it now. Left with the stop its own clip's end put there,
        every later decode was forced to read a sentence end at each comma's pause ("By far.
        the greater part of these Italian printers", where the reader had "By far, the"), and
        wrote more of them ("printers. It should be mentioned. Were Germans or Frenchmen?")."""
        for i in range(len(self.words) - 1, -1, -1):
            if self.words[i] is word:
                self.words[i] = replace(word, raw=text, last=False)
                return

    def forget_before(self, floor: int) -> None:
        """Words no decode's window reaches from ``floor`` on are no more context."""
        while self.words and self.words[0].start < floor + CONTEXT_LEAD:
            self.words.popleft()

    def _ending(self, decoded: Decoded, first: Spoken) -> tuple[tuple[Spoken, str] | None, bool]:
        """The word before ``first`` as the decode that commits ``first`` ends it, where that
        differs from how its own decode wrote it: the stop it wrote where its clip ended (a
        comma, or nothing), the mark it did not write there, and the letters of a word that
        clip cut short ("fount" of "founts", which the decode after it goes on with, "s were
        bad": dropped, the letters were lost); and whether ``first`` begins a sentence the
        model ended, and so takes a capital."""
        word = self._ending_of
        if word is None:
            return None, False
        self._ending_of = None
        stem = unended(word)
        stop = word.raw[len(stem) :]
        mark = decoded.prefix_mark
        if not stop and mark.startswith(("..", "\u2026")):
            mark = ""  # an ellipsis at the join says a clip cut the sentence there, not how it ends
        if not stop and not mark and not decoded.continued:
            return None, False  # no stop to end otherwise, no mark to add, no letters to add
        stem += decoded.continued
        if stop and not mark and first.raw.lstrip()[:1].isupper():
            # No mark, and a capital after it ("as far as it can go His letter"): a sentence the
            # model began without ending the one before. The stop stands.
            return ((word, stem + stop) if decoded.continued else None), False
        # A word written with no mark takes the one the model writes after it, having heard
        # what follows ("of the paper" going on ". He began"). Left without it, the sentence
        # ran on into the next, and the context, forced on every later decode, taught the model
        # to write no marks at all: a call's 38 s came back as one unpunctuated run (mono_call
        # conv_2_8k, whose first sentence has 27 words and no comma; docs/benchmarks.md).
        text = stem + mark
        # A greedy partial can end the sentence and go on in lower case ("themselves. the
        # Middle Ages"): the words after the model's own full stop begin a sentence.
        capital = ends_sentence(text) and first.raw.lstrip()[:1].islower()
        return ((word, text) if text != word.raw else None), capital
