"""Streaming voice-activity segmentation: 16 kHz samples in, utterances out.

Scoring (a :class:`Scorer`: silero-vad, or scripted scores in tests) is kept apart from
segmentation (:class:`Segmenter`, pure logic over window scores), so the hysteresis, padding
and cuts are testable without a model.

Invariants, in stream samples:

- utterances never overlap and come in order; each keeps ``speech_pad`` of audio before its
  first and after its last speech window, unless that would reach into the previous utterance;
- an utterance longer than ``max_utterance`` is cut at the quietest window of its second half,
  and the audio after the cut starts the next utterance: nothing between them is dropped;
- buffered audio is bounded: the open utterance (at most ``max_utterance``) plus the padding.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import numpy as np

from streaming.audio import Samples
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.config import Config
from streaming.errors import ModelError
from streaming.models import verify

WINDOW = 512  # samples per VAD score at 16 kHz (32 ms), what silero-vad expects
_EMPTY: Samples = np.zeros(0, dtype=np.float32)


class Scorer(Protocol):
    """Speech probability of consecutive windows of one stream."""

    def __call__(self, window: Samples) -> float: ...


@dataclass(frozen=True, slots=True)
class VadParams:
    """Segmentation parameters, in samples at 16 kHz (defaults live in :class:`Config`)."""

    threshold: float
    min_silence: int
    speech_pad: int
    max_utterance: int
    min_speech: int

    @property
    def neg_threshold(self) -> float:
        """Below this, a window counts as silence (hysteresis, as silero-vad does)."""
        return max(self.threshold - 0.15, 0.01)

    @classmethod
    def from_config(cls, config: Config, *, whole_file: bool = False) -> VadParams:
        """A stream's segmentation, or (``whole_file``) that of ``POST /predict``: long pieces,
        since nobody waits for the first words and Whisper hears more in a longer window."""

        def samples(seconds: float) -> int:
            return round(seconds * SAMPLE_RATE)

        return cls(
            threshold=config.vad_threshold,
            min_silence=samples(config.file_min_silence if whole_file else config.min_silence),
            speech_pad=samples(config.speech_pad),
            max_utterance=samples(config.file_max_utterance if whole_file else config.max_utterance),
            min_speech=samples(config.min_speech),
        )


@dataclass(frozen=True, slots=True)
class Utterance:
    """A stretch of the stream with speech in it."""

    start: int  # stream sample of audio[0]
    audio: Samples
    speech: tuple[tuple[int, int], ...]  # stream-sample ranges the VAD heard speech in
    # The pause that closed it (its first silent window), or None for a cut (finalize, end of
    # stream, longest utterance): an eager final decoded from that pause on stands for it.
    silence_start: int | None = None

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


@dataclass(frozen=True, slots=True)
class Voice:
    """A change the VAD heard: speech began at ``at`` (``started``), or the open speech ended
    at ``at`` (``kept`` False: too short to be an utterance, so none is returned for it)."""

    started: bool
    at: int
    kept: bool = True


class State(Enum):
    QUIET = "quiet"
    SPEAKING = "speaking"


class Segmenter:
    """Cuts one stream into utterances. Feed it with :meth:`push`; it returns closed ones."""

    def __init__(self, scorer: Scorer, params: VadParams) -> None:
        self._scorer = scorer
        self._params = params
        self.state = State.QUIET
        self._audio = _EMPTY  # samples from stream sample self._audio_start on
        self._audio_start = 0
        self._scored = 0  # stream samples scored so far (whole windows)
        self._floor = 0  # end of the last utterance: the next never reaches before it
        self._start = 0  # open utterance: first sample
        self._silence_start: int | None = None
        self._windows: list[tuple[int, float]] = []  # open utterance: (window start, score)
        self._voice: list[Voice] = []

    @property
    def received(self) -> int:
        """Stream samples pushed so far."""
        return self._audio_start + len(self._audio)

    @property
    def buffered(self) -> int:
        """Samples held in memory."""
        return len(self._audio)

    def push(self, samples: Samples) -> list[Utterance]:
        """Add audio; return the utterances it closed."""
        if len(samples):
            self._audio = np.concatenate((self._audio, samples))
        closed: list[Utterance] = []
        while self.received - self._scored >= WINDOW:
            begin = self._scored - self._audio_start
            score = self._scorer(self._audio[begin : begin + WINDOW])
            window = self._scored
            self._scored += WINDOW
            utterance = self._on_window(window, score)
            if utterance is not None:
                closed.append(utterance)
        return closed

    @property
    def open_samples(self) -> int:
        """Length of the open utterance so far (0 while quiet), without copying it."""
        return self.received - self._start if self.state is State.SPEAKING else 0

    @property
    def trailing_silence(self) -> bool:
        """The open utterance is in a pause that may end it."""
        return self.state is State.SPEAKING and self._silence_start is not None

    @property
    def silence_start(self) -> int | None:
        """Where the open utterance's trailing pause began (None: not in one)."""
        return self._silence_start if self.state is State.SPEAKING else None

    @property
    def open_start(self) -> int | None:
        """First sample of the open utterance, or None while quiet."""
        return self._start if self.state is State.SPEAKING else None

    def speech_ranges(self) -> tuple[tuple[int, int], ...]:
        """The open utterance's speech so far, without copying its audio."""
        if self.state is not State.SPEAKING:
            return ()
        return self._speech(self._start, self.received)

    def onset_after(self, at: int) -> int | None:
        """Where the open utterance's first speech window at or after ``at`` begins (None: no
        speech there yet); unlike :meth:`speech_ranges`, unpadded, so a short pause shows."""
        threshold = self._params.threshold
        return next((w for w, score in self._windows if w >= at and score >= threshold), None)

    def take_voice(self) -> list[Voice]:
        """The starts and ends of speech since the last call, in order."""
        out, self._voice = self._voice, []
        return out

    def cut(self) -> Utterance | None:
        """Close the open utterance now, with every sample received so far."""
        if self.state is not State.SPEAKING:
            return None
        return self._close(self.received, keep_from=self.received)

    def _on_window(self, window: int, score: float) -> Utterance | None:
        params = self._params
        if self.state is State.QUIET:
            if score >= params.threshold:
                self.state = State.SPEAKING
                self._start = max(window - params.speech_pad, self._floor, self._audio_start)
                self._silence_start = None
                self._windows = [(window, score)]
                self._voice.append(Voice(started=True, at=window))  # the onset, not the padding
            else:
                self._trim(max(self._scored - params.speech_pad, self._floor))
            return None

        self._windows.append((window, score))
        if score >= params.threshold:
            self._silence_start = None
        elif score < params.neg_threshold and self._silence_start is None:
            self._silence_start = window
        if self._silence_start is not None and self._scored - self._silence_start >= params.min_silence:
            end = min(self._silence_start + params.speech_pad, self._scored)
            return self._close(
                end, keep_from=max(self._scored - params.speech_pad, end), silence_start=self._silence_start
            )
        if self._scored - self._start >= params.max_utterance:
            return self._cut_at_quietest()
        return None

    def _cut_at_quietest(self) -> Utterance | None:
        """Cut a too-long utterance at the quietest window of its second half; the rest goes on."""
        half = self._start + self._params.max_utterance // 2
        candidates = [(score, -start) for start, score in self._windows if start >= half]
        _, negative_start = min(candidates)
        cut = -negative_start + WINDOW // 2
        utterance = self._make(self._start, cut)
        self._floor = cut
        self._start = cut
        self._windows = [(s, p) for s, p in self._windows if s + WINDOW > cut]
        if self._silence_start is not None:
            self._silence_start = max(self._silence_start, cut)
        self._trim(cut)
        return utterance

    def _close(self, end: int, *, keep_from: int, silence_start: int | None = None) -> Utterance | None:
        utterance = self._make(self._start, end, silence_start)
        speech = sum(1 for _, p in self._windows if p >= self._params.threshold) * WINDOW
        spoken_until = silence_start if silence_start is not None else end
        self._voice.append(Voice(started=False, at=spoken_until, kept=speech >= self._params.min_speech))
        self.state = State.QUIET
        self._floor = end
        self._windows = []
        self._silence_start = None
        self._trim(keep_from)
        return utterance if speech >= self._params.min_speech else None

    def _make(self, start: int, end: int, silence_start: int | None = None) -> Utterance:
        audio = self._audio[start - self._audio_start : end - self._audio_start].copy()
        return Utterance(
            start=start, audio=audio, speech=self._speech(start, end), silence_start=silence_start
        )

    def _speech(self, start: int, end: int) -> tuple[tuple[int, int], ...]:
        speech: list[tuple[int, int]] = []
        pad = self._params.speech_pad
        for window, score in self._windows:
            if score < self._params.threshold:
                continue
            lo, hi = max(window - pad, start), min(window + WINDOW + pad, end)
            if speech and lo <= speech[-1][1]:
                speech[-1] = (speech[-1][0], max(hi, speech[-1][1]))
            elif lo < hi:
                speech.append((lo, hi))
        return tuple(speech)

    def _trim(self, keep_from: int) -> None:
        """Forget audio before ``keep_from`` (never audio not yet scored)."""
        keep_from = min(keep_from, self._scored)
        drop = keep_from - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start = keep_from


# silero-vad's network as the silero-vad package ships it for ONNX Runtime (its ``data``
# folder; the package is pinned), checked before it is loaded like the Whisper model.
SILERO_ONNX = ("silero_vad", "data/silero_vad.onnx")
SILERO_ONNX_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"
_RATE = np.array(SAMPLE_RATE, dtype=np.int64)


def _package_file(package: str, name: str) -> Path:
    """A data file of an installed package, found without importing it (silero_vad's
    ``__init__`` imports torch, which the server does not need)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the {package} package is not installed; reinstall the service")
    return Path(next(iter(spec.submodule_search_locations))) / name


class SileroVad:
    """silero-vad's 16 kHz network on ONNX Runtime (faster-whisper's own dependency), loaded once
    and shared by every stream.

    A network call takes one window and the caller's recurrent state, so each stream's
    :class:`SileroScorer` holds only that state and the last 64 samples of context (about
    1.3 KB). ONNX Runtime scores a 32 ms window in about 0.22 ms on this CPU, where the
    package's TorchScript model took 0.73 ms (docs/benchmarks.md): the VAD runs on the event
    loop, for every window of every stream. The scores are the packaged TorchScript model's to
    within 1e-6 (``tests/test_vad.py``).
    """

    def __init__(self) -> None:
        import onnxruntime

        path = _package_file(*SILERO_ONNX)
        verify(path, SILERO_ONNX_SHA256)
        options = onnxruntime.SessionOptions()
        # One thread per call: windows are tiny, and the cores belong to the Whisper model.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.context_samples = 64  # what the network expects before each 512-sample window

    def scorer(self) -> SileroScorer:
        """A new stream's scorer."""
        return SileroScorer(self)


class SileroScorer:
    """One stream's recurrent state over the shared :class:`SileroVad` network."""

    def __init__(self, vad: SileroVad) -> None:
        self._vad = vad
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, vad.context_samples), dtype=np.float32)

    def __call__(self, window: Samples) -> float:
        x = np.concatenate((self._context, window[None].astype(np.float32, copy=False)), axis=1)
        score, self._state = self._vad.session.run(None, {"input": x, "state": self._state, "sr": _RATE})
        self._context = x[:, -self._vad.context_samples :]
        return float(score[0, 0])
