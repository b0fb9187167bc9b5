"""Whole recordings over HTTP: the hosted endpoint's ``POST /predict``, and OpenAI's
``/v1/audio/transcriptions`` and ``/v1/audio/translations``, on the same pipeline: the file is
decoded, cut at its pauses into pieces, and run through a session to its final."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from streaming import subtitles
from streaming.audio import decode_file
from streaming.config import parse_stream_config
from streaming.driver import run_to_final
from streaming.errors import BodyTooLarge, InvalidParameter, NotReady, Overloaded, StreamingError
from streaming.services import MODEL_LOADING, services
from streaming.session import Session


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
        options = {k: str(payload[k]) for k in ("language", "task") if payload.get(k) is not None}
        stream = parse_stream_config(
            {**options, "encoding": "pcm_f32le", "interim_results": "false"},
            multilingual=found.engine.multilingual,
            languages=found.engine.languages,
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
    session = found.new_session(stream, whole_file=True)
    # Segmenting a whole file is CPU work: keep it off the event loop.
    await asyncio.to_thread(_feed, session, audio.tobytes())
    sent = await run_to_final(session, found.scheduler.submit)
    final = sent[-1]
    assert final["type"] == "final"  # the session always ends with it here: no client can leave
    if session.error is not None and session.error.close_code == 1011:
        return http_error(session.error, 500)
    if isinstance(session.error, Overloaded):  # part of the file was not transcribed
        return http_error(session.error, 503)
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
