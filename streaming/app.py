"""The ASGI application: routes, and a lifespan that owns the model and the scheduler.

``create_app(config)`` builds everything explicitly; nothing is global. The lifespan starts
loading the model in the background (``/healthcheck`` answers 503 until it is loaded), starts
the scheduler's worker, and stops both in reverse order. The endpoints live by what they serve:
:mod:`streaming.streams` (websockets), :mod:`streaming.files` (whole recordings over HTTP), and
here the small ones (health, readiness, metrics, info, the page).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from streaming import files, streams
from streaming.auth import ErrorShape, Gate, GateMiddleware, read_key_file
from streaming.clock import Clock, MonotonicClock
from streaming.config import Config
from streaming.errors import NotReady
from streaming.metrics import CONTENT_TYPE
from streaming.scheduler import Scheduler
from streaming.services import (
    MODEL_LOADING,
    EngineFactory,
    Lifecycle,
    ScorerFactory,
    Services,
    load_voices,
    services,
    whisper_factory,
)
from streaming.settings import SessionSettings
from streaming.vad import SileroVad
from streaming.whisper import resolve_device

logger = logging.getLogger(__name__)

# The browser page (plain JavaScript modules, no build step), shipped with the clients.
WEB_DIR = Path(__file__).resolve().parents[1] / "clients" / "web"

# The error shape each vendor's clients read, by path prefix (ours elsewhere).
ERROR_SHAPES: dict[str, ErrorShape] = {"/v1/listen": streams.deepgram_error, "/v1/audio/": files.openai_error}

__all__ = ["Lifecycle", "create_app", "whisper_factory"]


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
                voices = await asyncio.to_thread(load_voices) if config.diarization else None
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
                first_patience=config.first_partial_patience,
                clock=found.clock,
                voices=voices,
            )
            scheduler.start()
            found.engine, found.scheduler, found.diarization = engine, scheduler, voices is not None
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
        middleware=[Middleware(GateMiddleware, gate=gate, shapes=ERROR_SHAPES)],
        routes=[
            WebSocketRoute("/v1/stream", streams.stream_endpoint),
            WebSocketRoute("/v1/listen", streams.listen_endpoint),
            WebSocketRoute("/v1/twilio", streams.twilio_endpoint),
            WebSocketRoute("/v1/realtime", streams.realtime_endpoint),
            Route("/predict", files.predict_endpoint, methods=["POST"]),
            Route("/v1/audio/transcriptions", files.transcriptions_endpoint, methods=["POST"]),
            Route("/v1/audio/translations", files.translations_endpoint, methods=["POST"]),
            Route("/healthcheck", healthcheck_endpoint, methods=["GET"]),
            Route("/ready", ready_endpoint, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/v1/info", info_endpoint, methods=["GET"]),
            Route("/", page_endpoint, methods=["GET"]),
            Mount("/static", StaticFiles(directory=WEB_DIR), name="static"),
        ],
        lifespan=lifespan,
    )


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
        return files.http_error(NotReady(MODEL_LOADING), 503)
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
