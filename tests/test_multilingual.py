"""The multilingual base model (joined from two packages, verified), with language detection."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.stream import read_audio, stream_file
from tests.conftest import RunningServer, running_server
from tests.schema import validate_message
from tests.wer import wer

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def base_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(model="base", cache_dir=str(tmp_path_factory.mktemp("cache"))) as running:
        yield running


def test_language_auto_on_the_base_model(
    base_server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    entry = manifest[
        "read/" + next(p.name for p in sorted((data_dir / "read").iterdir()) if p.suffix == ".flac")
    ]
    result = asyncio.run(
        stream_file(base_server.ws_url, read_audio(data_dir / entry["audio"]), params={"language": "auto"})
    )
    for message in result.messages:
        validate_message(message)
    ready = result.messages[0]
    assert ready["config"]["model"] == "base"
    assert ready["config"]["language"] == "auto"
    assert result.close_code == 1000
    assert wer(entry["text"], result.final["transcription"]) <= 0.3


def test_openai_translations_on_the_base_model(
    base_server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    """The real openai client's translations call: English speech comes back as English text."""
    import warnings

    import openai

    entry = manifest["read/jfk.flac"]
    with (
        openai.OpenAI(api_key="none", base_url=f"{base_server.http_url}/v1", max_retries=0) as client,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", DeprecationWarning)  # this client deprecates translations
        translated = client.audio.translations.create(
            model="whisper-1",
            file=("jfk.flac", (data_dir / entry["audio"]).read_bytes()),
            response_format="verbose_json",
        )
    assert translated.task == "translate"
    assert wer(entry["text"], translated.text) <= 0.3
