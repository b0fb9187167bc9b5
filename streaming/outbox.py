"""The frames waiting for one socket: bounded, in order, and a stale partial replaced by the
newer one. The transport's writer takes from it; it never waits on the session."""

from __future__ import annotations

import asyncio
from collections import deque

from streaming.wire import Outgoing


class Outbox:
    """Frames waiting for the socket, in order; a waiting partial is replaced by a newer one
    of the same channel (it would be stale by the time the client read it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[Outgoing] = deque()
        self._changed = asyncio.Event()
        self._abandoned = False  # its socket is gone: nothing more will be sent

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: Outgoing) -> bool:
        """Queue a frame; False once more than ``limit`` wait."""
        if frame.replaces is not None and self._items and self._items[-1].replaces == frame.replaces:
            self._items[-1] = frame
        else:
            self._items.append(frame)
        self._changed.set()
        return len(self._items) <= self.limit

    async def get(self) -> Outgoing:
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        return self._items[0]

    def sent(self) -> None:
        self._items.popleft()
        self._changed.set()

    def abandon(self) -> None:
        self._abandoned = True
        self._changed.set()

    async def drained(self) -> None:
        """Returns once every frame is sent, or the socket is gone."""
        while self._items and not self._abandoned:
            self._changed.clear()
            await self._changed.wait()
