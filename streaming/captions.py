"""What a session has said of its committed words: sentence pieces, and the text that prompts.

Committed words are cut into sentence pieces, one cutter per speaker (see
:mod:`streaming.sentences`), and each piece is sent at once as a ``segment``. The pieces are
kept for the ``final``, and their text is each channel's prompt context (see
:mod:`streaming.context`). A later decode that ends an earlier word differently (its stop, once
it heard what follows) amends that word's piece.
"""

from __future__ import annotations

from collections.abc import Sequence

from streaming import events
from streaming.context import PromptContext
from streaming.messages import Transcript, Word
from streaming.sentences import Pieces, SentenceCutters, ends_sentence
from streaming.settings import SessionSettings


class Captions:
    """One stream's sentence pieces, over all its channels, and each channel's prompt."""

    def __init__(self, settings: SessionSettings, channels: int) -> None:
        self._cutters = SentenceCutters(settings.sentence_pause, settings.max_sentence)
        self._pieces = Pieces()
        self._prompts = [
            PromptContext(enabled=settings.condition_on_previous_text, max_chars=settings.prompt_chars)
            for _ in range(channels)
        ]

    def segments(self, channel: int, runs: Sequence[tuple[str | None, list[Word]]]) -> list[events.Segment]:
        """Committed words, in runs of one speaker each, as that speaker's sentence pieces."""
        out = []
        for speaker, words in runs:
            for piece in self._cutters.of(speaker).pieces(words):
                self._pieces.add(channel, piece)
                self._prompts[channel].add(piece.text)
                out.append(events.Segment(channel, piece))
        return out

    def amend(self, channel: int, text: str, amended: str) -> None:
        """A committed word ``text`` now reads ``amended``: a sentence it no longer ends goes on,
        one it now ends is over."""
        piece = self._pieces.amend(channel, text.strip(), amended.strip())
        if piece is None or ends_sentence(amended) == ends_sentence(text):
            return
        if ends_sentence(amended):
            self._cutters.of(piece.speaker).ends()
        else:
            self._cutters.of(piece.speaker).goes_on()

    def prompt(self, channel: int, given: str) -> str | None:
        """The previous-text prompt of the channel's next decode (``given``: the stream's own)."""
        return self._prompts[channel].prompt(given)

    def sentences(self) -> list[Transcript]:
        """Every piece sent, joined into sentences: the ``final``'s segments."""
        return self._pieces.sentences()
