"""A stream's previous text, used to prompt the next utterance, with a guard against loops.

Conditioning Whisper on what it just wrote improves spelling and punctuation across
utterances, but it is also what feeds repetition loops in long streams: one hallucinated
repeat in the prompt makes the next one likelier. So text that repeats itself is kept out of
the prompt, and a prompt that starts to loop is reset.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Collection, Sequence

_WORD = re.compile(r"\w+")


def compression_ratio(text: str) -> float:
    """Whisper's loop detector: repetitive text compresses well."""
    data = text.encode("utf-8")
    return len(data) / max(len(zlib.compress(data)), 1)


def repeats_itself(text: str, *, max_ratio: float = 2.4, max_run: int = 3) -> bool:
    """True for text that looks like a decoding loop: an n-gram (n <= 4) repeated more than
    ``max_run`` times in a row, or a compression ratio above ``max_ratio``."""
    words = _WORD.findall(text.lower())
    for n in range(1, 5):
        run = 1
        for i in range(n, len(words) - n + 1, n):
            if words[i : i + n] == words[i - n : i]:
                run += 1
                if run > max_run:
                    return True
            else:
                run = 1
    return len(text) >= 60 and compression_ratio(text) > max_ratio


# A repeat is this many words said again from one sentence's start at another's; or this many
# anywhere that end the decode (a copy squeezed into the audio's tail, with nothing new after
# it); or this many anywhere. Six anywhere dropped real speech: "that the forms of printed
# letters should follow", said again within one window of the 5-minute LJ file (bench/predict.py).
# Or this many that a decode's first new words say again right after the same words of its
# prefix: the model read the prefix's end once more ("than the capital letters. The capital
# letters The lower case being" on the 5-minute LJ file, "fairly well designed. And fairly well
# designed." on held-out LJ speech, both committed); "no, no" is two words, and speech.
REPEAT_AT_SENTENCE = 3
REPEAT_AT_JOIN = 3
REPEAT_AT_END = 6
REPEAT_ANYWHERE = 8


def repeated(keys: Sequence[str], sentence_starts: Collection[int], first_new: int) -> list[int]:
    """Indices from ``first_new`` on of words that say an earlier run of ``keys`` again.

    ``keys`` are the committed context then a decode's new words, as keys (lower case, no
    punctuation); ``sentence_starts`` the indices where a sentence begins. Prefixed with the
    context, a decode sometimes says a sentence again (the prefix's, or its own), squeezed into
    the audio's tail: a loop the prefix fed. Speakers seldom repeat the first three words of a
    sentence verbatim at the start of another within a window, nor three words right after
    themselves where the decode's new words begin, nor six words at a decode's end, nor any
    eight, so such a run is dropped. An earlier run may not overlap the repeat ("no, no, no" is
    speech)."""
    dropped: list[int] = []
    i = first_new
    while i < len(keys):
        longest = 0
        for at in range(i):
            run = 0
            while i + run < len(keys) and at + run < i and keys[at + run] == keys[i + run]:
                run += 1
            if at in sentence_starts and i in sentence_starts:
                needed = REPEAT_AT_SENTENCE
            elif i == first_new and at + run == i:
                needed = REPEAT_AT_JOIN
            elif i + run == len(keys):
                needed = REPEAT_AT_END
            else:
                needed = REPEAT_ANYWHERE
            if run >= needed:
                longest = max(longest, run)
        if longest:
            dropped += range(i, i + longest)
            i += longest
        else:
            i += 1
    return dropped


class PromptContext:
    """The tail of a stream's text, as a prompt for its next utterance."""

    def __init__(self, *, enabled: bool, max_chars: int, max_ratio: float = 2.4) -> None:
        self._enabled = enabled and max_chars > 0
        self._max_chars = max_chars
        self._max_ratio = max_ratio
        self._texts: list[str] = []
        self.resets = 0

    def prompt(self, user_prompt: str = "") -> str | None:
        """The user's prompt followed by the stream's recent text."""
        tail = " ".join(self._texts) if self._enabled else ""
        if len(tail) > self._max_chars:
            tail = tail[-self._max_chars :].partition(" ")[2]  # start on a word boundary
        prompt = " ".join(p for p in (user_prompt.strip(), tail.strip()) if p)
        return prompt or None

    def add(self, text: str) -> None:
        """Record an utterance's text; a loop resets the context instead."""
        text = text.strip()
        if not self._enabled or not text:
            return
        if self._texts and _normalise(text) == _normalise(self._texts[-1]):
            self._reset()
            return
        candidate = " ".join([*self._texts, text])[-self._max_chars * 2 :]
        if repeats_itself(text, max_ratio=self._max_ratio) or repeats_itself(
            candidate, max_ratio=self._max_ratio
        ):
            self._reset()
            return
        self._texts.append(text)
        while len(self._texts) > 1 and sum(len(t) + 1 for t in self._texts[1:]) >= self._max_chars:
            self._texts.pop(0)

    def _reset(self) -> None:
        self._texts.clear()
        self.resets += 1


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))
