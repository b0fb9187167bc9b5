"""The websocket endpoints: our protocol on ``/v1/stream``, and the protocols other clients
speak (Twilio Media Streams, Deepgram live), each an adapter over the same session, scheduler,
limits and keys. :func:`serve` admits a stream and runs it to its close."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from streaming import deepgram, logs, realtime
from streaming.auth import deny
from streaming.config import StreamConfig, parse_stream_config
from streaming.errors import InvalidParameter, NotReady, ResumeFailed, StreamingError
from streaming.resume import UNKNOWN, ResumableProtocol, ResumeRequest
from streaming.services import MODEL_LOADING, Refusal, Services, services
from streaming.transport import StreamConnection, refuse, refuse_accepted, replay_ended
from streaming.twilio import TwilioAdapter, twilio_stream_config
from streaming.wire import OwnProtocol, Wire

logger = logging.getLogger(__name__)


async def stream_endpoint(websocket: WebSocket) -> None:
    found = services(websocket)
    query = dict(websocket.query_params)
    if "resume" in query:
        await resume_stream(websocket, found, query)
        return
    if not found.ready:
        await found.refuse(websocket, NotReady(MODEL_LOADING))
        return
    assert found.engine is not None
    try:
        stream = parse_stream_config(
            query,
            multilingual=found.engine.multilingual,
            languages=found.engine.languages,
            max_speakers=found.config.max_speakers,
            diarization=found.diarization,
        )
    except InvalidParameter as exc:
        await found.refuse(websocket, exc)
        return

    def new_wire() -> Wire:
        session = found.new_session(stream)
        if stream.resumable:
            return ResumableProtocol(session, journal_limit=found.config.max_unsent_messages)
        return OwnProtocol(session)

    await serve(websocket, found, new_wire)


async def resume_stream(websocket: WebSocket, found: Services, query: dict[str, str]) -> None:
    """A client reconnects to its dropped stream: the stream goes on on this socket. It is
    already counted against ``max_sessions``, so it is taken whether or not the server is full
    or draining."""
    try:
        request = ResumeRequest.parse(query)
        connection = found.lifecycle.resumable.get(request.session_id)
        ended = found.ended.find(request.session_id) if connection is None else None
        if ended is not None:
            ended.journal.check(request.token)
        elif connection is not None and isinstance(connection.wire, ResumableProtocol):
            connection.wire.check(request.token)
        else:
            raise ResumeFailed(UNKNOWN)
    except (InvalidParameter, ResumeFailed) as exc:
        await found.refuse(websocket, exc)
        return
    logs.session_id.set(request.session_id)
    await websocket.accept()
    found.metrics.resumes.labels("resumed").inc()
    if ended is not None:  # its final was written as the connection dropped: send it again
        logger.info("session %s: resumed after its final; sending it again", request.session_id)
        await replay_ended(websocket, ended, request.segments)
        return
    assert connection is not None
    try:
        await connection.resume(websocket, request.segments)
    except ResumeFailed as exc:  # it ended while this client reconnected
        await refuse_accepted(websocket, exc)


async def twilio_endpoint(websocket: WebSocket) -> None:
    """Twilio Media Streams: the call's inbound and outbound tracks as two speakers."""
    found = services(websocket)
    if not found.ready:
        await found.refuse(websocket, NotReady(MODEL_LOADING))
        return
    assert found.engine is not None
    engine = found.engine
    try:
        # The tracks' names are checked as a two-channel stream's speakers are.
        named = websocket.query_params.get("speakers")
        speakers = (
            parse_stream_config(
                {"channels": "2", "multichannel": "true", "speakers": named},
                multilingual=engine.multilingual,
            ).speakers
            if named
            else ()
        )
    except InvalidParameter as exc:
        await found.refuse(websocket, exc)
        return
    # Twilio's <Stream> URL carries no query string: a key may come as a custom parameter of
    # the start event instead of at the handshake.
    key_check = None if found.gate.check(websocket) is None else found.gate.allows_key

    await serve(
        websocket,
        found,
        lambda: TwilioAdapter(found.new_session(twilio_stream_config(speakers)), key_check),
    )


def deepgram_error(error: StreamingError, status: int | None = None) -> Response:
    """Deepgram's answer to a refused handshake. Its status follows the error (401, 400, 429,
    503), whatever ``status`` the key check proposes: Deepgram's clients read that one."""
    dg_status, body = deepgram.http_error(error, request_id := str(uuid.uuid4()))
    headers = {"dg-request-id": request_id, "dg-error": error.message[:200]}
    return JSONResponse(body, dg_status, headers=headers)


async def _deepgram_refuse(websocket: WebSocket, error: StreamingError) -> None:
    """Deepgram refuses a stream at the handshake, with its HTTP status and error body."""
    logger.info("refused Deepgram stream: %s: %s", error.code, error.message)
    await deny(websocket, deepgram_error(error), error)


async def listen_endpoint(websocket: WebSocket) -> None:
    """Deepgram's live transcription (``/v1/listen``), for clients written against it."""
    found = services(websocket)
    if not found.ready:
        await found.refuse(websocket, NotReady(MODEL_LOADING), _deepgram_refuse)
        return
    engine = found.engine
    assert engine is not None
    try:
        options = deepgram.parse_listen_query(
            websocket.query_params.multi_items(),
            multilingual=engine.multilingual,
            languages=engine.languages,
            max_speakers=found.config.max_speakers,
            diarization=found.diarization,
        )
    except InvalidParameter as exc:
        await found.refuse(websocket, exc, _deepgram_refuse)
        return
    # A browser sends its key as the subprotocols ["token", KEY]: the answer must name one.
    subprotocol = _offered(websocket, "token")
    await serve(
        websocket,
        found,
        lambda: deepgram.DeepgramAdapter(found.new_session(options.stream), options),
        refuse_with=_deepgram_refuse,
        subprotocol=subprotocol,
    )


async def _realtime_refuse(websocket: WebSocket, error: StreamingError) -> None:
    """OpenAI's Realtime refuses in the stream: an ``error`` event, then a close code its SDK
    reads (1013 and 1001: reconnect later; 1008: do not)."""
    logger.info("refused Realtime stream: %s: %s", error.code, error.message)
    text, code = realtime.refusal(error)
    await websocket.accept(_offered(websocket, "realtime"))
    await websocket.send_text(text)
    await websocket.close(code=code, reason=error.code)


def _offered(websocket: WebSocket, subprotocol: str) -> str | None:
    return subprotocol if subprotocol in websocket.scope.get("subprotocols", []) else None


async def realtime_endpoint(websocket: WebSocket) -> None:
    """OpenAI's Realtime transcription (``/v1/realtime?intent=transcription``)."""
    found = services(websocket)
    refusal = found.gate.check(websocket)
    if refusal is None and not found.ready:
        refusal = NotReady(MODEL_LOADING)
    if refusal is None and websocket.query_params.get("intent") != "transcription":
        refusal = InvalidParameter(
            "only transcription sessions are served here: connect to /v1/realtime?intent=transcription"
        )
    if refusal is not None:
        await found.refuse(websocket, refusal, _realtime_refuse)
        return
    engine = found.engine
    assert engine is not None

    def parse(query: dict[str, str]) -> StreamConfig:
        return parse_stream_config(query, multilingual=engine.multilingual, languages=engine.languages)

    await serve(
        websocket,
        found,
        lambda: realtime.RealtimeAdapter(found.new_session(realtime.realtime_stream_config()), parse),
        refuse_with=_realtime_refuse,
        subprotocol=_offered(websocket, "realtime"),
    )


SESSION_HEADER = b"x-session-id"


async def serve(
    websocket: WebSocket,
    found: Services,
    new_wire: Callable[[], Wire],
    *,
    refuse_with: Refusal = refuse,
    subprotocol: str | None = None,
) -> None:
    """Admit a stream (or refuse it: draining, full) and run it to its close."""
    assert found.scheduler is not None
    lifecycle = found.lifecycle
    refusal = found.refusal()
    if refusal is not None:
        await found.refuse(websocket, refusal, refuse_with)
        return
    wire = new_wire()
    session = wire.session
    logs.session_id.set(session.id)  # on every line this stream's work logs from here on
    connection = StreamConnection(
        session, found.scheduler, found.clock, stop=lifecycle.stop, wire=wire, grace=found.config.resume_grace
    )
    lifecycle.opened(session.id, connection if isinstance(wire, ResumableProtocol) else None)
    try:
        # Which protocol it speaks, for whoever reads the logs of a failing session.
        logger.info("session %s opened on %s: %s", session.id, websocket.url.path, session.stream)
        # A resumable stream names itself in the handshake's answer too, where a load balancer
        # can read it (no JSON parsing) and send the stream's resume to this replica.
        headers = [(SESSION_HEADER, session.id.encode())] if isinstance(wire, ResumableProtocol) else None
        await websocket.accept(subprotocol, headers)
        await connection.run(websocket)
    finally:
        lifecycle.closed(session.id)
        error = session.error.code if session.error else ""
        found.metrics.closed.labels(str(session.close_code or 1006), error).inc()
        if connection.expired:
            found.metrics.resumes.labels("expired").inc()
        kept = connection.ended()
        if kept is not None:
            found.ended.add(session.id, kept)
        stats = session.track_stats
        found.metrics.stream_closed(
            sum(t.eager_used for t in stats),
            sum(t.eager_discarded for t in stats),
            sum(t.lean for t in stats),
        )
