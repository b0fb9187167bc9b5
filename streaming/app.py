"""The ASGI application: routes, and a lifespan that owns the model and the scheduler.

``create_app(config)`` builds everything explicitly; nothing is global. The lifespan starts
loading the model in the background (``/healthcheck`` answers 503 until it is loaded), starts
the scheduler's worker, and stops both in reverse order.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from streaming import deepgram, subtitles
from streaming.audio import decode_file
from streaming.auth import Gate, GateMiddleware, deny, read_key_file
from streaming.clock import Clock, MonotonicClock
from streaming.config import Config, StreamConfig, parse_stream_config
from streaming.driver import run_to_final
from streaming.engine import Engine, Thresholds, WhisperEngine, resolve_device
from streaming.errors import (
    BodyTooLarge,
    InvalidParameter,
    NotReady,
    Overloaded,
    ServerFull,
    ShuttingDown,
    StreamingError,
)
from streaming.metrics import CONTENT_TYPE, Metrics
from streaming.models import resolve_model
from streaming.scheduler import Scheduler
from streaming.session import Session
from streaming.settings import SessionSettings
from streaming.transport import StreamConnection, refuse
from streaming.twilio import TwilioAdapter, twilio_stream_config
from streaming.vad import Scorer, Segmenter, SileroVad, VadParams
from streaming.wire import OwnProtocol, Wire

logger = logging.getLogger(__name__)
MODEL_LOADING = "the model is still loading; retry in a few seconds"

# The browser page (plain JavaScript modules, no build step), shipped with the clients.
WEB_DIR = Path(__file__).resolve().parents[1] / "clients" / "web"

EngineFactory = Callable[[], Engine]
Refusal = Callable[[WebSocket, StreamingError], Awaitable[None]]
ScorerFactory = Callable[[], Scorer]


class Lifecycle:
    """Open streams and the drain: shared by the app and whoever stops the server.

    ``drain(timeout)`` stops admitting streams, lets open ones go on for up to ``deadline``
    seconds, then tells each to end (its received audio is still transcribed into a final) and
    returns once every stream is closed.
    """

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.draining = False
        self.stop = asyncio.Event()  # set: open streams end now
        self._idle = asyncio.Event()
        self._idle.set()

    def opened(self, session_id: str) -> None:
        self.sessions.add(session_id)
        self._idle.clear()

    def closed(self, session_id: str) -> None:
        self.sessions.discard(session_id)
        if not self.sessions:
            self._idle.set()

    async def drain(self, deadline: float) -> None:
        self.draining = True
        logger.info("draining: %d open streams, up to %g s", len(self.sessions), deadline)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), deadline)
        if self.sessions:
            logger.info("drain deadline: ending %d streams with their finals", len(self.sessions))
        self.stop.set()
        await self._idle.wait()


@dataclass
class Services:
    """What the lifespan creates once and every request uses."""

    config: Config
    clock: Clock
    make_scorer: ScorerFactory
    gate: Gate = field(default_factory=lambda: Gate((), ()))
    engine: Engine | None = None
    scheduler: Scheduler | None = None
    load_error: str | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    metrics: Metrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = Metrics(
            sessions=lambda: (len(self.lifecycle.sessions), self.config.max_sessions),
            stats=lambda: self.scheduler.stats if self.scheduler is not None else None,
        )

    async def refuse(self, websocket: WebSocket, exc: StreamingError, how: Refusal = refuse) -> None:
        """Refuse a stream before it starts, counted, in its protocol's way (``how``)."""
        self.metrics.refused.labels(exc.code).inc()
        await how(websocket, exc)

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.scheduler is not None

    def refusal(self) -> StreamingError | None:
        """Why a new stream would be refused now (draining, full), or None: the one test that
        both admission and ``/ready`` use."""
        if self.lifecycle.draining:
            return ShuttingDown("the server is shutting down; connect to another")
        if len(self.lifecycle.sessions) >= self.config.max_sessions:
            return ServerFull(
                f"the server is serving its limit of {self.config.max_sessions} streams; retry later"
            )
        return None


def services(conn: HTTPConnection) -> Services:
    """The typed services of the running app (Starlette's lifespan state is untyped)."""
    found = conn.state.services
    assert isinstance(found, Services)
    return found


def whisper_factory(config: Config) -> EngineFactory:
    def load() -> Engine:
        path, name = resolve_model(config.model, Path(config.cache_dir) if config.cache_dir else None)
        return WhisperEngine(
            path,
            name=name,
            device=config.device,
            compute_type=config.compute_type,
            cpu_threads=config.cpu_threads,
            workers=config.workers,
            thresholds=Thresholds(
                no_speech=config.no_speech_threshold,
                log_prob=config.log_prob_threshold,
                compression_ratio=config.compression_ratio_threshold,
            ),
        )

    return load


def create_app(
    config: Config,
    *,
    engine_factory: EngineFactory | None = None,
    scorer_factory: ScorerFactory | None = None,
    clock: Clock | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    lifecycle: Lifecycle | None = None,
) -> Starlette:
    """The service. Factories are injectable so tests can run it with scripted parts."""
    config = config.sized_for(resolve_device(config.device), os.cpu_count() or 1)
    make_engine = engine_factory or whisper_factory(config)
    keys = [*config.api_key, *(read_key_file(config.api_key_file) if config.api_key_file else [])]
    gate = Gate(keys, config.allowed_origins)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        found = Services(
            config=config,
            clock=clock or MonotonicClock(),
            make_scorer=scorer_factory or SileroVad().scorer,
            lifecycle=lifecycle or Lifecycle(),
            gate=gate,
        )

        async def load() -> None:
            try:
                engine = await asyncio.to_thread(make_engine)
            except Exception as exc:
                logger.exception("the model could not be loaded")
                found.load_error = f"{type(exc).__name__}: {exc}"
                if on_fatal is not None:
                    on_fatal(exc)
                return
            scheduler = Scheduler(
                engine,
                batch_size=config.batch_size,
                partial_batch_size=config.partial_batch_size,
                workers=config.workers,
                # A partial older than its cadence is stale: a fresher one is due.
                partial_max_age=config.partial_interval,
                clock=found.clock,
            )
            scheduler.start()
            found.engine, found.scheduler = engine, scheduler
            logger.info("ready: model %s", engine.name)

        loading = asyncio.create_task(load(), name="load-model")
        try:
            yield {"services": found}
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            if found.scheduler is not None:
                await found.scheduler.stop()

    return Starlette(
        middleware=[Middleware(GateMiddleware, gate=gate, shapes={"/v1/listen": _deepgram_error})],
        routes=[
            WebSocketRoute("/v1/stream", stream_endpoint),
            WebSocketRoute("/v1/listen", listen_endpoint),
            WebSocketRoute("/v1/twilio", twilio_endpoint),
            Route("/predict", predict_endpoint, methods=["POST"]),
            Route("/healthcheck", healthcheck_endpoint, methods=["GET"]),
            Route("/ready", ready_endpoint, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/v1/info", info_endpoint, methods=["GET"]),
            Route("/", page_endpoint, methods=["GET"]),
            Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
        ],
        lifespan=lifespan,
    )


def _new_session(found: Services, stream: StreamConfig, *, whole_file: bool = False) -> Session:
    assert found.engine is not None
    config, name = found.config, found.engine.name
    settings = (
        SessionSettings.for_file(config, name) if whole_file else SessionSettings.from_config(config, name)
    )
    vad = VadParams.from_config(config, whole_file=whole_file)
    return Session(
        session_id=uuid.uuid4().hex[:12],
        stream=stream,
        settings=settings,
        new_segmenter=lambda: Segmenter(found.make_scorer(), vad),
        clock=found.clock,
    )


async def stream_endpoint(websocket: WebSocket) -> None:
    found = services(websocket)
    if not found.ready:
        await found.refuse(websocket, NotReady(MODEL_LOADING))
        return
    assert found.engine is not None
    try:
        stream = parse_stream_config(
            dict(websocket.query_params),
            multilingual=found.engine.multilingual,
            languages=found.engine.languages,
            max_speakers=found.config.max_speakers,
        )
    except InvalidParameter as exc:
        await found.refuse(websocket, exc)
        return

    await _serve(websocket, found, lambda: OwnProtocol(_new_session(found, stream)))


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

    await _serve(
        websocket,
        found,
        lambda: TwilioAdapter(_new_session(found, twilio_stream_config(speakers)), key_check),
    )


def _deepgram_error(error: StreamingError, status: int = 0) -> Response:
    status, body = deepgram.http_error(error, request_id := str(uuid.uuid4()))
    return JSONResponse(body, status, headers={"dg-request-id": request_id, "dg-error": error.message[:200]})


async def _deepgram_refuse(websocket: WebSocket, error: StreamingError) -> None:
    """Deepgram refuses a stream at the handshake, with its HTTP status and error body."""
    logger.info("refused Deepgram stream: %s: %s", error.code, error.message)
    await deny(websocket, _deepgram_error(error), error)


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
        )
    except InvalidParameter as exc:
        await found.refuse(websocket, exc, _deepgram_refuse)
        return
    # A browser sends its key as the subprotocols ["token", KEY]: the answer must name one.
    subprotocol = "token" if "token" in websocket.scope.get("subprotocols", []) else None
    await _serve(
        websocket,
        found,
        lambda: deepgram.DeepgramAdapter(_new_session(found, options.stream), options),
        refuse_with=_deepgram_refuse,
        subprotocol=subprotocol,
    )


async def _serve(
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
    lifecycle.opened(session.id)
    try:
        logger.info("session %s opened: %s", session.id, session.stream)
        await websocket.accept(subprotocol)
        await StreamConnection(
            websocket, session, found.scheduler, found.clock, stop=lifecycle.stop, wire=wire
        ).run()
    finally:
        lifecycle.closed(session.id)
        error = session.error.code if session.error else ""
        found.metrics.closed.labels(str(session.close_code or 1006), error).inc()
        stats = session.track_stats
        found.metrics.stream_closed(sum(t.eager_used for t in stats), sum(t.eager_discarded for t in stats))


def _http_error(exc: StreamingError, status: int) -> JSONResponse:
    return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body exceeds the limit of {limit} bytes")
    return bytes(body)


async def predict_endpoint(request: Request) -> Response:
    """The hosted endpoint's request and response shapes, for a whole recording; with
    ``"response_format": "srt"`` or ``"vtt"``, captions instead of the JSON."""
    found = services(request)
    if not found.ready:
        return _http_error(NotReady(MODEL_LOADING), 503)
    assert found.engine is not None
    assert found.scheduler is not None
    try:
        body = await _read_body(request, found.config.max_body_bytes)
    except BodyTooLarge as exc:
        return _http_error(exc, 413)
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("audio"), str):
            raise ValueError
    except ValueError:
        return _http_error(
            InvalidParameter(
                'the body must be a JSON object {"audio": "<base64 of a wav, mp3, flac or ogg file>", '
                '"language": "en", "task": "transcribe"}'
            ),
            400,
        )
    response_format = payload.get("response_format", "json")
    if response_format not in ("json", *subtitles.FORMATS):
        return _http_error(
            InvalidParameter(f"response_format must be json, srt or vtt, got {str(response_format)[:40]!r}"),
            400,
        )
    try:
        options = {k: str(payload[k]) for k in ("language", "task") if payload.get(k) is not None}
        stream = parse_stream_config(
            {**options, "encoding": "pcm_f32le", "interim_results": "false"},
            multilingual=found.engine.multilingual,
            languages=found.engine.languages,
        )
        data = base64.b64decode(payload["audio"], validate=True)
    except InvalidParameter as exc:
        return _http_error(exc, 400)
    except (binascii.Error, ValueError):
        return _http_error(InvalidParameter("'audio' is not valid base64"), 400)
    try:
        audio = await asyncio.to_thread(decode_file, data)
    except StreamingError as exc:
        return _http_error(exc, 422)
    session = _new_session(found, stream, whole_file=True)
    # Segmenting a whole file is CPU work: keep it off the event loop.
    await asyncio.to_thread(_feed, session, audio.tobytes())
    sent = await run_to_final(session, found.scheduler.submit)
    final = sent[-1]
    assert final["type"] == "final"  # the session always ends with it here: no client can leave
    if session.error is not None and session.error.close_code == 1011:
        return _http_error(session.error, 500)
    if isinstance(session.error, Overloaded):  # part of the file was not transcribed
        return _http_error(session.error, 503)
    if response_format != "json":
        fmt: subtitles.SubtitleFormat = response_format
        return Response(
            subtitles.render(final["response"]["segments"], fmt), media_type=subtitles.MEDIA_TYPES[fmt]
        )
    body_out: dict[str, Any] = {k: v for k, v in final.items() if k != "type"}
    return JSONResponse(body_out)


def _feed(session: Session, data: bytes, chunk: int = 1 << 16) -> None:
    for offset in range(0, len(data), chunk):
        session.receive_audio(data[offset : offset + chunk])


async def healthcheck_endpoint(request: Request) -> JSONResponse:
    found = services(request)
    if found.ready:
        assert found.engine is not None
        return JSONResponse({"status": "ok", "model": found.engine.name})
    if found.load_error is not None:
        return JSONResponse({"status": "error", "error": found.load_error}, status_code=503)
    return JSONResponse({"status": "loading"}, status_code=503)


async def page_endpoint(request: Request) -> Response:
    """The live-captions page: the microphone streamed over ``/v1/stream``."""
    return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def info_endpoint(request: Request) -> JSONResponse:
    """What a client may choose: the model, its languages, and the limits a stream runs under."""
    found = services(request)
    if not found.ready:
        return _http_error(NotReady(MODEL_LOADING), 503)
    assert found.engine is not None
    config = found.config
    return JSONResponse(
        {
            "model": found.engine.name,
            "multilingual": found.engine.multilingual,
            "languages": sorted(found.engine.languages) if found.engine.multilingual else ["en"],
            "tasks": ["transcribe", "translate"] if found.engine.multilingual else ["transcribe"],
            "limits": SessionSettings.from_config(config, found.engine.name).limits(),
        }
    )


async def metrics_endpoint(request: Request) -> Response:
    return Response(services(request).metrics.render(), media_type=CONTENT_TYPE)


async def ready_endpoint(request: Request) -> JSONResponse:
    """Would a new stream be admitted now? 200 if so, 503 if not (loading, full or draining)."""
    found = services(request)
    lifecycle = found.lifecycle
    body = {
        "ready": found.ready and found.refusal() is None,
        "sessions": len(lifecycle.sessions),
        "max_sessions": found.config.max_sessions,
        "model_loaded": found.ready,
        "draining": lifecycle.draining,
    }
    return JSONResponse(body, status_code=200 if body["ready"] else 503)
