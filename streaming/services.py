"""What the lifespan creates once and every request uses: the model, the scheduler, the open
streams and their drain, the keys and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket

from streaming.auth import Gate
from streaming.clock import Clock
from streaming.config import Config, StreamConfig
from streaming.engine import Engine, Thresholds
from streaming.errors import ServerFull, ShuttingDown, SpeakerModelMissing, StreamingError
from streaming.metrics import Metrics
from streaming.models import resolve_model
from streaming.resume import EndedStreams
from streaming.scheduler import Scheduler
from streaming.session import Session
from streaming.settings import SessionSettings
from streaming.transport import StreamConnection, refuse
from streaming.vad import Scorer, Segmenter, VadParams
from streaming.voices import VoiceEncoder
from streaming.whisper import WhisperEngine

logger = logging.getLogger(__name__)
MODEL_LOADING = "the model is still loading; retry in a few seconds"

EngineFactory = Callable[[], Engine]
ScorerFactory = Callable[[], Scorer]
Refusal = Callable[[WebSocket, StreamingError], Awaitable[None]]


class Lifecycle:
    """Open streams and the drain: shared by the app and whoever stops the server.

    ``drain(timeout)`` stops admitting streams, lets open ones go on for up to ``deadline``
    seconds, then tells each to end (its received audio is still transcribed into a final) and
    returns once every stream is closed.
    """

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        # Resumable streams by session id, while they run (with or without a socket).
        self.resumable: dict[str, StreamConnection] = {}
        self.draining = False
        self.stop = asyncio.Event()  # set: open streams end now
        self._idle = asyncio.Event()
        self._idle.set()

    def opened(self, session_id: str, resumable: StreamConnection | None = None) -> None:
        self.sessions.add(session_id)
        if resumable is not None:
            self.resumable[session_id] = resumable
        self._idle.clear()

    def closed(self, session_id: str) -> None:
        self.sessions.discard(session_id)
        self.resumable.pop(session_id, None)
        if not self.sessions:
            self._idle.set()

    @property
    def kept(self) -> int:
        """Resumable streams without a connection now, waiting for their client."""
        return sum(not connection.connected for connection in self.resumable.values())

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
    diarization: bool = False  # the speaker model is loaded: streams may ask for diarize=true
    load_error: str | None = None
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    metrics: Metrics = field(init=False)
    ended: EndedStreams = field(init=False)  # resumable streams whose final may be lost in flight

    def __post_init__(self) -> None:
        self.ended = EndedStreams(self.config.resume_grace, self.config.max_sessions, self.clock)
        self.metrics = Metrics(
            sessions=lambda: (len(self.lifecycle.sessions), self.config.max_sessions, self.lifecycle.kept),
            stats=lambda: self.scheduler.stats if self.scheduler is not None else None,
            workers=lambda: self.scheduler.workers if self.scheduler is not None else 1,
            clock=self.clock.now,
        )

    def new_session(self, stream: StreamConfig, *, whole_file: bool = False) -> Session:
        """A session for one stream (``whole_file``: a recording posted whole)."""
        assert self.engine is not None
        config, name = self.config, self.engine.name
        settings = (
            SessionSettings.for_file(config, name)
            if whole_file
            else SessionSettings.from_config(config, name)
        )
        vad = VadParams.from_config(config, whole_file=whole_file)
        return Session(
            session_id=uuid.uuid4().hex[:12],
            stream=stream,
            settings=settings,
            new_segmenter=lambda: Segmenter(self.make_scorer(), vad),
            clock=self.clock,
            # A whole file's latencies are not a stream's: they stay out of the histograms.
            observer=None if whole_file else self.metrics,
            behind=self.scheduler.behind if self.scheduler is not None else None,
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


def load_voices() -> VoiceEncoder | None:
    """The speaker model for ``diarize=true``, or None (said in the log) when its package is
    not installed; a file that fails its checksum stops the server like the Whisper model."""
    try:
        return VoiceEncoder.load()
    except SpeakerModelMissing as exc:
        logger.warning("%s", exc)
        return None


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
