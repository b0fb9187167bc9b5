"""Deepgram's live transcription protocol on ``/v1/listen``, over our session.

A client written for Deepgram (its SDK, pipecat's or LiveKit's Deepgram speech-to-text) points
its base URL here and runs unchanged. Deepgram's query parameters are mapped onto a
:class:`~streaming.config.StreamConfig` (:func:`parse_listen_query`; docs/compatibility.md lists
each one, taken, ignored or refused), and :class:`DeepgramAdapter` reads Deepgram's client
messages (binary audio, ``KeepAlive``, ``Finalize``, ``CloseStream``) into the session's public
core and renders the session's events as Deepgram's messages:

- a partial: ``Results`` with ``is_final: false`` (only with ``interim_results=true``);
- a segment: ``Results`` with ``is_final: true``; the last one of an utterance has
  ``speech_final: true`` (an empty one when the utterance's words were all sent before);
- a flushed ``Finalize``: the last final ``Results`` it produced has ``from_finalize: true`` (an
  empty one when there was nothing left to transcribe);
- ``SpeechStarted`` (``vad_events=true``) when the VAD hears speech begin, and
  ``UtteranceEnd`` (``utterance_end_ms``) once that long has passed after an utterance's last
  word with no new speech;
- the end: ``Metadata``, then the close.

Reference: https://developers.deepgram.com/reference/speech-to-text/listen-streaming
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streaming import diarize, events
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.config import StreamConfig, bool_word, parse_stream_config
from streaming.errors import InvalidMessage, InvalidParameter, StreamingError
from streaming.messages import Transcript, Word, seconds, tagged_object
from streaming.session import Session
from streaming.wire import Outgoing

logger = logging.getLogger(__name__)

ENCODINGS = {"linear16": "pcm_s16le", "mulaw": "mulaw", "alaw": "alaw"}
# Taken and mapped onto our stream, or acted on by the adapter.
TAKEN = {
    "encoding",
    "sample_rate",
    "channels",
    "multichannel",
    "language",
    "interim_results",
    "punctuate",
    "vad_events",
    "diarize",
    "utterance_end_ms",
    "keyterm",
    "keywords",
}
# Refused: ignoring them would break what the client relies on (a callback that never comes,
# text that should have been redacted).
REFUSED = {
    "callback": "callbacks are not supported: read the results on the websocket",
    "callback_method": "callbacks are not supported: read the results on the websocket",
    "redact": "redaction is not supported; the transcript would carry what you asked to redact",
}
# Everything else (model, endpointing, smart_format, diarize_model, numerals, tag, ...) is accepted
# and ignored; docs/compatibility.md says why, one by one.
_KEYWORD_BOOST = re.compile(r":-?\d+(\.\d+)?$")
_UNPUNCTUATED = re.compile(r"[^\w'-]+")
MAX_TERMS = 100


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """A Deepgram stream: our stream, and what the adapter does beyond it."""

    stream: StreamConfig
    interim_results: bool = False
    punctuate: bool = True
    vad_events: bool = False
    utterance_end_ms: int | None = None


def parse_listen_query(
    query: Iterable[tuple[str, str]],
    *,
    multilingual: bool,
    languages: frozenset[str],
    max_speakers: int,
    diarization: bool = False,
) -> ListenOptions:
    """Deepgram's query parameters (repeated keys allowed) as our stream's. Raises
    :class:`InvalidParameter` for a refused or malformed one."""
    values: dict[str, list[str]] = {}
    for key, value in query:
        values.setdefault(key, []).append(value)
    for name, why in REFUSED.items():
        if name in values:
            raise InvalidParameter(f"{name}: {why}")
    one = {key: found[-1] for key, found in values.items() if key in TAKEN}
    ours: dict[str, str] = {}
    encoding = one.get("encoding", "linear16")
    if encoding not in ENCODINGS:
        raise InvalidParameter(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding[:40]!r}")
    ours["encoding"] = ENCODINGS[encoding]
    for name in ("sample_rate", "channels", "multichannel", "diarize"):
        if name in one:
            ours[name] = one[name]
    if "language" in one:
        code = one["language"].strip().lower()
        ours["language"] = "auto" if code == "multi" else code.split("-")[0]
    terms = [*values.get("keyterm", []), *(_KEYWORD_BOOST.sub("", k) for k in values.get("keywords", []))]
    if len(terms) > MAX_TERMS:
        raise InvalidParameter(f"at most {MAX_TERMS} keyterm and keywords values")
    if terms:
        ours["hotwords"] = " ".join(term.strip() for term in terms if term.strip())
    stream = parse_stream_config(
        ours,
        multilingual=multilingual,
        languages=languages,
        max_speakers=max_speakers,
        diarization=diarization,
    )
    end_ms = None
    if "utterance_end_ms" in one:
        raw = one["utterance_end_ms"]
        if not raw.isdigit() or not 1000 <= int(raw) <= 60_000:
            raise InvalidParameter(
                f"utterance_end_ms must be milliseconds from 1000 to 60000, got {raw[:20]!r}"
            )
        end_ms = int(raw)
    return ListenOptions(
        stream=stream,
        interim_results=_flag(one, "interim_results", default=False),
        punctuate=_flag(one, "punctuate", default=True),
        vad_events=_flag(one, "vad_events", default=False),
        utterance_end_ms=end_ms,
    )


def _flag(values: dict[str, str], name: str, *, default: bool) -> bool:
    if name not in values:
        return default
    parsed = bool_word(values[name])
    if parsed is None:
        raise InvalidParameter(f"{name} must be true or false, got {values[name][:20]!r}")
    return parsed


# Close codes and reasons: Deepgram's own where it documents one, the standard code otherwise.
_CLOSES = {
    "invalid_audio": (1008, "DATA-0000"),
    "invalid_message": (1008, "DATA-0000"),
    "idle_timeout": (1011, "NET-0001"),
    "internal_error": (1011, "NET-0000"),
    "overloaded": (1013, "overloaded"),
}


@dataclass
class _Channel:
    """What the adapter remembers of one channel between events."""

    unended_words: bool = False  # final words since the last speech_final
    unreported_words: bool = False  # final words since the last UtteranceEnd
    last_word_end: int = 0
    speaking: bool = False
    decoding: bool = False  # speech stopped that no UtteranceDone has answered yet
    # UtteranceEnd is due once utterance_end_ms of audio follow the last word: armed when
    # the channel's words are all in and no speech goes on.
    armed: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)  # final Results of this batch


class DeepgramAdapter:
    """Deepgram's client messages in, driving a :class:`Session`; Deepgram's messages out."""

    def __init__(self, session: Session, options: ListenOptions, request_id: str | None = None) -> None:
        self.session = session
        self.options = options
        self.request_id = request_id or str(uuid.uuid4())
        self._created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self._sha256 = hashlib.sha256()
        channels = options.stream.channels if options.stream.multichannel else 1
        self._channels = [_Channel() for _ in range(channels)]
        self._model = {"name": session.settings.model, "version": "whisper", "arch": "whisper"}

    # ------------------------------------------------------------------ client messages

    def receive_bytes(self, data: bytes) -> None:
        if not data:  # Deepgram's older clients end a stream with an empty binary frame
            self.session.end()
            return
        if self.session.accept_frame(len(data)):
            self._sha256.update(data)
            self.session.receive_audio(data)

    def receive_text(self, text: str) -> None:
        if not self.session.accept_frame(len(text)):
            return
        try:
            kind = tagged_object(text, "type", "text messages")["type"]
        except StreamingError as exc:
            self.session.fail(exc)
            return
        if kind == "KeepAlive":
            self.session.keep_alive()
        elif kind == "Finalize":
            self.session.finalize()
        elif kind == "CloseStream":
            self.session.end()
        else:
            self.session.fail(
                InvalidMessage(f"unknown message type {kind[:40]!r}; known: KeepAlive, Finalize, CloseStream")
            )

    # ------------------------------------------------------------------ server messages

    def messages_to_send(self) -> list[Outgoing]:
        # Rendered as dicts first: a later event of the batch may still mark a final Results
        # (speech_final, from_finalize) before it is written.
        batch: list[tuple[dict[str, Any], str | None]] = []
        for event in self.session.events_to_send():
            batch += self._render(event)
        for channel in self._channels:
            channel.results = []
        batch += self._utterance_ends()
        return [Outgoing(_dump(message), key) for message, key in batch]

    def _render(self, event: events.Event) -> list[tuple[dict[str, Any], str | None]]:
        match event:
            case events.Partial(index, transcript) if self.options.interim_results:
                return [(self._results(index, transcript, final=False), f"partial:{index}")]
            case events.Segment(index, transcript):
                channel = self._channels[index]
                results = self._results(index, transcript, final=True)
                channel.results.append(results)
                channel.unended_words = True
                channel.unreported_words = True
                if transcript.words:
                    channel.last_word_end = transcript.words[-1].end
                return [(results, None)]
            case events.UtteranceDone(index, _, end):
                return self._speech_final(index, end)
            case events.SpeechStarted(index, at):
                self._channels[index].speaking = True
                self._channels[index].armed = False
                if not self.options.vad_events:
                    return []
                channel_index = [index, len(self._channels)]
                return [({"type": "SpeechStarted", "channel": channel_index, "timestamp": seconds(at)}, None)]
            case events.SpeechStopped(index, _, _, kept):
                channel = self._channels[index]
                channel.speaking = False
                if kept:
                    channel.decoding = True
                elif not channel.decoding:
                    # A blip too short to be an utterance brings no UtteranceDone; if one came
                    # during the blip, it could not arm.
                    channel.armed = channel.unreported_words
            case events.Flushed():
                return self._from_finalize()
            case events.Failed(error):
                return [(_error(error), None)]
            case events.Final():
                return [(self._metadata(), None)]
        return []

    def _speech_final(self, index: int, end: int) -> list[tuple[dict[str, Any], str | None]]:
        channel = self._channels[index]
        channel.decoding = False
        # Armed by whatever utterance is done with no speech going on, not only one that
        # brought words: under load, one final decode can commit the words of the next
        # utterance too, while it is spoken, and that utterance is then done with none.
        if channel.unreported_words and not channel.speaking:
            channel.armed = True
        if not channel.unended_words:
            return []
        channel.unended_words = False
        if channel.results:
            channel.results[-1]["speech_final"] = True  # not written yet: it is in this batch
            return []
        empty = self._results(index, Transcript(start=end, end=end, text=""), final=True)
        empty["speech_final"] = True
        return [(empty, None)]

    def _from_finalize(self) -> list[tuple[dict[str, Any], str | None]]:
        batch = [r for channel in self._channels for r in channel.results]
        if batch:
            batch[-1]["from_finalize"] = True
            return []
        at = self.session.received_samples
        empty = self._results(0, Transcript(start=at, end=at, text=""), final=True)
        empty["from_finalize"] = True
        return [(empty, None)]

    def _utterance_ends(self) -> list[tuple[dict[str, Any], str | None]]:
        if self.options.utterance_end_ms is None:
            return []
        received = self.session.received_samples
        gap = self.options.utterance_end_ms * SAMPLE_RATE // 1000
        out: list[tuple[dict[str, Any], str | None]] = []
        for index, channel in enumerate(self._channels):
            if channel.armed and received >= channel.last_word_end + gap:
                channel.armed = channel.unreported_words = False
                message = {
                    "type": "UtteranceEnd",
                    "channel": [index, len(self._channels)],
                    "last_word_end": seconds(channel.last_word_end),
                }
                out.append((message, None))
        return out

    def _results(self, index: int, transcript: Transcript, *, final: bool) -> dict[str, Any]:
        words = [self._word(w, transcript.speaker) for w in transcript.words]
        punctuate = self.options.punctuate
        text = transcript.text if punctuate else " ".join(w["word"] for w in words)
        confidence = sum(w.probability for w in transcript.words) / len(words) if words else 0.0
        return {
            "type": "Results",
            "channel_index": [index, len(self._channels)],
            "duration": seconds(transcript.end - transcript.start),
            "start": seconds(transcript.start),
            "is_final": final,
            "speech_final": False,
            "from_finalize": False,
            "channel": {
                "alternatives": [{"transcript": text, "confidence": round(confidence, 4), "words": words}]
            },
            "metadata": {
                "request_id": self.request_id,
                "model_info": self._model,
                "model_uuid": self.request_id,
            },
        }

    def _word(self, word: Word, speaker: str | None) -> dict[str, Any]:
        plain = _UNPUNCTUATED.sub("", word.text).lower() or word.text.lower()
        out: dict[str, Any] = {
            "word": plain,
            "start": seconds(word.start),
            "end": seconds(word.end),
            "confidence": round(word.probability, 4),
            "punctuated_word": word.text if self.options.punctuate else plain,
        }
        if self.options.stream.diarize and speaker is not None:
            out["speaker"] = diarize.index_of(speaker)  # Deepgram numbers speakers from 0
        return out

    def _metadata(self) -> dict[str, Any]:
        return {
            "type": "Metadata",
            "transaction_key": "deprecated",
            "request_id": self.request_id,
            "sha256": self._sha256.hexdigest(),
            "created": self._created,
            "duration": round(self.session.received_seconds, 3),
            "channels": self.options.stream.channels,
            "models": [self.request_id],
            "model_info": {self.request_id: self._model},
        }

    # ------------------------------------------------------------------ closing

    def close_frame(self) -> tuple[int, str]:
        error = self.session.error
        if error is None:
            return 1000, ""
        return _CLOSES.get(error.code, (error.close_code, error.code))

    def failure_frame(self, error: StreamingError) -> Outgoing:
        return Outgoing(_dump(_error(error)))


def _error(error: StreamingError) -> dict[str, Any]:
    return {"type": "Error", "variant": error.code, "description": error.message}


def http_error(error: StreamingError, request_id: str | None = None) -> tuple[int, dict[str, str]]:
    """Deepgram's answer to a refused handshake: its HTTP status and body."""
    status, err_code = {
        "unauthorized": (401, "INVALID_AUTH"),
        "origin_not_allowed": (403, "FORBIDDEN"),
        "invalid_parameter": (400, "Bad Request"),
        "server_full": (429, "TOO_MANY_REQUESTS"),
    }.get(error.code, (503, "SERVICE_UNAVAILABLE"))
    body = {"err_code": err_code, "err_msg": error.message, "request_id": request_id or str(uuid.uuid4())}
    return status, body


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False)
