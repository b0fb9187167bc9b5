"""Validation against docs/protocol.schema.json, the documented wire schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "protocol.schema.json").read_text())
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
_HOSTED = jsonschema.Draft202012Validator({**SCHEMA, "oneOf": [{"$ref": "#/$defs/hosted_response"}]})


def validate_message(message: dict[str, Any]) -> None:
    _VALIDATOR.validate(message)


def validate_hosted(body: dict[str, Any]) -> None:
    _HOSTED.validate(body)


# Marks the final may end a word with otherwise than the segment that sent it: a full stop the
# model wrote where its clip stopped, rewritten by the decode that heard what follows.
_ENDINGS = ".,;:!?"


def as_sent(words: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Words (of segments, or of the final) without their closing marks, for comparing the final
    with what was sent; :func:`rewritten` says which marks changed."""
    return [{**w, "word": w["word"].rstrip(_ENDINGS)} for w in words]


def rewritten(sent: list[dict[str, Any]], final: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The words whose text the final has otherwise than sent, as (sent, final): only a closing
    mark may differ (a stop rewritten, a mark added)."""
    return [(a["word"], b["word"]) for a, b in zip(sent, final, strict=True) if a["word"] != b["word"]]


def unmarked(text: str) -> list[str]:
    """A text's words without their closing marks."""
    return [w.rstrip(_ENDINGS) for w in text.split()]
