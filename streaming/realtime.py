"""OpenAI's Realtime transcription protocol on ``/v1/realtime?intent=transcription``, over our
session.

A client of OpenAI's Realtime transcription (its SDK's realtime websocket, or any client that
follows the documented events) points its base URL here. :class:`RealtimeAdapter` reads the
client events into the session's public core:

- ``session.update`` (and the older ``transcription_session.update``): the input format
  (``audio/pcm`` at 24 kHz, G.711 ``audio/pcmu`` and ``audio/pcma``, before any audio), the
  language and prompt (for what is decoded next), and turn detection: ``server_vad`` (our VAD
  cuts the turns) or none (the client commits them);
- ``input_audio_buffer.append`` (base64 audio), ``.commit`` and ``.clear``;

and renders the session's events as OpenAI's server events, each with an ``event_id``. Each
turn is a conversation item: ``input_audio_buffer.speech_started`` and ``speech_stopped``
(``server_vad`` only), ``input_audio_buffer.committed``, then
``conversation.item.input_audio_transcription.delta`` for each piece of committed text (append
only: our words are final when sent) and ``.completed`` with the item's whole transcript.

Reference: https://platform.openai.com/docs/guides/realtime-transcription
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streaming import events
from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.config import Encoding, StreamConfig
from streaming.errors import InvalidMessage, InvalidParameter, StreamingError
from streaming.messages import tagged_object
from streaming.session import Session
from streaming.wire import Outgoing

logger = logging.getLogger(__name__)

RATE = 24000  # OpenAI's PCM input: 16-bit, 24 kHz, mono
FORMATS: dict[str, tuple[Encoding, int]] = {
    "audio/pcm": ("pcm_s16le", RATE),
    "audio/pcmu": ("mulaw", 8000),
    "audio/pcma": ("alaw", 8000),
}
# The older transcription_session.update names for the same formats.
BETA_FORMATS = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
MAX_PROMPT = 1000
# Close codes OpenAI's SDK reads: 1013 and 1001 are worth a reconnect, 1008 is not.
_CLOSES = {"overloaded": 1013, "server_full": 1013, "not_ready": 1013, "shutting_down": 1001}


def realtime_stream_config() -> StreamConfig:
    """What a Realtime session starts as, until a ``session.update`` says otherwise."""
    return StreamConfig(encoding="pcm_s16le", sample_rate=RATE, interim_results=False)


@dataclass
class _Item:
    """One turn of the input audio: a conversation item and its transcript."""

    id: str
    start: int
    stopped_at: int | None = None  # stream sample where its speech ended (None: open)
    committed: bool = False
    done: bool = False  # every word of it is committed
    dropped: bool = False  # cleared before it was committed: nothing of it is told
    deltas: list[str] = field(default_factory=list)  # held until it is committed
    text: list[str] = field(default_factory=list)


class RealtimeAdapter:
    """OpenAI's Realtime client events in, driving a :class:`Session`; its server events out."""

    def __init__(self, session: Session, parse: Callable[[dict[str, str]], StreamConfig]) -> None:
        """``parse`` checks a language and prompt as a stream's query parameters are checked."""
        self.session = session
        self._parse = parse
        self._id = f"sess_{session.id}"
        self._event_ids = itertools.count(1)
        self._item_ids = itertools.count(1)
        self._server_vad = True
        self._format = "audio/pcm"
        self._transcription: dict[str, Any] = {
            "model": session.settings.model,
            "language": "en",
            "prompt": "",
        }
        self._items: deque[_Item] = deque()  # not completed yet, oldest first
        self._last_committed: str | None = None
        self._appended = False  # audio since the last commit (turn detection off)
        self._out: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ client events

    def receive_bytes(self, data: bytes) -> None:
        self._render_events()
        self._error(
            InvalidMessage("Realtime events are JSON text frames; send audio in input_audio_buffer.append")
        )

    def receive_text(self, text: str) -> None:
        self._render_events()  # act on what the session said so far (a clear drops an open turn)
        if not self.session.accept_frame(len(text)):
            return
        try:
            event = tagged_object(text, "type", "client events")
        except StreamingError as exc:
            self._error(exc)
            return
        kind = event["type"]
        try:
            if kind in ("session.update", "transcription_session.update"):
                self._update(event.get("session"), beta=kind.startswith("transcription"))
            elif kind == "input_audio_buffer.append":
                self._append(event.get("audio"))
            elif kind == "input_audio_buffer.commit":
                self._commit()
            elif kind == "input_audio_buffer.clear":
                self._clear()
            else:
                raise InvalidMessage(f"unknown or unsupported client event {kind[:60]!r}")
        except StreamingError as exc:
            self._error(exc, client_event=event.get("event_id"))

    def _update(self, update: Any, *, beta: bool) -> None:
        if not isinstance(update, dict):
            raise InvalidParameter("session.update needs a 'session' object")
        if beta:  # transcription_session.update: the same settings under older names
            audio_in = {
                "format": _beta_format(update["input_audio_format"])
                if "input_audio_format" in update
                else None,
                "transcription": update.get("input_audio_transcription"),
            }
            if "turn_detection" in update:
                audio_in["turn_detection"] = update["turn_detection"]
        else:
            audio_in = _object(_object(update, "audio"), "input")
        # All or nothing: every field is checked before anything changes.
        stream, fmt_name = self.session.stream, self._format
        transcription_config, server_vad = self._transcription, self._server_vad
        fmt = audio_in.get("format")
        if fmt is not None:
            asked_format = fmt.get("type") if isinstance(fmt, dict) else None
            if asked_format not in FORMATS or (asked_format == "audio/pcm" and fmt.get("rate", RATE) != RATE):
                raise InvalidParameter(
                    f"the input format must be audio/pcm at {RATE} Hz, audio/pcmu or audio/pcma"
                )
            fmt_name = str(asked_format)
            encoding, rate = FORMATS[fmt_name]
            stream = dataclasses.replace(stream, encoding=encoding, sample_rate=rate)
        transcription = audio_in.get("transcription")
        if isinstance(transcription, dict):
            asked = {k: str(transcription[k]) for k in ("language", "prompt") if transcription.get(k)}
            chosen = self._parse(asked)  # checked as a stream's query would be
            stream = dataclasses.replace(stream, language=chosen.language, prompt=chosen.prompt)
            transcription_config = {**transcription_config, **transcription}
        if "turn_detection" in audio_in:
            detection = audio_in["turn_detection"]
            if detection is not None and (
                not isinstance(detection, dict) or detection.get("type") != "server_vad"
            ):
                raise InvalidParameter(
                    "turn_detection must be server_vad or null (semantic_vad is not supported)"
                )
            server_vad = detection is not None
        self.session.reconfigure(stream)
        self._format, self._transcription, self._server_vad = fmt_name, transcription_config, server_vad
        self._emit(
            "transcription_session.updated" if beta else "session.updated", session=self._session_object()
        )

    def _append(self, audio: Any) -> None:
        try:
            if not isinstance(audio, str):
                raise ValueError
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidMessage(
                "input_audio_buffer.append needs 'audio': base64 of the input format"
            ) from None
        self._appended = self._appended or bool(data)
        self.session.receive_audio(data)

    def _commit(self) -> None:
        if self._server_vad:
            if not self._items or self._items[-1].stopped_at is not None:
                raise InvalidMessage("there is no speech to commit: the VAD hears none open")
            self.session.finalize()  # the VAD closes the open turn: its events follow
            return
        if not self._appended:
            raise InvalidMessage("the input audio buffer is empty: append audio before committing")
        self._appended = False
        at = self.session.received_samples
        item = self._items[-1] if self._items and not self._items[-1].committed else self._open_item(at)
        item.stopped_at = at
        self._commit_item(item)
        self.session.finalize()

    def _clear(self) -> None:
        """What was not committed is never told (its audio was taken, and is still decoded)."""
        for item in self._items:
            if not item.committed:
                item.dropped = True
        self._appended = False
        self._emit("input_audio_buffer.cleared")

    # ------------------------------------------------------------------ server events

    def messages_to_send(self) -> list[Outgoing]:
        self._render_events()
        out, self._out = self._out, []
        return [Outgoing(json.dumps(event, ensure_ascii=False)) for event in out]

    def _render_events(self) -> None:
        for event in self.session.events_to_send():
            self._render(event)

    def _render(self, event: events.Event) -> None:
        match event:
            case events.Ready():
                self._emit("session.created", session=self._session_object())
            case events.SpeechStarted(_, at) if self._server_vad:
                item = self._open_item(at)
                self._emit("input_audio_buffer.speech_started", audio_start_ms=_ms(at), item_id=item.id)
            case events.SpeechStopped(_, _, at, kept) if self._server_vad:
                self._stopped(at, kept=kept)
            case events.Segment(_, transcript):
                item = self._item_for(transcript.start)
                if not item.dropped and transcript.text:
                    delta = ("" if transcript.glued or not item.text else " ") + transcript.text
                    item.text.append(delta)
                    if item.committed:
                        self._delta(item, delta)
                    else:
                        item.deltas.append(delta)
            case events.UtteranceDone(_, _, end) if self._server_vad:
                self._done(end)
            case events.Flushed() if not self._server_vad:
                while self._items and self._items[0].committed:
                    self._complete(self._items[0])
            case events.Failed(error):
                self._emit("error", error=_error(error))

    def _stopped(self, at: int, *, kept: bool) -> None:
        """The VAD closed the open turn: it is committed (its words follow as deltas); one too
        short to be an utterance has none to wait for."""
        item = next((i for i in self._items if i.stopped_at is None), None)
        if item is None:
            return
        item.stopped_at = at
        item.done = not kept
        if not item.dropped:
            self._emit("input_audio_buffer.speech_stopped", audio_end_ms=_ms(at), item_id=item.id)
        self._commit_item(item)
        self._complete_done()

    def _done(self, end: int) -> None:
        """An utterance ending at ``end`` is decoded: every turn that ended by then has all its
        words (a track decodes in order), and done items complete in order."""
        for item in self._items:
            if item.committed and item.stopped_at is not None and item.stopped_at <= end:
                item.done = True
        self._complete_done()

    def _complete_done(self) -> None:
        while self._items and self._items[0].done:
            self._complete(self._items[0])

    def _open_item(self, at: int) -> _Item:
        item = _Item(id=f"item_{self.session.id}_{next(self._item_ids)}", start=at)
        self._items.append(item)
        return item

    def _item_for(self, start: int) -> _Item:
        """The item a committed piece of text belongs to: the oldest not completed whose turn
        had not ended where the piece begins (items complete in order), or a new one."""
        for item in self._items:
            if item.stopped_at is None or start < item.stopped_at:
                return item
        return self._open_item(start)

    def _commit_item(self, item: _Item) -> None:
        item.committed = True
        if item.dropped:
            return
        self._emit("input_audio_buffer.committed", previous_item_id=self._last_committed, item_id=item.id)
        self._last_committed = item.id
        for delta in item.deltas:
            self._delta(item, delta)
        item.deltas.clear()

    def _delta(self, item: _Item, delta: str) -> None:
        self._emit(
            "conversation.item.input_audio_transcription.delta", item_id=item.id, content_index=0, delta=delta
        )

    def _complete(self, item: _Item) -> None:
        self._items.remove(item)
        if item.dropped:
            return
        seconds = max(((item.stopped_at or item.start) - item.start) / SAMPLE_RATE, 0.0)
        self._emit(
            "conversation.item.input_audio_transcription.completed",
            item_id=item.id,
            content_index=0,
            transcript="".join(item.text),
            usage={"type": "duration", "seconds": round(seconds, 3)},
        )

    def _emit(self, kind: str, **fields: Any) -> None:
        self._out.append({"type": kind, "event_id": f"event_{next(self._event_ids)}", **fields})

    def _error(self, exc: StreamingError, client_event: Any = None) -> None:
        """A bad client event is answered with an ``error`` event; the session goes on."""
        logger.info("session %s: Realtime %s: %s", self.session.id, exc.code, exc.message)
        self._emit("error", error=_error(exc, client_event))

    def _session_object(self) -> dict[str, Any]:
        fmt: dict[str, Any] = {"type": self._format}
        if self._format == "audio/pcm":
            fmt["rate"] = RATE
        detection = (
            {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 200, "silence_duration_ms": 300}
            if self._server_vad
            else None
        )
        return {
            "type": "transcription",
            "id": self._id,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": self._transcription,
                    "turn_detection": detection,
                    "noise_reduction": None,
                }
            },
            "include": [],
        }

    # ------------------------------------------------------------------ closing

    def close_frame(self) -> tuple[int, str]:
        error = self.session.error
        if error is None:
            return 1000, ""
        return _CLOSES.get(error.code, error.close_code), error.code

    def failure_frame(self, error: StreamingError) -> Outgoing:
        return Outgoing(json.dumps({"type": "error", "event_id": "event_failure", "error": _error(error)}))


def refusal(error: StreamingError) -> tuple[str, int]:
    """How a stream is refused before it starts: an ``error`` event, and the close code."""
    event = {"type": "error", "event_id": "event_refused", "error": _error(error)}
    return json.dumps(event), _CLOSES.get(error.code, error.close_code)


def _error(error: StreamingError, client_event: Any = None) -> dict[str, Any]:
    server_side = error.close_code in (1011, 1013) or error.code in _CLOSES
    return {
        "type": "server_error" if server_side else "invalid_request_error",
        "code": "invalid_api_key" if error.code == "unauthorized" else error.code,
        "message": error.message,
        "param": None,
        "event_id": client_event if isinstance(client_event, str) else None,
    }


def _beta_format(name: Any) -> dict[str, Any]:
    if name not in BETA_FORMATS:
        raise InvalidParameter(f"input_audio_format must be one of {', '.join(BETA_FORMATS)}")
    return {"type": BETA_FORMATS[name]}


def _object(parent: dict[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParameter(f"'{name}' must be an object")
    return value


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE
