"""The server-side settings one session runs with, taken once from :class:`Config`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.config import Config, StreamConfig
from streaming.engine import FRAMES_PER_SECOND, MAX_FRAMES, WINDOW_MARGIN_FRAMES, DecodeOptions

# The encoder window holds a clip and this much room after it.
WINDOW_MARGIN = WINDOW_MARGIN_FRAMES / FRAMES_PER_SECOND


@dataclass(frozen=True, slots=True)
class TrackSettings:
    """How a track decides (defaults live in :class:`~streaming.config.Config`)."""

    max_decode: int  # samples: the longest clip that fits the encoder window with its margin
    max_partial: int  # the same for a partial's (smaller) window
    load_partial: int  # the same while the model workers are behind
    max_context: int  # samples of committed speech a decode may carry before the new speech
    load_context: int  # the same while the model workers are behind
    commit_bound: float  # seconds a spoken word may wait for its commit
    partial_interval: float  # seconds between partials; 0: none
    eager_finals: bool

    @property
    def force_age(self) -> int:
        """Samples after which a word is committed by a partial, agreed or not: the next
        partial (one interval, plus its decode) would come too late for the bound."""
        seconds = self.commit_bound - self.partial_interval - 0.3
        return round(max(seconds, 0.2) * SAMPLE_RATE)


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """The server-side settings one session runs with (defaults live in :class:`Config`)."""

    model: str
    beam_size: int
    partial_beam_size: int
    partial_interval: float
    condition_on_previous_text: bool
    prompt_chars: int
    max_frame_bytes: int
    max_session_seconds: float
    max_buffered_seconds: float
    idle_timeout: float
    max_unsent_messages: int
    encoder_window: float
    partial_encoder_window: float
    load_partial_encoder_window: float
    max_context: float
    load_context: float
    commit_bound: float
    eager_finals: bool
    sentence_pause: float
    max_sentence: float

    @classmethod
    def from_config(cls, config: Config, model: str) -> SessionSettings:
        return cls(
            model=model,
            beam_size=config.beam_size,
            partial_beam_size=config.partial_beam_size,
            partial_interval=config.partial_interval,
            condition_on_previous_text=config.condition_on_previous_text,
            prompt_chars=config.prompt_chars,
            max_frame_bytes=config.max_frame_bytes,
            max_session_seconds=config.max_session_seconds,
            max_buffered_seconds=config.max_buffered_seconds,
            idle_timeout=config.idle_timeout,
            max_unsent_messages=config.max_unsent_messages,
            encoder_window=config.encoder_window,
            partial_encoder_window=config.partial_encoder_window,
            load_partial_encoder_window=min(
                config.load_partial_encoder_window, config.partial_encoder_window
            ),
            max_context=config.max_context,
            load_context=config.load_context,
            commit_bound=config.commit_bound,
            eager_finals=config.eager_finals,
            sentence_pause=config.sentence_pause,
            max_sentence=config.max_sentence,
        )

    @classmethod
    def for_file(cls, config: Config, model: str) -> SessionSettings:
        """``POST /predict``: the whole file is there at once, so its pieces may wait for the
        model (the body limit bounds it), a piece and all the context that fits fill Whisper's
        30 s window (no one waits for a piece's words), and no eager final is decoded for a
        pause that the rest of the file already shows."""
        return dataclasses.replace(
            cls.from_config(config, model),
            max_buffered_seconds=config.max_session_seconds,
            encoder_window=MAX_FRAMES / FRAMES_PER_SECOND,
            max_context=MAX_FRAMES / FRAMES_PER_SECOND,
            load_context=MAX_FRAMES / FRAMES_PER_SECOND,  # its words are worth the wait
            partial_interval=0.0,  # nobody watches a file's words arrive
            eager_finals=False,
        )

    def effective(self, stream: StreamConfig) -> dict[str, Any]:
        """What a stream runs with, as its ``ready`` message says."""
        return {
            "model": self.model,
            "encoding": stream.encoding,
            "sample_rate": stream.sample_rate,
            "channels": stream.channels,
            "multichannel": stream.multichannel,
            "speakers": list(stream.speaker_labels) if stream.multichannel else [],
            "language": stream.language or "auto",
            "task": stream.task,
            "interim_results": stream.interim_results and self.partial_interval > 0,
            "diarize": stream.diarize,
            "limits": self.limits(),
        }

    def limits(self) -> dict[str, float]:
        """The limits a stream runs under, as ``ready`` and ``GET /v1/info`` show them."""
        return {
            "max_frame_bytes": self.max_frame_bytes,
            "max_session_seconds": self.max_session_seconds,
            "max_buffered_seconds": self.max_buffered_seconds,
            "idle_timeout": self.idle_timeout,
            "max_unsent_messages": self.max_unsent_messages,
        }

    def decode_options(
        self, stream: StreamConfig, *, prompt: str | None, partial: bool, load_window: bool, after_loop: bool
    ) -> DecodeOptions:
        """How a stream's decode runs: a final searches (beam, temperature fallback) in the whole
        encoder window; a partial is greedy in a smaller one, the smallest while partials wait
        (``load_window``), and searches as a final does once one of its utterance's partials
        looped (``after_loop``)."""
        if not partial:
            window = self.encoder_window
        elif load_window:
            window = self.load_partial_encoder_window
        else:
            window = self.partial_encoder_window
        greedy = partial and not after_loop
        return DecodeOptions(
            language=stream.language,
            task=stream.task,
            beam_size=self.partial_beam_size if greedy else self.beam_size,
            # Partials are aligned too: their words may be committed.
            word_timestamps=True,
            prompt=prompt,
            hotwords=stream.hotwords or None,
            temperature_fallback=not greedy,
            encoder_window=window,
        )

    def track_settings(self) -> TrackSettings:
        return TrackSettings(
            max_decode=round((self.encoder_window - WINDOW_MARGIN) * SAMPLE_RATE),
            max_partial=round((self.partial_encoder_window - WINDOW_MARGIN) * SAMPLE_RATE),
            load_partial=round((self.load_partial_encoder_window - WINDOW_MARGIN) * SAMPLE_RATE),
            max_context=round(self.max_context * SAMPLE_RATE),
            load_context=round(min(self.load_context, self.max_context) * SAMPLE_RATE),
            commit_bound=self.commit_bound,
            partial_interval=self.partial_interval,
            eager_finals=self.eager_finals,
        )
