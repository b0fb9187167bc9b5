"""docs/protocol.md says exactly what the server sends: its examples validate against the schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from streaming import messages
from streaming.errors import StreamingError
from tests.schema import validate_message

DOC = (Path(__file__).parents[1] / "docs" / "protocol.md").read_text()
EXAMPLES = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", DOC, flags=re.S)]


def test_the_doc_has_an_example_of_each_message() -> None:
    assert {e["type"] for e in EXAMPLES} == {"ready", "partial", "segment", "final"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e["type"])
def test_doc_examples_validate(example: dict[str, object]) -> None:
    validate_message(example)


def test_every_error_code_is_documented_and_in_the_schema() -> None:
    codes = {cls.code for cls in _subclasses(StreamingError)}
    for code in codes:
        assert f"`{code}`" in DOC
        validate_message(messages.error(_instance(code)))
    with pytest.raises(jsonschema.ValidationError):
        validate_message({"type": "error", "code": "made_up", "message": "x"})


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found | {s for c in found for s in _subclasses(c)}


def _instance(code: str) -> StreamingError:
    cls = next(c for c in _subclasses(StreamingError) if c.code == code)
    return cls("example")
