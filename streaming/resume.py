"""Resumable streams: our protocol with acknowledgements, and a journal to replay on resume.

A client that asks for it (``/v1/stream?resumable=true``) gets a ``resume_token`` in ``ready``
and an ``ack`` with the audio taken in so far every :data:`ACK_SECONDS` of audio and after
each control message (``finalize``, ``keepalive``). It keeps the audio not yet acknowledged.
When its connection drops, the transport keeps the session transcribing for a grace period;
the client reconnects with ``?resume=<session_id>&resume_token=<token>`` and is told, in a new
``ready``, how many bytes the server holds: it resends from there, and the stream goes on as
one. Acks count bytes as sent, in the stream's own encoding, so the resent audio joins the
received audio sample for sample, whatever the encoding or the framing.

What the client may have missed is replayed from a journal of the frames that matter (every
``segment``, ``error`` and ``final``); partials and acks are not kept: newer ones follow. The
client says how many ``segment``s it holds (``segments=N``); without it, the server assumes
the client read every one it wrote before the drop.

A stream that closed after writing its ``final`` is kept a while too (:class:`EndedStreams`):
the final may have been lost in flight with the connection, and its client resumes to get it.

This module is sans-I/O: :class:`ResumableProtocol` is a :class:`~streaming.wire.Wire`; the
transport owns the socket, the grace period and the hand-over to a new socket.
"""

from __future__ import annotations

import hmac
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streaming import events, messages
from streaming.clock import Clock
from streaming.errors import InvalidParameter, ResumeFailed
from streaming.session import Phase, Session
from streaming.wire import Outgoing, OwnProtocol

ACK_SECONDS = 0.5  # audio between two acks: what a client holds unacknowledged, at most
RESUME_PARAMETERS = ("resume", "resume_token", "segments", "token")
UNKNOWN = "no stream to resume by that id and token here: it ended, expired or never existed; start a new one"


@dataclass(frozen=True, slots=True)
class ResumeRequest:
    """What a client reconnecting to a dropped stream says (the query of ``/v1/stream``)."""

    session_id: str
    token: str
    segments: int | None  # the segments it holds; None: every one written before the drop

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> ResumeRequest:
        """Raises :class:`InvalidParameter` for a malformed request: the stream's settings
        are the session's, so a resume takes no other parameter."""
        unknown = sorted(set(query) - set(RESUME_PARAMETERS))
        if unknown:
            raise InvalidParameter(
                f"a resume takes only {', '.join(RESUME_PARAMETERS)} (the stream keeps its "
                f"settings), got {unknown[0]!r}"
            )
        if not query.get("resume_token"):
            raise InvalidParameter("resume needs the resume_token that came in the stream's ready")
        segments = None
        if "segments" in query:
            try:
                segments = int(query["segments"])
            except ValueError:
                segments = -1
            if segments < 0:
                raise InvalidParameter(f"segments must be a count >= 0, got {query['segments'][:20]!r}")
        return cls(query["resume"], query["resume_token"], segments)


@dataclass(frozen=True, slots=True)
class _Entry:
    frame: Outgoing
    after: int  # segments sent before it


class Journal:
    """The frames a resumed connection may need again (``segment``, ``error``, ``final``), the
    newest ``limit`` of them, and the token that unlocks them."""

    def __init__(self, token: str, limit: int) -> None:
        self.token = token
        self.segments = 0  # segments recorded so far
        self._entries: deque[_Entry] = deque(maxlen=limit)

    def record(self, text: str, *, segment: bool) -> Outgoing:
        """Keep a frame; a segment's frame is numbered (the transport counts those it wrote)."""
        if segment:
            self.segments += 1
        frame = Outgoing(text, segment=self.segments if segment else None)
        self._entries.append(_Entry(frame, self.segments - segment))
        return frame

    def check(self, token: str) -> None:
        """Raises :class:`ResumeFailed` unless ``token`` is this stream's (in constant time)."""
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            raise ResumeFailed(UNKNOWN)

    def after(self, segments: int) -> list[Outgoing]:
        """The frames after the client's first ``segments`` segments."""
        return [entry.frame for entry in self._entries if entry.after >= segments]


@dataclass(frozen=True, slots=True)
class EndedStream:
    """A resumable stream that ended with its ``final`` written: what a client that lost it in
    flight, with its connection, is sent on resuming (:class:`EndedStreams`)."""

    journal: Journal
    ready: str  # ``ready`` with ``resumed``
    close: tuple[int, str]

    def replay(self, segments: int) -> list[Outgoing]:
        return [Outgoing(self.ready), *self.journal.after(segments)]


class EndedStreams:
    """Resumable streams that ended with their ``final`` written, kept ``grace`` seconds (at most
    ``limit`` of them, the oldest dropped first): a ``final`` written to a connection that
    dropped at that moment is lost in flight, and its client resumes to get it."""

    def __init__(self, grace: float, limit: int, clock: Clock) -> None:
        self._grace = grace
        self._limit = limit
        self._clock = clock
        self._streams: OrderedDict[str, tuple[float, EndedStream]] = OrderedDict()

    def __len__(self) -> int:
        self._prune()
        return len(self._streams)

    def add(self, session_id: str, stream: EndedStream) -> None:
        if self._grace <= 0 or self._limit <= 0:
            return
        self._streams[session_id] = (self._clock.now() + self._grace, stream)
        self._prune()

    def find(self, session_id: str) -> EndedStream | None:
        self._prune()
        kept = self._streams.get(session_id)
        return kept[1] if kept is not None else None

    def _prune(self) -> None:
        now = self._clock.now()
        while self._streams:
            until, _ = next(iter(self._streams.values()))
            if until > now and len(self._streams) <= self._limit:
                return
            self._streams.popitem(last=False)


class ResumableProtocol(OwnProtocol):
    """Our protocol, plus acks, a resume token and a bounded journal to replay on resume.

    ``journal_limit`` bounds the frames kept for replay (the newest are kept): a client that
    lost more than that many misses the oldest of them, though the ``final`` still holds them.
    """

    def __init__(self, session: Session, *, journal_limit: int, token: str | None = None) -> None:
        super().__init__(session)
        self.journal = Journal(token or secrets.token_urlsafe(24), journal_limit)
        stream = session.stream
        self._ack_bytes = max(round(ACK_SECONDS * stream.sample_rate), 1) * stream.frame_bytes
        self._acked = 0
        self._ack_due = False
        self._ready: dict[str, Any] | None = None
        self._final = False  # the final is rendered

    # ------------------------------------------------------------------ frames in

    def receive_bytes(self, data: bytes) -> None:
        super().receive_bytes(data)
        self._ack_due |= self.session.received_bytes - self._acked >= self._ack_bytes

    def receive_text(self, text: str) -> None:
        before = self.session.received_bytes
        super().receive_text(text)
        taken = self.session.received_bytes
        # A control message (finalize, keepalive, end) is acknowledged at once: a client that
        # stops sending audio learns that everything it sent is in.
        self._ack_due |= taken == before or taken - self._acked >= self._ack_bytes

    # ------------------------------------------------------------------ frames out

    def messages_to_send(self) -> list[Outgoing]:
        # The ack first: it answers the frame just taken, before what that frame brought about
        # (the final, after an end).
        ack = [self._ack()] if self._ack_due else []
        return ack + super().messages_to_send()

    def frame(self, event: events.Event, message: messages.ServerMessage) -> Outgoing:
        if isinstance(event, events.Ready):
            self._ready = {**message, "resume_token": self.journal.token}
            return Outgoing(json.dumps(self._ready, ensure_ascii=False))
        if isinstance(event, events.Partial):
            return super().frame(event, message)
        # Segments, errors and the final: kept for a resume to replay.
        self._final |= isinstance(event, events.Final)
        text = json.dumps(message, ensure_ascii=False)
        return self.journal.record(text, segment=isinstance(event, events.Segment))

    def _ack(self) -> Outgoing:
        self._ack_due = False
        self._acked = self.session.received_bytes
        message = {"type": "ack", **self._received()}
        return Outgoing(json.dumps(message), "ack")

    def _received(self) -> dict[str, Any]:
        return {"audio_bytes": self.session.received_bytes, "time": round(self.session.received_seconds, 3)}

    # ------------------------------------------------------------------ resume

    @property
    def token(self) -> str:
        return self.journal.token

    def check(self, token: str) -> None:
        """Raises :class:`ResumeFailed` unless ``token`` is this stream's (in constant time)."""
        self.journal.check(token)

    def replay(self, segments: int) -> list[Outgoing]:
        """What a resumed connection is sent first: ``ready`` again, with the audio received so
        far, then the journal's frames after the client's first ``segments`` segments."""
        self._ack_due = False
        self._acked = self.session.received_bytes
        return [Outgoing(self._resumed_ready()), *self.journal.after(segments)]

    def ended(self, close: tuple[int, str]) -> EndedStream | None:
        """What to keep of the stream once it closed with ``close`` (None: it had no final)."""
        return EndedStream(self.journal, self._resumed_ready(), close) if self._final else None

    def _resumed_ready(self) -> str:
        assert self._ready is not None, "a stream is resumed only after its ready"
        # ``ended``: the stream takes no more audio (the client's end came, or a limit): a
        # client must not send it again.
        resumed = {
            **self._received(),
            "segments": self.journal.segments,
            "ended": self.session.phase is not Phase.OPEN,
        }
        return json.dumps({**self._ready, "resumed": resumed}, ensure_ascii=False)
