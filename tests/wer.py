"""Word error rate on normalised text (case, punctuation and spacing removed)."""

from __future__ import annotations

import re

import jiwer

_NUMBERS = {
    "0": "zero",
    "1": "one",
    "2": "two",
    "3": "three",
    "4": "four",
    "5": "five",
    "6": "six",
    "7": "seven",
    "8": "eight",
    "9": "nine",
    "10": "ten",
}


def normalise(text: str) -> str:
    text = text.lower().replace("-", " ").replace("\u2019", "'")
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    words = [_NUMBERS.get(w, w) for w in text.replace("'", "").split()]
    return " ".join(words)


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>"))


def whisper_wer(reference: str, hypothesis: str) -> float:
    """WER under Whisper's own English normaliser (the ``whisper-normalizer`` package, a bench
    dependency), which also reads numbers and ordinals alike ("15th" and "fifteenth", "1720"
    and "seventeen twenty"), as published Whisper figures are scored. Beside :func:`wer`,
    whose figures the benchmarks have kept since the start."""
    from whisper_normalizer.english import EnglishTextNormalizer

    normalise_whisper = EnglishTextNormalizer()
    return float(jiwer.wer(normalise_whisper(reference), normalise_whisper(hypothesis) or "<empty>"))


def missed(reference: str, hypothesis: str) -> float:
    """The share of the reference's words that the hypothesis left out (deletions alone)."""
    found = jiwer.process_words(normalise(reference), normalise(hypothesis) or "<empty>")
    return found.deletions / max(len(normalise(reference).split()), 1)
