"""Transcription's contract: an utterance's audio in, its text and aligned words out.

:class:`Engine` is the interface the scheduler's worker calls; it is synchronous and owns no
thread. :class:`~streaming.whisper.WhisperEngine` implements it with faster-whisper
(CTranslate2), on the CPU or on CUDA; ``tests/fakes.py`` has a scripted one. The types here
are what the session and the scheduler see of a decode, whichever engine made it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from streaming.audio import Samples
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.voices import Voiceprint

HOP_LENGTH = 160  # samples per feature frame
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
MAX_FRAMES = 30 * FRAMES_PER_SECOND  # Whisper's window
# The encoder window exceeds the longest utterance by at least this much: with no trailing
# room the decoder tends to loop on the last words.
WINDOW_MARGIN_FRAMES = FRAMES_PER_SECOND
SENTENCE_END_MARKS = ".\u3002!\uff01?\uff1f"
# The marks a decode's text may open with, ending the prefix's last word: a sentence's ends,
# and the pauses inside one.
_LEADING_MARKS = re.compile("[" + re.escape(SENTENCE_END_MARKS + ",;:\uff0c\uff1a\u3001") + r"]+(?=\s|$)")
# Cross-attention alignment places a model's words late by a near-constant lag, in seconds.
# tiny.en: the median word starts 0.10 s and ends 0.09 s after where it was said (pocketsphinx
# forced alignment; bench.word_timing, the tune half of the words_silver clips; the held-out half
# scores the correction). One lag for both, so that words that touch still touch. Other models:
# not measured, no correction.
ALIGNMENT_LAG = {"tiny.en": 0.095}


@dataclass(frozen=True, slots=True)
class DecodeOptions:
    """How one utterance is decoded: what the stream chose and what the server allows."""

    language: str | None  # None: detect
    task: Literal["transcribe", "translate"]
    beam_size: int
    word_timestamps: bool
    prompt: str | None
    hotwords: str | None
    temperature_fallback: bool
    # Seconds of audio the encoder sees (the clip, padded with silence), or the clip plus a
    # margin if longer. A stream's 15 s hold a few seconds of speech as well as Whisper's own 30
    # at half the CPU; a whole file's pieces are decoded in the full 30 (docs/benchmarks.md).
    encoder_window: float


@dataclass(frozen=True, slots=True)
class Clip:
    """One item of a batch: audio, and the committed text of its opening part.

    ``prefix`` is forced on the decoder after the start-of-transcript tokens: the model does not
    transcribe that stretch again, it goes on from it, in the prefix's own case and punctuation.
    Only the words after the prefix come back, aligned against the whole clip."""

    audio: Samples
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class DecodedWord:
    text: str  # as the model wrote it, with its leading space
    start: float  # seconds from the start of the utterance's audio
    end: float
    probability: float


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    words: tuple[DecodedWord, ...]
    language: str | None
    seconds: float  # compute time spent on this decode
    # Speaker embeddings of the stretches its job asked for (``Job.voices``), made by the
    # scheduler's worker after the decode; the engine itself leaves this empty.
    voices: tuple[Voiceprint, ...] = ()
    # The letters the model glued onto the clip's prefix's last word before its first new word:
    # that word was cut short by the clip that wrote it ("fount" going on "s were bad"). ``text``
    # starts with them; ``words`` leave the word out, whose start the prefix holds.
    continued: str = ""

    @property
    def prefix_mark(self) -> str:
        """The marks the model wrote after the clip's prefix (and any letters it ``continued``
        its last word with), before its first new word: how it ends the prefix's last word,
        having heard what follows ("," or "."; "" when it went straight on). ``text`` starts
        with them; ``words`` leave them out."""
        found = _LEADING_MARKS.match(self.text.removeprefix(self.continued))
        return found.group(0) if found else ""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The model's hallucination guards (faster-whisper's own semantics; defaults in Config)."""

    no_speech: float
    log_prob: float
    compression_ratio: float


class Engine(Protocol):
    """Decodes utterances, several at once. Called from the scheduler's worker threads, as many
    at once as it has workers, so it must be thread-safe. The result list matches ``audios``
    item for item; an exception fails the batch."""

    @property
    def name(self) -> str: ...

    @property
    def multilingual(self) -> bool: ...

    @property
    def languages(self) -> frozenset[str]: ...

    def transcribe_batch(self, clips: Sequence[Clip], options: DecodeOptions) -> list[Decoded]: ...


def has_word(text: str) -> bool:
    """Whether a decode's text says a word: marks alone ("...", ".") are what Whisper writes for
    a breath or a noise, or to end a sentence before speech it did not reach."""
    return any(ch.isalnum() for ch in text)


def keep_spoken_words(
    words: Sequence[DecodedWord], speech: Sequence[tuple[float, float]]
) -> list[DecodedWord]:
    """Words that overlap speech the VAD heard; the rest are the model's inventions."""
    return [w for w in words if any(w.start < hi and w.end > lo for lo, hi in speech)]
