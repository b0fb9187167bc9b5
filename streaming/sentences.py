"""What a reader sees: committed words grouped into sentences.

Words are committed in pieces (an agreed run of a partial, a time-bounded commit, the rest of
an utterance), and each piece is sent at once as a ``segment``. A piece ``continues`` the
sentence of the one before it on its channel when that one did not end a sentence and no real
pause lies between them; the ``final`` (and its SRT and WebVTT) joins such pieces into one
segment per sentence. A 0.3 s gap that ended a VAD utterance is not a real pause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from streaming import engine
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.messages import Transcript, Word

# The engine's marks (the ones Whisper writes), and an ellipsis.
SENTENCE_END_MARKS = engine.SENTENCE_END_MARKS + "\u2026"
# Closing quotes and brackets may follow the mark: 'he said "no."'
_CLOSERS = "\"'\u201d\u2019)]}"


def ends_sentence(text: str) -> bool:
    return text.rstrip().rstrip(_CLOSERS).endswith(tuple(SENTENCE_END_MARKS))


@dataclass
class SentenceCutter:
    """One channel's sentence state: turns committed words into pieces."""

    pause: int  # samples of silence between words that end a sentence
    longest: int  # samples: a sentence longer than this is ended at the next piece
    speaker: str | None = None
    _open_since: int | None = None  # start of the open sentence (None: the last piece ended one)
    _last_end: int = 0

    @classmethod
    def of(cls, pause: float, longest: float, speaker: str | None) -> SentenceCutter:
        return cls(round(pause * SAMPLE_RATE), round(longest * SAMPLE_RATE), speaker)

    def pieces(self, words: Sequence[Word]) -> list[Transcript]:
        """Split at sentence ends, and say of each piece whether it goes on the open sentence."""
        out: list[Transcript] = []
        run: list[Word] = []
        for i, word in enumerate(words):
            run.append(word)
            if ends_sentence(word.text) or i == len(words) - 1:
                out.append(self._piece(run))
                run = []
        return out

    def _piece(self, words: list[Word]) -> Transcript:
        start, end = words[0].start, words[-1].end
        continues = (
            self._open_since is not None
            and start - self._last_end < self.pause
            and end - self._open_since <= self.longest
        )
        if not continues:
            self._open_since = start
        self._last_end = end
        if ends_sentence(words[-1].text):
            self._open_since = None
        text = " ".join(w.text for w in words)
        return Transcript(
            start=start, end=end, text=text, words=tuple(words), speaker=self.speaker, continues=continues
        )


def join_sentences(pieces: Sequence[Transcript]) -> list[Transcript]:
    """The pieces, in the order they were committed, joined into sentences per speaker."""
    joined: list[Transcript] = []
    last: dict[str | None, int] = {}  # speaker -> index in joined of its open sentence
    for piece in pieces:
        at = last.get(piece.speaker)
        if piece.continues and at is not None:
            before = joined[at]
            joined[at] = replace(
                before,
                end=max(before.end, piece.end),
                text=f"{before.text} {piece.text}".strip(),
                words=before.words + piece.words,
                continues=False,
            )
        else:
            last[piece.speaker] = len(joined)
            joined.append(replace(piece, continues=False))
    return joined
