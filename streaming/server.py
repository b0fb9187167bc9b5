"""uvicorn's server, with a drain on the first signal.

SIGTERM: stop admitting streams, let open ones go on for up to ``drain_timeout`` seconds, then end
each with its final (audio received is still transcribed, close 1001), and exit 0. SIGINT does the
same at once (no grace for open streams). A second signal of either kind stops immediately, as
plain uvicorn does.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn

from streaming.app import Lifecycle

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle, drain_timeout: float) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._drain_timeout = drain_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._drain is not None:
            super().handle_exit(sig, frame)  # not serving yet, or a second signal: stop now
            return
        deadline = 0.0 if sig == signal.SIGINT else self._drain_timeout
        logger.info("%s: draining (deadline %g s)", signal.Signals(sig).name, deadline)
        self._loop.call_soon_threadsafe(self._start_drain, deadline)

    def _start_drain(self, deadline: float) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._run_drain(deadline))

    async def _run_drain(self, deadline: float) -> None:
        await self._lifecycle.drain(deadline)
        logger.info("drained: every stream got its final")
        self.should_exit = True
