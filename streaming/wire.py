"""A stream's protocol on the socket, between the transport and the session.

The transport moves frames; a :class:`Wire` knows what they mean. It parses the client's
frames and drives the :class:`~streaming.session.Session` through its public core, and it
renders the session's events as the protocol's own messages. :class:`OwnProtocol` is ours
(``/v1/stream``); Twilio, Deepgram and OpenAI each have their adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from streaming import events, messages
from streaming.errors import StreamingError
from streaming.session import Session


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One text frame for the client."""

    text: str
    # While it waits to be sent, a newer frame with the same key replaces it: a stale partial
    # is worth nothing once a fresher one exists.
    replaces: str | None = None
    # The number of a ``segment`` frame in its stream (1, 2, ...): the transport counts those it
    # wrote, so that a resumed stream replays only what the client may have missed.
    segment: int | None = None


class Wire(Protocol):
    session: Session

    def receive_bytes(self, data: bytes) -> None: ...

    def receive_text(self, text: str) -> None: ...

    def messages_to_send(self) -> list[Outgoing]:
        """The frames for what the session did since the last call."""
        ...

    def close_frame(self) -> tuple[int, str]:
        """The close code and reason once the session is closed."""
        ...

    def failure_frame(self, error: StreamingError) -> Outgoing:
        """What tells the client that the server failed (then the close with 1011)."""
        ...


class OwnProtocol:
    """Our protocol: the session parses the frames itself; events go out as our messages."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def receive_bytes(self, data: bytes) -> None:
        self.session.receive_bytes(data)

    def receive_text(self, text: str) -> None:
        self.session.receive_text(text)

    def messages_to_send(self) -> list[Outgoing]:
        rendered = ((event, events.to_message(event)) for event in self.session.events_to_send())
        return [self.frame(event, message) for event, message in rendered if message is not None]

    def frame(self, event: events.Event, message: messages.ServerMessage) -> Outgoing:
        """The frame that carries ``event`` as ``message``."""
        key = f"partial:{event.channel}" if isinstance(event, events.Partial) else None
        return Outgoing(json.dumps(message, ensure_ascii=False), key)

    def close_frame(self) -> tuple[int, str]:
        error = self.session.error
        return self.session.close_code or 1000, error.code if error else ""

    def failure_frame(self, error: StreamingError) -> Outgoing:
        return Outgoing(json.dumps(messages.error(error)))
