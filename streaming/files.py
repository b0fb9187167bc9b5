"""Whole recordings over HTTP: the hosted endpoint's ``POST /predict``, and OpenAI's
``/v1/audio/transcriptions`` and ``/v1/audio/translations``, on the same pipeline: the file is
decoded, cut at its pauses into pieces, and run through a session to its final."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncGenerator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streaming import openai_audio, subtitles
from streaming.audio import Samples, decode_file
from streaming.config import MODEL_SAMPLE_RATE, StreamConfig, parse_stream_config
from streaming.driver import run_to_final
from streaming.errors import BodyTooLarge, InvalidParameter, NotReady, Overloaded, StreamingError
from streaming.messages import FinalMessage
from streaming.services import MODEL_LOADING, Services, services
from streaming.session import Session

# The hosted request's options, and ours beside them (speaker labels on one channel).
PREDICT_OPTIONS = ("language", "task", "diarize", "max_speakers")


def http_error(exc: StreamingError, status: int) -> JSONResponse:
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
        return http_error(NotReady(MODEL_LOADING), 503)
    assert found.engine is not None
    assert found.scheduler is not None
    try:
        body = await _read_body(request, found.config.max_body_bytes)
    except BodyTooLarge as exc:
        return http_error(exc, 413)
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict) or not isinstance(payload.get("audio"), str):
            raise ValueError
    except ValueError:
        return http_error(
            InvalidParameter(
                'the body must be a JSON object {"audio": "<base64 of a wav, mp3, flac or ogg file>", '
                '"language": "en", "task": "transcribe"}'
            ),
            400,
        )
    response_format = payload.get("response_format", "json")
    if response_format not in ("json", *subtitles.FORMATS):
        return http_error(
            InvalidParameter(f"response_format must be json, srt or vtt, got {str(response_format)[:40]!r}"),
            400,
        )
    try:
        options = {k: str(payload[k]) for k in PREDICT_OPTIONS if payload.get(k) is not None}
        stream = parse_stream_config(
            {**options, "encoding": "pcm_f32le", "interim_results": "false"},
            multilingual=found.engine.multilingual,
            languages=found.engine.languages,
            diarization=found.diarization,
        )
        data = base64.b64decode(payload["audio"], validate=True)
    except InvalidParameter as exc:
        return http_error(exc, 400)
    except (binascii.Error, ValueError):
        return http_error(InvalidParameter("'audio' is not valid base64"), 400)
    try:
        audio = await asyncio.to_thread(decode_file, data)
    except StreamingError as exc:
        return http_error(exc, 422)
    final, error = await _transcribe(found, audio, stream)
    if error is not None:
        return http_error(error, _status(error))
    if response_format != "json":
        fmt: subtitles.SubtitleFormat = response_format
        return Response(
            subtitles.render(final["response"]["segments"], fmt), media_type=subtitles.MEDIA_TYPES[fmt]
        )
    body_out: dict[str, Any] = {k: v for k, v in final.items() if k != "type"}
    return JSONResponse(body_out)


async def _transcribe(
    found: Services, audio: Samples, stream: StreamConfig
) -> tuple[FinalMessage, StreamingError | None]:
    """A whole recording's final, and the error that kept part of it from being transcribed
    (the model failed, or could not keep up), if any."""
    assert found.scheduler is not None
    session = found.new_session(stream, whole_file=True)
    # Segmenting a whole file is CPU work: keep it off the event loop.
    await asyncio.to_thread(_feed, session, audio.tobytes())
    sent = await run_to_final(session, found.scheduler.submit)
    final = sent[-1]
    assert final["type"] == "final"  # the session always ends with it here: no client can leave
    error = session.error
    incomplete = error is not None and (error.close_code == 1011 or isinstance(error, Overloaded))
    return final, error if incomplete else None


def _status(error: StreamingError) -> int:
    return 503 if isinstance(error, Overloaded) else 500


def _feed(session: Session, data: bytes, chunk: int = 1 << 16) -> None:
    for offset in range(0, len(data), chunk):
        session.receive_audio(data[offset : offset + chunk])


# ---------------------------------------------------------------------------- OpenAI


def openai_error(error: StreamingError, status: int) -> JSONResponse:
    return JSONResponse(openai_audio.error_body(error), status_code=status)


async def transcriptions_endpoint(request: Request) -> Response:
    """OpenAI's ``POST /v1/audio/transcriptions``."""
    return await _openai_audio(request, translate=False)


async def translations_endpoint(request: Request) -> Response:
    """OpenAI's ``POST /v1/audio/translations`` (into English; a multilingual model only)."""
    return await _openai_audio(request, translate=True)


async def _openai_audio(request: Request, *, translate: bool) -> Response:
    found = services(request)
    if not found.ready:
        return openai_error(NotReady(MODEL_LOADING), 503)
    assert found.engine is not None
    try:
        fields, upload = await _read_form(request, found.config.max_body_bytes)
    except BodyTooLarge as exc:
        return openai_error(exc, 413)
    except StreamingError as exc:
        return openai_error(exc, 400)
    task = "translate" if translate else "transcribe"
    try:
        asked = openai_audio.parse_form(fields, upload, models=[found.engine.name], translate=translate)
        options = {"language": asked.language} if asked.language else {}
        stream = parse_stream_config(
            {
                **options,
                "prompt": asked.prompt,
                "task": task,
                "encoding": "pcm_f32le",
                "interim_results": "false",
            },
            multilingual=found.engine.multilingual,
            languages=found.engine.languages,
        )
    except InvalidParameter as exc:
        return openai_error(exc, 400)
    try:
        audio = await asyncio.to_thread(decode_file, asked.file)
    except StreamingError as exc:
        return openai_error(exc, 400)
    final, error = await _transcribe(found, audio, stream)
    if error is not None:
        return openai_error(error, _status(error))
    body, media_type = openai_audio.render(
        asked,
        final,
        duration=len(audio) / MODEL_SAMPLE_RATE,
        language=stream.language or "auto",
        task=task,
    )
    if isinstance(body, str):
        return Response(body, media_type=media_type)
    return JSONResponse(body)


async def _read_form(request: Request, limit: int) -> tuple[dict[str, list[str]], bytes | None]:
    """The multipart form's fields (every value of each) and its ``file``, the body bounded by
    ``limit`` bytes (the file included)."""
    body = await _read_body(request, limit)

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=1, max_fields=32, max_part_size=limit)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidParameter(f"the body must be a multipart/form-data upload: {exc.message}") from None
    fields: dict[str, list[str]] = {}
    upload: bytes | None = None
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                upload = await value.read() if name == "file" else upload
            else:
                fields.setdefault(name, []).append(value)
    finally:
        await form.close()  # the parts spooled to temporary files
    return fields, upload
