"""Wire messages: what clients send, and what the server answers, in the hosted Whisper schema.

Server messages are ``TypedDict``s tagged by ``type``, built only through the functions here,
so each field name is written once. Times arrive as integer sample counts at 16 kHz
and become seconds, rounded to milliseconds, only in this module.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.errors import InvalidAudio, InvalidMessage, StreamingError


def seconds(samples: int) -> float:
    """Stream time in seconds, rounded to milliseconds."""
    return round(samples / SAMPLE_RATE, 3)


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Word:
    """One aligned word, times in samples from the start of the stream."""

    text: str
    start: int
    end: int
    probability: float
    # Written against the word before it, as the model wrote it ("42" then "-line"): text
    # joins them without a space. The wire's words carry no spacing; segment text does.
    glued: bool = False


@dataclass(frozen=True, slots=True)
class Transcript:
    """One utterance's text and words, times in samples from the start of the stream."""

    start: int
    end: int
    text: str
    words: tuple[Word, ...] = ()
    speaker: str | None = None
    # A piece of a sentence whose earlier words came in the speaker's previous segment.
    continues: bool = False

    @property
    def glued(self) -> bool:
        """A piece that continues its sentence with a word written against the last word of
        the previous piece ("old", then "-sposed young man."; every piece in a script without
        spaces): it joins the sentence without a space."""
        return self.continues and bool(self.words) and self.words[0].glued


# ---------------------------------------------------------------------------- wire shapes


class WordDict(TypedDict):
    word: str
    start: float
    end: float
    score: float
    speaker: str | None


class SegmentDict(TypedDict):
    start: float
    end: float
    text: str
    words: list[WordDict]
    speaker: str | None


class ResponseDict(TypedDict):
    segments: list[SegmentDict]
    word_segments: list[WordDict]


class ReadyMessage(TypedDict):
    type: Literal["ready"]
    session_id: str
    config: dict[str, Any]


class PartialMessage(TypedDict):
    type: Literal["partial"]
    segment: SegmentDict


class SegmentMessage(TypedDict):
    type: Literal["segment"]
    segment: SegmentDict
    continues: bool
    glued: bool


class FinalMessage(TypedDict):
    type: Literal["final"]
    prediction_time_ms: int
    response: ResponseDict
    transcription: str


class ErrorMessage(TypedDict):
    type: Literal["error"]
    code: str
    message: str


ServerMessage = ReadyMessage | PartialMessage | SegmentMessage | FinalMessage | ErrorMessage


def word_dict(word: Word, speaker: str | None) -> WordDict:
    return {
        "word": word.text,
        "start": seconds(word.start),
        "end": seconds(word.end),
        "score": round(word.probability, 3),
        "speaker": speaker,
    }


def segment_dict(transcript: Transcript) -> SegmentDict:
    return {
        "start": seconds(transcript.start),
        "end": seconds(transcript.end),
        "text": transcript.text,
        "words": [word_dict(w, transcript.speaker) for w in transcript.words],
        "speaker": transcript.speaker,
    }


def response(transcripts: Sequence[Transcript]) -> tuple[ResponseDict, str]:
    """The hosted schema's ``response`` and ``transcription`` for finished utterances."""
    ordered = sorted(transcripts, key=lambda t: (t.start, t.end))
    segments = [segment_dict(t) for t in ordered]
    words = sorted((w for s in segments for w in s["words"]), key=lambda w: (w["start"], w["end"]))
    transcription = " ".join(s["text"] for s in segments if s["text"])
    return {"segments": segments, "word_segments": words}, transcription


def ready(session_id: str, config: dict[str, Any]) -> ReadyMessage:
    return {"type": "ready", "session_id": session_id, "config": config}


def partial(transcript: Transcript) -> PartialMessage:
    return {"type": "partial", "segment": segment_dict(transcript)}


def segment(transcript: Transcript) -> SegmentMessage:
    return {
        "type": "segment",
        "segment": segment_dict(transcript),
        "continues": transcript.continues,
        "glued": transcript.glued,
    }


def final(transcripts: Sequence[Transcript], prediction_time_ms: int) -> FinalMessage:
    body, transcription = response(transcripts)
    return {
        "type": "final",
        "prediction_time_ms": prediction_time_ms,
        "response": body,
        "transcription": transcription,
    }


def error(exc: StreamingError) -> ErrorMessage:
    return {"type": "error", "code": exc.code, "message": exc.message}


# ---------------------------------------------------------------------------- client messages


@dataclass(frozen=True, slots=True)
class AudioData:
    """Raw audio bytes in the stream's declared encoding (binary frame or base64 text)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Finalize:
    """End the open utterance now."""


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """Keep an idle stream open."""


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """No more audio is coming."""


ClientMessage = AudioData | Finalize | KeepAlive | EndOfStream

_CONTROL: dict[str, ClientMessage] = {
    "finalize": Finalize(),
    "keepalive": KeepAlive(),
    "end": EndOfStream(),
}


def tagged_object(text: str, tag: str, what: str) -> dict[str, Any]:
    """A text frame of another protocol: a JSON object whose ``tag`` field is a string.
    Raises :class:`InvalidMessage` naming ``what`` the protocol's frames are."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"{what} are JSON objects: {exc.msg}") from None
    if not isinstance(value, dict) or not isinstance(value.get(tag), str):
        raise InvalidMessage(f"{what} are JSON objects with a {tag!r}")
    return value


def parse_client_text(text: str) -> ClientMessage:
    """Parse one text frame from a client. Raises :class:`InvalidMessage` or :class:`InvalidAudio`."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"text frames must be JSON objects: {exc.msg} at position {exc.pos}") from None
    if not isinstance(value, dict):
        raise InvalidMessage("text frames must be JSON objects with a 'type'")
    kind = value.get("type")
    if kind == "audio":
        payload = value.get("audio")
        if not isinstance(payload, str):
            raise InvalidMessage("an audio message needs 'audio': a base64 string")
        try:
            return AudioData(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidAudio("'audio' is not valid base64") from None
    if isinstance(kind, str) and kind in _CONTROL:
        return _CONTROL[kind]
    known = ", ".join(["audio", *_CONTROL])
    raise InvalidMessage(f"unknown message type {kind!r}; known types: {known}")
