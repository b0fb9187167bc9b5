"""Transcription: an utterance's audio in, its text and aligned words out.

:class:`Engine` is the interface the scheduler's worker calls; it is synchronous and owns no
thread. :class:`WhisperEngine` implements it with faster-whisper (CTranslate2), on the CPU or
on CUDA. Hallucination guards live here: the model's own no-speech and compression-ratio
checks, and no word outside the speech the VAD heard.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from streaming.audio import Samples

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


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


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The model's hallucination guards (faster-whisper's own semantics; defaults in Config)."""

    no_speech: float
    log_prob: float
    compression_ratio: float


class Engine(Protocol):
    """Decodes utterances. Called from one thread at a time (the scheduler's worker)."""

    @property
    def name(self) -> str: ...

    @property
    def multilingual(self) -> bool: ...

    @property
    def languages(self) -> frozenset[str]: ...

    def transcribe(self, audio: Samples, options: DecodeOptions) -> Decoded: ...


class WhisperEngine:
    """faster-whisper on CTranslate2."""

    def __init__(
        self,
        model_path: str,
        *,
        name: str,
        device: str,
        compute_type: str,
        cpu_threads: int,
        thresholds: Thresholds,
    ) -> None:
        from faster_whisper import WhisperModel  # heavy: imported where the model is loaded

        if compute_type == "default":
            compute_type = "float16" if _resolve_device(device) == "cuda" else "int8"
        self._name = name
        self._thresholds = thresholds
        self.device = _resolve_device(device)
        self.compute_type = compute_type
        self._model = WhisperModel(
            model_path,
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=False,
        )
        self._languages = frozenset(self._model.supported_languages)
        logger.info(
            "loaded model %s on %s (%s, %d languages)",
            name,
            self.device,
            compute_type,
            len(self._languages),
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def multilingual(self) -> bool:
        return bool(self._model.model.is_multilingual)

    @property
    def languages(self) -> frozenset[str]:
        return self._languages

    def transcribe(self, audio: Samples, options: DecodeOptions) -> Decoded:
        started = time.perf_counter()
        thresholds = self._thresholds
        kwargs: dict[str, Any] = {
            "language": options.language if self.multilingual else "en",
            "task": options.task if self.multilingual else "transcribe",
            "beam_size": options.beam_size,
            "best_of": options.beam_size,
            "temperature": FALLBACK_TEMPERATURES if options.temperature_fallback else 0.0,
            "compression_ratio_threshold": thresholds.compression_ratio,
            "log_prob_threshold": thresholds.log_prob,
            "no_speech_threshold": thresholds.no_speech,
            # Each utterance is one window; the stream's context comes in through the prompt.
            "condition_on_previous_text": False,
            "initial_prompt": options.prompt or None,
            "hotwords": options.hotwords or None,
            "word_timestamps": options.word_timestamps,
            "without_timestamps": not options.word_timestamps,
            "vad_filter": False,
        }
        segments, info = self._model.transcribe(audio, **kwargs)
        texts: list[str] = []
        words: list[DecodedWord] = []
        for segment in segments:
            # A decode that still loops after every fallback temperature is a hallucination.
            if segment.compression_ratio > thresholds.compression_ratio:
                logger.debug("dropped looping text (ratio %.2f)", segment.compression_ratio)
                continue
            texts.append(segment.text.strip())
            for word in segment.words or ():
                words.append(
                    DecodedWord(word.word, float(word.start), float(word.end), float(word.probability))
                )
        return Decoded(
            text=" ".join(t for t in texts if t),
            words=tuple(words),
            language=info.language,
            seconds=time.perf_counter() - started,
        )


def keep_spoken_words(
    words: Sequence[DecodedWord], speech: Sequence[tuple[float, float]]
) -> list[DecodedWord]:
    """Words that overlap speech the VAD heard; the rest are the model's inventions."""
    return [w for w in words if any(w.start < hi and w.end > lo for lo, hi in speech)]


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
