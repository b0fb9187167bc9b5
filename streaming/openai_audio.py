"""OpenAI's audio transcription API (``POST /v1/audio/transcriptions`` and ``/translations``):
its request fields and its response shapes, over our whole-file transcript.

A tool written for OpenAI (its Python client, Open WebUI, AnythingLLM) points its base URL
here. The request is OpenAI's multipart form (:func:`parse_form`); the answer is the response
format it asked for (:func:`render`); errors come in OpenAI's error shape (:func:`error_body`).
docs/compatibility.md lists every field. Nothing here does I/O.

Reference: https://platform.openai.com/docs/api-reference/audio/createTranscription
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streaming import subtitles
from streaming.errors import InvalidParameter, StreamingError
from streaming.messages import FinalMessage, SegmentDict

# Model names a client may send besides ours: they are answered by the loaded model.
MODEL_ALIASES = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[ResponseFormat, ...] = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
MAX_PROMPT = 1000
_EDGE_PUNCTUATION = re.compile(r"^[^\w']+|[^\w']+$")


class BadField(InvalidParameter):
    """A form field OpenAI's API would refuse, named as its error's ``param``."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class AudioRequest:
    file: bytes
    model: str
    language: str | None
    prompt: str
    response_format: ResponseFormat
    words: bool
    segments: bool


def parse_form(
    fields: Mapping[str, Sequence[str]], file: bytes | None, *, models: Sequence[str], translate: bool
) -> AudioRequest:
    """The form's fields (each with every value it was sent with) and its file. Raises
    :class:`BadField`."""

    def one(name: str, default: str = "") -> str:
        values = fields.get(name) or [default]
        return values[-1]

    if file is None:
        raise BadField("'file' is required: the audio file to transcribe, as a multipart upload", "file")
    model = one("model")
    if model not in (*models, *MODEL_ALIASES):
        raise BadField(
            f"model {model[:60]!r} is not served here; use one of {', '.join((*models, *MODEL_ALIASES))}",
            "model",
        )
    response_format = one("response_format", "json")
    if response_format not in RESPONSE_FORMATS:
        raise BadField(
            f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, got {response_format[:40]!r}",
            "response_format",
        )
    if one("stream", "false").lower() == "true":
        raise BadField("stream=true is not supported; the answer comes whole", "stream")
    temperature = one("temperature", "0")
    try:
        if not 0.0 <= float(temperature) <= 1.0:
            raise ValueError
    except ValueError:
        raise BadField(
            f"temperature must be a number from 0 to 1, got {temperature[:20]!r}", "temperature"
        ) from None
    prompt = one("prompt")
    if len(prompt) > MAX_PROMPT:
        raise BadField(f"prompt must be at most {MAX_PROMPT} characters", "prompt")
    granularities = [*fields.get("timestamp_granularities[]", []), *fields.get("timestamp_granularities", [])]
    for granularity in granularities:
        if granularity not in GRANULARITIES:
            raise BadField(
                f"timestamp_granularities takes word and segment, got {granularity[:20]!r}",
                "timestamp_granularities",
            )
    if granularities and response_format != "verbose_json":
        raise BadField(
            "timestamp_granularities needs response_format verbose_json", "timestamp_granularities"
        )
    language = None if translate else (one("language") or None)
    return AudioRequest(
        file=file,
        model=model,
        language=language,
        prompt=prompt,
        response_format=response_format,
        words="word" in granularities,
        segments="segment" in granularities or not granularities,
    )


def render(
    request: AudioRequest, final: FinalMessage, *, duration: float, language: str, task: str
) -> tuple[str | dict[str, Any], str]:
    """The answer in the asked format: a JSON body or text, and its media type."""
    text = final["transcription"]
    segments = final["response"]["segments"]
    usage = {"type": "duration", "seconds": math.ceil(duration)}
    match request.response_format:
        case "json":
            return {"text": text, "usage": usage}, "application/json"
        case "text":
            return text + "\n", "text/plain; charset=utf-8"
        case "srt" | "vtt":
            fmt: subtitles.SubtitleFormat = request.response_format
            return subtitles.render(segments, fmt), subtitles.MEDIA_TYPES[fmt]
    body: dict[str, Any] = {
        "task": task,
        "language": language,
        "duration": round(duration, 3),
        "text": text,
    }
    if request.segments:
        body["segments"] = [_segment(i, s) for i, s in enumerate(segments)]
    if request.words:
        body["words"] = [
            {"word": _EDGE_PUNCTUATION.sub("", w["word"]) or w["word"], "start": w["start"], "end": w["end"]}
            for w in final["response"]["word_segments"]
        ]
    body["usage"] = usage
    return body, "application/json"


def _segment(index: int, segment: SegmentDict) -> dict[str, Any]:
    """A verbose_json segment. Ours carry no tokens: ``tokens`` is empty, ``avg_logprob``
    is the mean log-probability of its words, and ``no_speech_prob`` is 0 (the VAD heard
    speech there)."""
    text = segment["text"]
    scores = [w["score"] for w in segment["words"] if w["score"] > 0]
    encoded = text.encode()
    return {
        "id": index,
        "seek": 0,
        "start": segment["start"],
        "end": segment["end"],
        "text": " " + text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": round(sum(math.log(s) for s in scores) / len(scores), 4) if scores else 0.0,
        "compression_ratio": round(len(encoded) / len(zlib.compress(encoded)), 4) if encoded else 0.0,
        "no_speech_prob": 0.0,
    }


def error_body(error: StreamingError) -> dict[str, Any]:
    """OpenAI's error shape."""
    kind, code = {
        "unauthorized": ("invalid_request_error", "invalid_api_key"),
        "origin_not_allowed": ("invalid_request_error", "origin_not_allowed"),
        "body_too_large": ("invalid_request_error", "file_too_large"),
        "invalid_audio": ("invalid_request_error", "invalid_file_format"),
        "server_full": ("server_error", "overloaded"),
        "overloaded": ("server_error", "overloaded"),
        "not_ready": ("server_error", "not_ready"),
        "internal_error": ("server_error", "internal_error"),
    }.get(error.code, ("invalid_request_error", error.code))
    return {
        "error": {
            "message": error.message,
            "type": kind,
            "param": error.param if isinstance(error, BadField) else None,
            "code": code,
        }
    }
