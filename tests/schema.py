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
