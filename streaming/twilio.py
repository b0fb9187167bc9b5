"""Twilio Media Streams on ``/v1/twilio``: a call's two tracks as two speakers.

Twilio opens the websocket and sends JSON events: ``connected``; ``start`` with the stream's
``mediaFormat`` (always ``audio/x-mulaw`` at 8000 Hz, one channel per track) and its
``tracks``; ``media`` with 20 ms of base64 mu-law for one track (``inbound``: the caller,
``outbound``: what Twilio plays to the caller), a per-track ``timestamp`` in milliseconds and
a ``chunk`` number; ``mark``; ``dtmf``; and ``stop``. See
https://www.twilio.com/docs/voice/media-streams/websocket-messages.

:class:`TrackInterleaver` (sans-I/O) lines the two tracks up by their timestamps and turns
them into one interleaved two-channel mu-law stream: a gap in a track's timestamps, or a
track that falls more than ``MAX_SKEW_MS`` behind the other (a one-track stream, a track
that pauses), is filled with mu-law silence, so one track never holds the other back.
:class:`TwilioSession` is a :class:`~streaming.session.Session` of that stream (multichannel,
one speaker per track) that reads Twilio's events instead of our client messages. Our own
messages go back on the same socket: Twilio ignores them, a bot or a recorder beside it reads
them.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from typing import Any

from streaming.clock import Clock
from streaming.config import StreamConfig
from streaming.errors import InvalidMessage, StreamingError, Unauthorized
from streaming.session import Session, SessionSettings
from streaming.vad import Segmenter

logger = logging.getLogger(__name__)

TRACKS = ("inbound", "outbound")
DEFAULT_SPEAKERS = ("caller", "callee")
RATE = 8000
BYTES_PER_MS = RATE // 1000  # mu-law: one byte per sample
MAX_SKEW_MS = 200
SILENCE = b"\xff"  # mu-law code of 0


def twilio_stream_config(speakers: tuple[str, ...] = ()) -> StreamConfig:
    """The stream a Twilio call is: two mu-law channels at 8 kHz, one speaker per track."""
    return StreamConfig(
        encoding="mulaw",
        sample_rate=RATE,
        channels=2,
        multichannel=True,
        speakers=speakers or DEFAULT_SPEAKERS,
    )


class TrackInterleaver:
    """Per-track mu-law bytes in, placed by timestamp; interleaved stereo bytes out."""

    def __init__(self) -> None:
        self._queues = [bytearray(), bytearray()]
        self._next_ms = [0, 0]  # stream time at which each track's queue ends

    def add(self, track: int, timestamp_ms: int, payload: bytes) -> None:
        queue = self._queues[track]
        gap = timestamp_ms - self._next_ms[track]
        if gap > 0:  # lost or withheld chunks: keep the timeline
            queue.extend(SILENCE * (gap * BYTES_PER_MS))
        elif gap < 0:  # overlaps what is already queued (a resent chunk): drop the overlap
            payload = payload[-gap * BYTES_PER_MS :]
        queue.extend(payload)
        self._next_ms[track] = max(self._next_ms[track], timestamp_ms) + len(payload) // BYTES_PER_MS

    def take(self, *, flush: bool = False) -> bytes:
        """Interleaved bytes for the stretch both tracks cover; a track more than
        ``MAX_SKEW_MS`` behind (or every track, at ``flush``) is padded with silence first."""
        longest = max(len(q) for q in self._queues)
        for queue in self._queues:
            if flush or longest - len(queue) > MAX_SKEW_MS * BYTES_PER_MS:
                queue.extend(SILENCE * (longest - len(queue)))
        ready = min(len(q) for q in self._queues)
        if ready == 0:
            return b""
        out = bytearray(2 * ready)
        out[0::2] = self._queues[0][:ready]
        out[1::2] = self._queues[1][:ready]
        for queue in self._queues:
            del queue[:ready]
        return bytes(out)


class TwilioSession(Session):
    """A session fed by Twilio's events (text frames); binary frames are not part of them."""

    def __init__(
        self,
        *,
        session_id: str,
        settings: SessionSettings,
        new_segmenter: Callable[[], Segmenter],
        clock: Clock,
        speakers: tuple[str, ...] = (),
        key_check: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__(
            session_id=session_id,
            stream=twilio_stream_config(speakers),
            settings=settings,
            new_segmenter=new_segmenter,
            clock=clock,
        )
        self._interleaver = TrackInterleaver()
        # Set when the handshake carried no valid key: the start event's token must be one.
        self._key_check = key_check
        self._started = False
        self.stream_sid: str | None = None
        self.call_sid: str | None = None

    def receive_bytes(self, data: bytes) -> None:
        self._fail(InvalidMessage("Twilio Media Streams sends JSON text frames only"))

    def receive_text(self, text: str) -> None:
        if not self._check_frame(len(text)):
            return
        try:
            event = _parse(text)
        except StreamingError as exc:
            self._fail(exc)
            return
        kind = event["event"]
        if kind == "connected":
            return
        if kind == "start":
            self._start(event)
        elif not self._started:
            self._fail(InvalidMessage(f"a {kind} event before the start event"))
        elif kind == "media":
            self._media(event)
        elif kind == "stop":
            self._take_interleaved(flush=True)
            super().receive_text('{"type":"end"}')
        # "mark" and "dtmf" carry no audio.

    def _start(self, event: dict[str, Any]) -> None:
        start = event.get("start")
        if not isinstance(start, dict):
            self._fail(InvalidMessage("a start event needs its 'start' object"))
            return
        parameters = start.get("customParameters") or {}
        if self._key_check is not None and not self._key_check(str(parameters.get("token", ""))):
            self._fail(
                Unauthorized(
                    'this server needs an API key: add <Parameter name="token" value="KEY"/> to the <Stream>'
                )
            )
            return
        self.stream_sid = str(event.get("streamSid") or start.get("streamSid") or "") or None
        self.call_sid = str(start.get("callSid") or "") or None
        media = start.get("mediaFormat") or {}
        if (media.get("encoding"), int(media.get("sampleRate", RATE)), int(media.get("channels", 1))) != (
            "audio/x-mulaw",
            RATE,
            1,
        ):
            self._fail(
                InvalidMessage(
                    f"mediaFormat {media!r} is not audio/x-mulaw at 8000 Hz, one channel per track"
                )
            )
            return
        self._started = True
        logger.info("session %s: Twilio stream %s of call %s", self.id, self.stream_sid, self.call_sid)

    def _media(self, event: dict[str, Any]) -> None:
        media = event.get("media")
        if not isinstance(media, dict) or media.get("track", "inbound") not in TRACKS:
            self._fail(InvalidMessage("a media event needs 'media' with a track of inbound or outbound"))
            return
        try:
            payload = base64.b64decode(str(media.get("payload", "")), validate=True)
            timestamp = int(media.get("timestamp", 0))
        except (binascii.Error, ValueError):
            self._fail(InvalidMessage("a media event needs a base64 'payload' and a numeric 'timestamp'"))
            return
        self._interleaver.add(TRACKS.index(media.get("track", "inbound")), timestamp, payload)
        self._take_interleaved(flush=False)

    def _take_interleaved(self, *, flush: bool) -> None:
        data = self._interleaver.take(flush=flush)
        if data:
            super().receive_bytes(data)


def _parse(text: str) -> dict[str, Any]:
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidMessage(f"Twilio events are JSON objects: {exc.msg}") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise InvalidMessage("Twilio events are JSON objects with an 'event'")
    return event
