"""Several real streams at once on one model: each gets its own transcript, batched or not."""

from __future__ import annotations

import asyncio
import itertools
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from clients.stream import read_audio, stream_file
from tests.conftest import RunningServer
from tests.schema import validate_message
from tests.wer import wer

pytestmark = pytest.mark.model

# Four different speakers and texts of about 11 s each.
CLIPS = [
    "read/jfk.flac",
    "read/2412-153948-0000.flac",
    "read/2412-153948-0001.flac",
    "read/1089-134686-0000.flac",
]
OWN_WER_BOUND = 0.2
# Another clip's reference shares only function words with a transcript: far from it.
OTHER_WER_FLOOR = 0.7


def batched_items(server: RunningServer) -> tuple[float, float]:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and line[0] != "#")
    return float(values["streaming_batches_total"]), float(values["streaming_batched_items_total"])


def test_concurrent_streams_each_get_their_own_transcript(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    recordings = [read_audio(data_dir / clip) for clip in CLIPS]
    batches_before, items_before = batched_items(server)

    async def all_at_once() -> list[Any]:
        # Unpaced: the streams' utterances close together, so the worker batches them.
        return await asyncio.gather(*(stream_file(server.ws_url, r) for r in recordings))

    results = asyncio.run(all_at_once())
    batches_after, items_after = batched_items(server)

    references = [manifest[clip]["text"] for clip in CLIPS]
    session_ids = {r.messages[0]["session_id"] for r in results}
    assert len(session_ids) == len(CLIPS)
    for result, reference in zip(results, references, strict=True):
        assert result.close_code == 1000
        assert not result.errors
        for message in result.messages:
            validate_message(message)
        assert wer(reference, result.final["transcription"]) <= OWN_WER_BOUND
    for (i, result), (j, reference) in itertools.product(enumerate(results), enumerate(references)):
        if i != j:
            assert wer(reference, result.final["transcription"]) >= OTHER_WER_FLOOR, (i, j)
    # The streams shared model calls: some call decoded more than one utterance.
    assert items_after - items_before > batches_after - batches_before
