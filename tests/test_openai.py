"""OpenAI's audio transcription API on /v1/audio/*, driven by the real openai Python client
against the real service (real model, real speech) on loopback."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from streaming.errors import InvalidParameter
from streaming.openai_audio import BadField, error_body, parse_form
from tests.conftest import API_KEY, RunningServer
from tests.wer import wer

JFK = "read/jfk.flac"


@pytest.fixture
def client() -> Iterator[Callable[..., openai.OpenAI]]:
    """OpenAI clients of the test, closed after it: one left to the garbage collector leaks its
    connection pool's sockets into a later test's ResourceWarning."""
    made: list[openai.OpenAI] = []

    def make(server: RunningServer, key: str = API_KEY) -> openai.OpenAI:
        made.append(openai.OpenAI(api_key=key, base_url=f"{server.http_url}/v1", max_retries=0))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.mark.model
def test_every_response_format_through_the_openai_client(
    keyed_server: RunningServer,
    data_dir: Path,
    manifest: dict[str, dict[str, Any]],
    client: Callable[..., openai.OpenAI],
) -> None:
    reference = manifest[JFK]["text"]
    audio = (data_dir / JFK).read_bytes()
    transcriptions = client(keyed_server).audio.transcriptions

    plain = transcriptions.create(model="whisper-1", file=("jfk.flac", audio))
    assert wer(reference, plain.text) < 0.15, plain.text
    text = transcriptions.create(model="whisper-1", file=("jfk.flac", audio), response_format="text")
    assert text.strip() == plain.text
    srt = transcriptions.create(model="whisper-1", file=("jfk.flac", audio), response_format="srt")
    assert srt.startswith("1\n00:00:")
    assert " --> " in srt
    vtt = transcriptions.create(model="whisper-1", file=("jfk.flac", audio), response_format="vtt")
    assert vtt.startswith("WEBVTT")

    verbose = transcriptions.create(
        model="tiny.en",
        file=("jfk.flac", audio),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
        prompt="President Kennedy's inaugural address.",
        temperature=0.0,
    )
    assert wer(reference, verbose.text) < 0.15, verbose.text
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(manifest[JFK]["duration"], abs=0.05)
    assert verbose.segments
    assert " ".join(s.text.strip() for s in verbose.segments) == verbose.text
    assert all(s.start < s.end and s.avg_logprob <= 0 for s in verbose.segments)
    assert verbose.words is not None
    words = [w.word for w in verbose.words]
    assert wer(reference, " ".join(words)) < 0.15
    assert all(w.word.strip(",.!?") == w.word for w in verbose.words)  # OpenAI's words carry no marks
    starts = [w.start for w in verbose.words]
    assert starts == sorted(starts)
    assert verbose.usage is not None
    assert verbose.usage.seconds == 11

    words_only = transcriptions.create(
        model="whisper-1",
        file=("jfk.flac", audio),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert words_only.words
    assert not words_only.segments


@pytest.mark.model
def test_a_bad_file_a_wrong_key_and_a_bad_field_get_openai_errors(
    keyed_server: RunningServer, data_dir: Path, client: Callable[..., openai.OpenAI]
) -> None:
    audio = (data_dir / JFK).read_bytes()
    with pytest.raises(openai.BadRequestError) as bad_file:
        client(keyed_server).audio.transcriptions.create(
            model="whisper-1", file=("notes.txt", b"not audio at all")
        )
    assert bad_file.value.code == "invalid_file_format"
    with pytest.raises(openai.AuthenticationError) as wrong_key:
        client(keyed_server, key="wrong").audio.transcriptions.create(
            model="whisper-1", file=("jfk.flac", audio)
        )
    assert wrong_key.value.code == "invalid_api_key"
    with pytest.raises(openai.BadRequestError) as bad_field:
        client(keyed_server).audio.transcriptions.create(
            model="whisper-1",
            file=("jfk.flac", audio),
            response_format="srt",
            timestamp_granularities=["word"],
        )
    assert bad_field.value.param == "timestamp_granularities"
    translations = client(keyed_server).audio.translations
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # this client deprecates translations
        with pytest.raises(openai.BadRequestError) as english_only:
            translations.create(model="whisper-1", file=("jfk.flac", audio))
    assert "multilingual" in english_only.value.message  # tiny.en cannot translate


def test_the_form_is_checked_as_openai_checks_it() -> None:
    def parse(**fields: str | list[str]) -> Any:
        values = {k: v if isinstance(v, list) else [v] for k, v in fields.items()}
        return parse_form(values, b"audio", models=["tiny.en"], translate=False)

    assert parse(model="whisper-1").segments
    assert parse(
        model="tiny.en", response_format="verbose_json", **{"timestamp_granularities[]": ["word"]}
    ).words
    for bad, param in (
        ({"model": "gpt-9"}, "model"),
        ({"model": "whisper-1", "response_format": "xml"}, "response_format"),
        ({"model": "whisper-1", "temperature": "2"}, "temperature"),
        ({"model": "whisper-1", "stream": "true"}, "stream"),
    ):
        with pytest.raises(BadField) as raised:
            parse(**bad)
        assert raised.value.param == param
        assert error_body(raised.value)["error"]["param"] == param
    with pytest.raises(BadField):
        parse_form({"model": ["whisper-1"]}, None, models=["tiny.en"], translate=False)
    assert error_body(InvalidParameter("x"))["error"]["type"] == "invalid_request_error"
