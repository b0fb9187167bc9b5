"""Fakes for fast tests of pure logic: scores and decodes scripted from the audio itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from streaming.audio import Samples
from streaming.config import Config
from streaming.driver import Decode
from streaming.engine import Clip, Decoded, DecodedWord, DecodeOptions
from streaming.jobs import Job
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
    encoder_window=Config().encoder_window,
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
    """Keeps the real engine's contract with words read off the audio itself.

    A word is each 0.5 s of a loud run (the last one if at least 0.2 s long), named after the
    run's pitch and its place in the run (`` f220.0``, `` f220.1``...), so the same audio gives
    the same words whatever the clip's start. A word cut off by the clip's end is heard wrong
    (``~`` appended), as a model mishears a word it hears half of. The ``prefix`` stands for the
    clip's first words: they are skipped, and only the words after them come back."""

    name = "scripted"
    multilingual = False
    languages = frozenset({"en"})

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.calls: list[tuple[int, DecodeOptions]] = []
        self.clips: list[Clip] = []
        self.batches: list[int] = []
        self.fail_on = fail_on or set()

    def transcribe_batch(self, clips: Sequence[Clip], options: DecodeOptions) -> list[Decoded]:
        self.batches.append(len(clips))
        return [self.transcribe(clip, options) for clip in clips]

    def transcribe(self, clip: Clip, options: DecodeOptions) -> Decoded:
        if clip.audio.ndim != 1:  # as the real engine: a clip is mono, or the batch fails
            raise ValueError(f"a clip is mono audio, not of shape {clip.audio.shape}")
        self.calls.append((len(clip.audio), options))
        self.clips.append(clip)
        if len(self.calls) in self.fail_on:
            raise RuntimeError("scripted failure")
        words = heard_words(clip.audio)[len(clip.prefix.split()) :]
        return Decoded(
            text="".join(w.text for w in words).strip(),
            words=tuple(words) if options.word_timestamps else (),
            language="en",
            seconds=0.01,
        )


def scripted_decode(engine: ScriptedEngine) -> Decode:
    """The engine as :func:`streaming.driver.run_to_final` calls a decoder."""

    async def decode(job: Job) -> Decoded:
        return engine.transcribe(job.clip, job.options)

    return decode


FRAME = RATE // 100  # 10 ms


def heard_words(audio: Samples) -> list[DecodedWord]:
    """The scripted engine's words (see :class:`ScriptedEngine`)."""
    frames = len(audio) // FRAME
    loud = [float(np.sqrt(np.mean(audio[i * FRAME : (i + 1) * FRAME] ** 2))) > 0.05 for i in range(frames)]
    words: list[DecodedWord] = []
    i = 0
    while i < frames:
        if not loud[i]:
            i += 1
            continue
        j = i
        while j < frames and loud[j]:
            j += 1
        run = audio[i * FRAME : j * FRAME]
        crossings = int(np.count_nonzero(np.diff(np.signbit(run))))
        pitch = round(crossings / 2 / (len(run) / RATE), -1)
        for k, lo in enumerate(range(i, j, 50)):
            hi = min(lo + 50, j)
            if hi - lo < 20:
                break
            cut_off = hi == frames and hi - lo < 50
            text = f" f{pitch:g}.{k}" + ("~" if cut_off else "")
            words.append(DecodedWord(text, lo * FRAME / RATE, hi * FRAME / RATE, 0.9))
        i = j
    return words
