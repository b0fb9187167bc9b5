"""Fakes for fast tests of pure logic: scores and decodes scripted from the audio itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from streaming.audio import Samples
from streaming.engine import Decoded, DecodedWord, DecodeOptions
from streaming.vad import VadParams

RATE = 16000

# Segmentation for scripted tests: quick to speak and to fall silent, cuts at 4 s.
TEST_VAD = VadParams(
    threshold=0.5,
    min_silence=int(0.3 * RATE),
    speech_pad=int(0.2 * RATE),
    max_utterance=4 * RATE,
    min_speech=int(0.1 * RATE),
)


# The decode options of a final and of a partial with the default settings.
FINAL = DecodeOptions(
    language="en",
    task="transcribe",
    beam_size=5,
    word_timestamps=True,
    prompt=None,
    hotwords=None,
    temperature_fallback=True,
)
PARTIAL = dataclasses.replace(FINAL, beam_size=1, word_timestamps=False, temperature_fallback=False)


def tone(seconds: float, amplitude: float = 0.5, freq: float = 220.0) -> Samples:
    t = np.arange(round(seconds * RATE), dtype=np.float32) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(seconds: float) -> Samples:
    return np.zeros(round(seconds * RATE), dtype=np.float32)


class LoudnessScorer:
    """'Speech' is any window louder than a threshold: VAD decisions follow the script."""

    def __init__(self, level: float = 0.05) -> None:
        self.level = level
        self.calls = 0

    def __call__(self, window: Samples) -> float:
        self.calls += 1
        return 0.95 if float(np.sqrt(np.mean(window**2))) > self.level else 0.02


class ScriptedEngine:
    """One word per 0.5 s of loud audio, named after the call count; records what it was asked."""

    name = "scripted"
    multilingual = False
    languages = frozenset({"en"})

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.calls: list[tuple[int, DecodeOptions]] = []
        self.batches: list[int] = []
        self.fail_on = fail_on or set()

    def transcribe_batch(self, audios: Sequence[Samples], options: DecodeOptions) -> list[Decoded]:
        self.batches.append(len(audios))
        return [self.transcribe(audio, options) for audio in audios]

    def transcribe(self, audio: Samples, options: DecodeOptions) -> Decoded:
        self.calls.append((len(audio), options))
        if len(self.calls) in self.fail_on:
            raise RuntimeError("scripted failure")
        words = []
        step = RATE // 2
        for i, offset in enumerate(range(0, len(audio) - step + 1, step)):
            chunk = audio[offset : offset + step]
            if float(np.sqrt(np.mean(chunk**2))) > 0.05:
                words.append(DecodedWord(f" w{i}", offset / RATE, (offset + step) / RATE, 0.9))
        return Decoded(
            text="".join(w.text for w in words).strip(),
            words=tuple(words),
            language="en",
            seconds=0.01,
        )
