"""Who may connect: API keys and allowed web origins, checked before a request does anything.

A key comes as ``Authorization: Bearer <key>`` (or ``Token <key>``, Deepgram's form) or, for
browsers (which cannot set headers on a websocket), as a ``token`` query parameter or in the
websocket's subprotocols, in the forms Deepgram's (``token``, then the key) and OpenAI's
(``openai-insecure-api-key.<key>``) browser clients send. Keys are compared in constant time
(:func:`hmac.compare_digest`, against every configured key, so the time taken says nothing about
which key came close) and never logged. ``/healthcheck`` and ``/ready`` are open, for liveness
and readiness probes and load balancers' health checks (a key in a probe's spec would be one
more place to leak it; they say only whether the model is loaded and a stream would be admitted),
and so are the page's static files (code the browser needs before it can send a key; they hold no
data and use no model).

An ``Origin`` header is sent by browsers only; with ``allowed_origins`` set, a request from a
page of another origin is refused (a program that sends no ``Origin`` is judged by its key).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from streaming.errors import OriginNotAllowed, StreamingError, Unauthorized

logger = logging.getLogger(__name__)


def read_key_file(path: str) -> list[str]:
    """One key per line; blank lines and ``#`` comments are skipped."""
    lines = Path(path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class Gate:
    def __init__(self, keys: Iterable[str], allowed_origins: Iterable[str]) -> None:
        self._keys = [key.encode() for key in keys if key]
        self._origins = {origin.rstrip("/").lower() for origin in allowed_origins if origin}

    @property
    def requires_key(self) -> bool:
        return bool(self._keys)

    def allows_key(self, offered: str) -> bool:
        """Is ``offered`` one of the keys (constant time)? True when no key is required."""
        if not self._keys:
            return True
        candidate = offered.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched

    def check(self, conn: HTTPConnection) -> StreamingError | None:
        """Why ``conn`` may not go on, or None if it may."""
        origin = conn.headers.get("origin")
        if self._origins and origin is not None and origin.rstrip("/").lower() not in self._origins:
            return OriginNotAllowed(f"pages from {origin[:100]} may not use this server")
        if not self._keys:
            return None
        offered = _credential(conn)
        if offered is None:
            return Unauthorized(
                "this server needs an API key: send 'Authorization: Bearer <key>', or a 'token' "
                "query parameter from a browser"
            )
        if not self.allows_key(offered):
            return Unauthorized("the API key is not valid")
        return None


OPENAI_KEY_PROTOCOL = "openai-insecure-api-key."


def _credential(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return value.strip()
    offered = [p.strip() for p in conn.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    if len(offered) >= 2 and offered[0].lower() == "token":
        return offered[1]
    for protocol in offered:
        if protocol.startswith(OPENAI_KEY_PROTOCOL) and len(protocol) > len(OPENAI_KEY_PROTOCOL):
            return protocol[len(OPENAI_KEY_PROTOCOL) :]
    token = conn.query_params.get("token")
    return token or None


# How a refusal reads on a path whose clients expect another vendor's error shape.
ErrorShape = Callable[[StreamingError, int], Response]


def own_error_shape(error: StreamingError, status: int) -> Response:
    return JSONResponse(
        {"error": {"code": error.code, "message": error.message}},
        status_code=status,
        headers={"WWW-Authenticate": "Bearer"} if status == 401 else None,
    )


async def deny(websocket: WebSocket, response: Response, error: StreamingError) -> None:
    """Answer a websocket handshake with an HTTP error, never accepting it (without the
    server's denial-response extension: accept nothing and close with the error's code)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=error.close_code, reason=error.code)


PUBLIC_PATHS = ("/healthcheck", "/ready")
# Keys checked by the endpoint, not here. Twilio's <Stream> URL carries no query string and
# Twilio sends no Authorization header: its key comes as a custom parameter of the start event
# (streaming/twilio.py). OpenAI's Realtime clients read a refusal as an ``error`` event and a
# close code (1008: do not reconnect), not as an HTTP status (streaming/streams.py).
KEY_IN_STREAM = ("/v1/twilio", "/v1/realtime")
PUBLIC_PREFIXES = ("/static/",)


class GateMiddleware:
    """ASGI middleware: every HTTP request and websocket handshake passes :class:`Gate` first.

    A refused request gets a JSON ``{"error": {"code", "message"}}`` with 401 (key) or 403
    (origin); a refused websocket gets the same as the HTTP answer to its handshake, so it is
    never accepted (with a server lacking the denial-response extension: a close with 1008).
    """

    def __init__(self, app: ASGIApp, gate: Gate, shapes: Mapping[str, ErrorShape] | None = None) -> None:
        self.app = app
        self.gate = gate
        self.shapes = dict(shapes or {})  # path prefix: the error shape its clients read

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or _is_public(scope["path"]):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        refusal = self.gate.check(conn)
        if isinstance(refusal, Unauthorized) and scope["path"] in KEY_IN_STREAM:
            refusal = None
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status = 401 if isinstance(refusal, Unauthorized) else 403
        logger.info("refused %s %s: %s", scope["type"], scope["path"], refusal.code)
        shape = next(
            (shape for prefix, shape in self.shapes.items() if scope["path"].startswith(prefix)),
            own_error_shape,
        )
        response = shape(refusal, status)
        if scope["type"] == "http":
            await response(scope, receive, send)
            return
        await deny(WebSocket(scope, receive, send), response, refusal)


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


_TOKEN = re.compile(r"([?&](?:resume_)?token=)[^&\s\"]*")


class RedactTokens(logging.Filter):
    """Blanks ``token=`` and ``resume_token=`` query values in log lines (uvicorn's access log
    prints whole paths)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "token=" in message:
            record.msg, record.args = _TOKEN.sub(r"\1[redacted]", message), None
        return True
