"""What a :class:`~streaming.session.Session` tells the protocol above it, as typed events.

Our own protocol renders them as its wire messages (:func:`to_message`); another protocol's
adapter (Deepgram's ``Results``, OpenAI's transcription events) renders them in its shapes.
Some events exist for those protocols only (voice activity, a finished utterance, a flushed
``finalize``): our wire has no message for them, so :func:`to_message` gives None.

Times are integer sample counts at 16 kHz from the start of the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streaming import messages
from streaming.errors import StreamingError
from streaming.messages import Transcript


@dataclass(frozen=True, slots=True)
class Ready:
    session_id: str
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Partial:
    """The words of a channel's open speech not committed yet (they may still change)."""

    channel: int
    transcript: Transcript


@dataclass(frozen=True, slots=True)
class Segment:
    """Committed words, never revised: a sentence or a piece of one."""

    channel: int
    transcript: Transcript


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The VAD heard a channel's speech begin at ``at``."""

    channel: int
    at: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """A channel's utterance closed (a pause long enough, ``finalize``, or the end): its speech
    ended at ``at``; its words follow once it is decoded (``kept`` False: too short to be an
    utterance, so none will)."""

    channel: int
    start: int
    at: int
    kept: bool = True


@dataclass(frozen=True, slots=True)
class UtteranceDone:
    """A channel's utterance from ``start`` to ``end`` is decoded: every word of it, and of
    the channel's speech before it, is committed (its ``Segment``s came before this)."""

    channel: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Flushed:
    """Everything received before a ``finalize`` is transcribed and sent."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The stream ends with this error (what was received is still transcribed)."""

    error: StreamingError


@dataclass(frozen=True, slots=True)
class Final:
    """The whole transcript, sentence by sentence: the last event of a stream."""

    transcripts: Sequence[Transcript]
    prediction_time_ms: int


Event = Ready | Partial | Segment | SpeechStarted | SpeechStopped | UtteranceDone | Flushed | Failed | Final


def to_message(event: Event) -> messages.ServerMessage | None:
    """Our protocol's message for ``event``; None for events it does not carry."""
    match event:
        case Ready(session_id, config):
            return messages.ready(session_id, config)
        case Partial(_, transcript):
            return messages.partial(transcript)
        case Segment(_, transcript):
            return messages.segment(transcript)
        case Failed(error):
            return messages.error(error)
        case Final(transcripts, prediction_time_ms):
            return messages.final(transcripts, prediction_time_ms)
    return None
