"""What a reader sees: committed words grouped into sentences.

Words are committed in pieces (an agreed run of a partial, a time-bounded commit, the rest of
an utterance), and each piece is sent at once as a ``segment``. A piece ``continues`` the
sentence of the one before it on its channel when that one did not end a sentence and no real
pause lies between them; the ``final`` (and its SRT and WebVTT) joins such pieces into one
segment per sentence. A 0.3 s gap that ended a VAD utterance is not a real pause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from streaming import engine
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.messages import Transcript, Word

# The engine's marks (the ones Whisper writes), and an ellipsis.
SENTENCE_END_MARKS = engine.SENTENCE_END_MARKS + "\u2026"
# Closing quotes and brackets may follow the mark: 'he said "no."'
_CLOSERS = "\"'\u201d\u2019)]}"


# English titles Whisper writes with a full stop before a name ("Mr. Quilter"): not an end.
_NAME_TITLES = ("mr", "mrs", "ms", "messrs", "dr", "prof", "rev", "fr", "st", "mt", "sr", "jr")
_RANKS = ("gen", "col", "capt", "lt", "sgt", "gov", "sen", "rep", "hon")
_TITLES = frozenset(_NAME_TITLES + _RANKS)


def ends_sentence(text: str) -> bool:
    """Does this word end a sentence? Not a title ("Mr.") nor an initial ("John F.")."""
    word = text.strip().rstrip(_CLOSERS)
    if not word.endswith(tuple(SENTENCE_END_MARKS)):
        return False
    if word.endswith("."):
        stem = word[:-1].lstrip("\"'\u201c\u2018([{")
        if stem.lower() in _TITLES or (len(stem) == 1 and stem.isupper()):
            return False
    return True


def _goes_on(text: str) -> bool:
    """Does this word read as the middle of a sentence (it starts in lower case)?"""
    first = text.lstrip("\"'\u201c\u2018([{")[:1]
    return first.islower()


@dataclass
class SentenceCutter:
    """One channel's sentence state: turns committed words into pieces."""

    pause: int  # samples of silence between words that end a sentence
    longest: int  # samples: a sentence longer than this is ended at the next piece
    speaker: str | None = None
    _open_since: int | None = None  # start of the open sentence (None: the last piece ended one)
    _sentence_start: int | None = None  # start of the last sentence, open or ended
    _last_end: int = 0

    @classmethod
    def of(cls, pause: float, longest: float, speaker: str | None) -> SentenceCutter:
        return cls(round(pause * SAMPLE_RATE), round(longest * SAMPLE_RATE), speaker)

    def goes_on(self) -> None:
        """The last piece's closing stop was rewritten as a comma, or as no mark: its sentence
        goes on."""
        if self._open_since is None:
            self._open_since = self._sentence_start

    def ends(self) -> None:
        """The last piece's last word was given a closing stop (the decode after it wrote one,
        having heard what follows): its sentence is over."""
        self._open_since = None

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
        open_since = self._open_since
        if open_since is None and _goes_on(words[0].text):
            # A lower-case start says the full stop before it was not an end: the model wrote
            # one where the clip it decoded stopped at a short pause (the next decode, prefixed
            # with it, heard that the sentence goes on). That word is final as sent; the
            # sentence it belongs to is not over.
            open_since = self._sentence_start
        continues = (
            open_since is not None
            and start - self._last_end < self.pause
            and end - open_since <= self.longest
        )
        if not continues:
            open_since = start
        self._sentence_start = open_since
        self._open_since = None if ends_sentence(words[-1].text) else open_since
        self._last_end = end
        text = join_words(words)
        return Transcript(
            start=start,
            end=end,
            text=text,
            words=tuple(words),
            speaker=self.speaker,
            continues=continues,
        )


@dataclass
class SentenceCutters:
    """A sentence state per speaker (a channel's, or a voice told apart on one channel), each
    made when its speaker's first words come."""

    pause: float
    longest: float
    _cutters: dict[str | None, SentenceCutter] = field(default_factory=dict)

    def of(self, speaker: str | None) -> SentenceCutter:
        found = self._cutters.get(speaker)
        if found is None:
            found = self._cutters[speaker] = SentenceCutter.of(self.pause, self.longest, speaker)
        return found


@dataclass
class Pieces:
    """The pieces sent, in the order they were committed, for the ``final``: where a later
    decode ends a channel's last word otherwise than the stop its own decode wrote where its
    clip stopped, the final has it so."""

    sent: list[Transcript] = field(default_factory=list)
    _last: dict[int, int] = field(default_factory=dict)  # channel -> its last piece in ``sent``

    def add(self, channel: int, piece: Transcript) -> None:
        self._last[channel] = len(self.sent)
        self.sent.append(piece)

    def amend(self, channel: int, text: str, amended: str) -> Transcript | None:
        """Rewrite the channel's last word, sent as ``text``; the piece it ended, or None if
        that word is not the last one sent (a diarizer still holds it: it stays as written)."""
        at = self._last.get(channel)
        if at is None or self.sent[at].words[-1].text != text:
            return None
        piece = self.sent[at]
        words = (*piece.words[:-1], replace(piece.words[-1], text=amended))
        self.sent[at] = replace(piece, words=words, text=join_words(words))
        return piece

    def sentences(self) -> list[Transcript]:
        return join_sentences(self.sent)


def join_words(words: Sequence[Word]) -> str:
    """Words as text: a space before each, but where the model wrote a word against the one
    before it (``42-line``, ``i.e.``)."""
    return "".join(w.text if i == 0 or w.glued else " " + w.text for i, w in enumerate(words))


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
                text=(before.text + ("" if piece.glued else " ") + piece.text).strip(),
                words=before.words + piece.words,
                continues=False,
            )
        else:
            last[piece.speaker] = len(joined)
            joined.append(replace(piece, continues=False))
    return joined
