"""The Python client's buffer of unacknowledged audio (pure logic)."""

from __future__ import annotations

import asyncio

from clients.stream import Unacked


def test_unacked_audio_is_sent_again_from_the_byte_the_server_holds() -> None:
    unacked = Unacked(limit=100)
    for chunk in (b"abcd", b"efgh", b"ijkl"):
        unacked.add(chunk)
    unacked.acked(4)  # the first chunk is the server's: dropped
    assert unacked.since(6) == [b"gh", b"ijkl"]  # mid-chunk, as acks count bytes
    assert unacked.since(12) == []


async def test_a_full_buffer_waits_for_an_ack_and_a_stream_that_is_not_resumable_keeps_nothing() -> None:
    unacked = Unacked(limit=8)
    unacked.add(b"12345678")
    waiting = asyncio.create_task(unacked.room())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    unacked.acked(8)
    await asyncio.wait_for(waiting, 1)
    plain = Unacked(limit=None)
    for _ in range(1000):
        plain.add(b"x" * 1000)
        await plain.room()
    assert plain.since(0) == []
    assert plain.sent == 1_000_000
