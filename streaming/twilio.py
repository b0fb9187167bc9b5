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
:class:`TwilioAdapter` owns a :class:`~streaming.session.Session` of that stream (multichannel,
one speaker per track) and reads Twilio's events in place of our client messages: it parses
them itself, turns every malformed one into a typed error, and drives the session through its
public core (``accept_frame``, ``receive_audio``, ``end``, ``fail``), never our wire format. Our own
messages go back on the same socket: Twilio ignores them, a bot or a recorder beside it reads
them.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from typing import Any

from streaming.config import StreamConfig
from streaming.errors import InvalidMessage, StreamingError, Unauthorized
from streaming.messages import tagged_object
from streaming.session import Session
from streaming.wire import OwnProtocol

logger = logging.getLogger(__name__)

TRACKS = ("inbound", "outbound")
DEFAULT_SPEAKERS = ("caller", "callee")
RATE = 8000
BYTES_PER_MS = RATE // 1000  # mu-law: one byte per sample
MAX_SKEW_MS = 200
# The longest gap in a track's timestamps filled with silence; a longer jump is a discontinuity.
MAX_GAP_MS = 2000
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
    """Per-track mu-law bytes in, placed by timestamp; interleaved stereo bytes out.

    Memory stays bounded whatever the timestamps say: a gap is filled with at most
    ``MAX_GAP_MS`` of silence (a longer jump is taken as a discontinuity: the track goes on from
    its new timestamp after that much silence), and a track never runs more than
    ``MAX_SKEW_MS`` ahead of the other before it is sent on."""

    def __init__(self) -> None:
        self._queues = [bytearray(), bytearray()]
        self._next_ms = [0, 0]  # each track's timestamp at the end of what it has placed

    def add(self, track: int, timestamp_ms: int, payload: bytes) -> None:
        queue = self._queues[track]
        gap = timestamp_ms - self._next_ms[track]
        if gap > 0:  # lost or withheld chunks: keep the timeline, up to the cap
            queue.extend(SILENCE * (min(gap, MAX_GAP_MS) * BYTES_PER_MS))
        elif gap < 0:  # overlaps what is already placed (a resent chunk): drop the overlap
            payload = payload[-gap * BYTES_PER_MS :]
        queue.extend(payload)
        self._next_ms[track] = max(self._next_ms[track], timestamp_ms) + len(payload) // BYTES_PER_MS

    def take(self, *, flush: bool = False) -> bytes:
        """Interleaved bytes for the stretch both tracks cover; a track more than
        ``MAX_SKEW_MS`` behind (or every track, at ``flush``) is padded with silence first, and
        its timeline moves on with the padding (a chunk that comes later for that stretch is
        dropped as an overlap, not placed twice)."""
        longest = max(len(q) for q in self._queues)
        for track, queue in enumerate(self._queues):
            behind = longest - len(queue)
            if flush or behind > MAX_SKEW_MS * BYTES_PER_MS:
                queue.extend(SILENCE * behind)
                self._next_ms[track] += behind // BYTES_PER_MS
        ready = min(len(q) for q in self._queues)
        if ready == 0:
            return b""
        out = bytearray(2 * ready)
        out[0::2] = self._queues[0][:ready]
        out[1::2] = self._queues[1][:ready]
        for queue in self._queues:
            del queue[:ready]
        return bytes(out)


class TwilioAdapter(OwnProtocol):
    """Twilio's events (text frames; binary frames are not part of them) in, driving a
    two-speaker :class:`Session` through its public core; our messages out."""

    def __init__(self, session: Session, key_check: Callable[[str], bool] | None = None) -> None:
        super().__init__(session)
        self._interleaver = TrackInterleaver()
        # Set when the handshake carried no valid key: the start event's token must be one.
        self._key_check = key_check
        self._started = False
        self.stream_sid: str | None = None
        self.call_sid: str | None = None

    def receive_bytes(self, data: bytes) -> None:
        self.session.fail(InvalidMessage("Twilio Media Streams sends JSON text frames only"))

    def receive_text(self, text: str) -> None:
        if not self.session.accept_frame(len(text)):
            return
        try:
            self._event(tagged_object(text, "event", "Twilio events"))
        except StreamingError as exc:
            self.session.fail(exc)

    def _event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "connected":
            return
        if kind == "start":
            if self._started:
                raise InvalidMessage("a second start event on one stream")
            self._start(event)
        elif not self._started:
            raise InvalidMessage(f"a {kind} event before the start event")
        elif kind == "media":
            self._media(event)
        elif kind == "stop":
            self._take_interleaved(flush=True)
            self.session.end()
        # "mark", "dtmf" and events Twilio may add carry no audio.

    def _start(self, event: dict[str, Any]) -> None:
        start = _object(event, "start")
        parameters = _object(start, "customParameters", required=False)
        if self._key_check is not None and not self._key_check(str(parameters.get("token", ""))):
            raise Unauthorized(
                'this server needs an API key: add <Parameter name="token" value="KEY"/> to the <Stream>'
            )
        self.stream_sid = _text(event.get("streamSid") or start.get("streamSid"))
        self.call_sid = _text(start.get("callSid"))
        media = _object(start, "mediaFormat", required=False)
        found = (
            media.get("encoding", "audio/x-mulaw"),
            _number(media, "sampleRate", RATE),
            _number(media, "channels", 1),
        )
        if found != ("audio/x-mulaw", RATE, 1):
            raise InvalidMessage(
                f"mediaFormat {str(media)[:200]} is not audio/x-mulaw at 8000 Hz, one channel per track"
            )
        self._started = True
        logger.info(
            "session %s: Twilio stream %s of call %s", self.session.id, self.stream_sid, self.call_sid
        )

    def _media(self, event: dict[str, Any]) -> None:
        media = _object(event, "media")
        track = media.get("track", "inbound")
        if not isinstance(track, str) or track not in TRACKS:
            raise InvalidMessage(f"a media event's track is inbound or outbound, not {str(track)[:40]!r}")
        payload = media.get("payload")
        try:
            if not isinstance(payload, str):
                raise ValueError
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidMessage("a media event needs its 'payload' in base64") from None
        self._interleaver.add(TRACKS.index(track), _number(media, "timestamp", 0), audio)
        self._take_interleaved(flush=False)

    def _take_interleaved(self, *, flush: bool) -> None:
        data = self._interleaver.take(flush=flush)
        if data:
            self.session.receive_audio(data)


def _object(parent: dict[str, Any], name: str, *, required: bool = True) -> dict[str, Any]:
    value = parent.get(name)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidMessage(f"'{name}' must be a JSON object")
    return value


def _number(parent: dict[str, Any], name: str, default: int) -> int:
    """A non-negative integer field; Twilio sends some as strings ("timestamp": "20")."""
    value = parent.get(name, default)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 12:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
        return value
    raise InvalidMessage(f"'{name}' must be a non-negative integer, not {str(value)[:40]!r}")


def _text(value: object) -> str | None:
    return str(value)[:64] if isinstance(value, str | int) and value != "" else None
