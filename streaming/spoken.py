"""A decoded word where a channel's stream has it: what a track commits, agrees on and forces
on the next decode as its prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from streaming import onsets
from streaming.audio import History
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.context import repeats_itself
from streaming.engine import Decoded, has_word
from streaming.messages import Word
from streaming.sentences import ends_sentence

_NORMAL = re.compile(r"[^\w']+")


@dataclass(frozen=True, slots=True)
class Spoken:
    """A decoded word in stream samples, with its text as the model wrote it (leading space
    included: the prefix is rebuilt from these, so spacing and scripts without spaces survive)."""

    raw: str
    start: int
    end: int
    probability: float
    # The decode's text ended with this word: its mark was written with nothing heard after it.
    # Whisper ends a clip cut at a comma's pause with a full stop ("printing." for "Printing,").
    last: bool = False

    @property
    def key(self) -> str:
        """What two decodes must agree on: the word, without case or punctuation."""
        return _NORMAL.sub("", self.raw.lower())

    def word(self, lag: int = 0) -> Word:
        """The word as sent, its timing less the model's alignment lag (samples): the commit
        rule works on the timings as aligned, which its thresholds were measured on."""
        start = max(self.start - lag, 0)
        return Word(
            text=self.raw.strip(),
            start=start,
            end=max(self.end - lag, start),
            probability=self.probability,
            glued=not self.raw[:1].isspace(),
        )

    def placed(self, history: History, lag: int) -> Word:
        """The word as sent (:meth:`word`), its edges at pauses where the audio's energy puts
        them (:mod:`streaming.onsets`), read from its channel's ``history``."""
        word = self.word(lag)
        lo = max(word.start - onsets.REACH, 0)
        audio = history.slice(lo, self.end + onsets.REACH)
        if lo < history.start or len(audio) < self.end - lo:
            # The channel no longer holds the word's audio (a decode that committed it also let
            # it go: no context was left to keep it): the aligned timing stands.
            return word
        start, end = onsets.edges(audio, self.start - lo, self.end - lo, lag)
        return replace(word, start=lo + start, end=lo + end)


def looped(decoded: Decoded) -> bool:
    """Did a greedy decode (a partial, which has no fallback) fall into a loop? Then its words,
    the first run's included, are no reading of the speech: at a new speaker's turn, "It will be
    a bit too. It will be a bit too. The narrative would be tedious..." (its prefix said over)
    for "It will be seen that", whose first words the bound then committed (a mono_call
    conversation, docs/benchmarks.md). A later decode reads that speech again."""
    return repeats_itself(decoded.text)


def spoken_words(decoded: Decoded, start: int) -> list[Spoken]:
    """A decode's words in stream samples. A decode of marks alone ("...", Whisper's answer to
    a breath or a noise decoded by itself, such as the tail a retry hears) heard no words."""
    words = [w for w in decoded.words if w.text.strip()]
    if not has_word("".join(w.text for w in words)):
        return []
    return [
        Spoken(
            raw=w.text,
            start=start + round(w.start * SAMPLE_RATE),
            end=start + round(w.end * SAMPLE_RATE),
            probability=w.probability,
            last=i == len(words) - 1,
        )
        for i, w in enumerate(words)
    ]


def unended(word: Spoken) -> str:
    """A context word as the prefix carries it: without the full stop the model wrote where its
    clip stopped. Forced on the decoder, that stop made every comma's pause a sentence end: the
    next words came capitalised and read as a new sentence ("concerned. Divers from", "purpose.
    Maybe considered" for "concerned, differs from", "purpose, may be considered"). Without
    it, the model hears whether the sentence goes on or a new one begins. The same for the
    ellipsis it writes where a partial's clip cut a sentence ("natural there for... that the
    forms", "Schussler... is remarkably" in a final), and for the question mark it writes there
    at times ("The worst. Which perhaps was the English? Was a terrible falling off")."""
    text = word.raw
    if not word.last:
        return text
    if text.endswith(("..", "\u2026")):
        trailed = text.rstrip(".\u2026")
        return trailed if has_word(trailed) else text
    if text.endswith((".", "?", "!")) and ends_sentence(text):
        return text[:-1]
    return text


def capitalised(word: Spoken) -> Spoken:
    """The word with a capital, where a sentence begins with it."""
    lead = len(word.raw) - len(word.raw.lstrip())
    return replace(word, raw=word.raw[:lead] + word.raw[lead : lead + 1].upper() + word.raw[lead + 1 :])


def union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sample ranges merged where they overlap or touch, in order."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def overlaps(word: Spoken, speech: tuple[tuple[int, int], ...]) -> bool:
    return any(word.start < hi and word.end > lo for lo, hi in speech)


def skipped(words: list[Spoken], speech: tuple[tuple[int, int], ...], least: int, since: int) -> int:
    """How many of ``words`` come before the first stretch of at least ``least`` samples of
    speech that falls between two of them, or between ``since`` (where the speech not yet
    worded begins) and the first: speech the decode said nothing for."""
    ends = [since, *(w.end for w in words)]
    for i, (lo, word) in enumerate(zip(ends, words, strict=False)):
        hi = word.start
        if sum(max(0, min(b, hi) - max(a, lo)) for a, b in speech) >= least:
            return i
    return len(words)
