"""Every Config field is one CLI flag and one environment variable; flags win."""

from __future__ import annotations

import dataclasses

import pytest

from streaming.cli import build_parser, config_from, env_var, flag
from streaming.config import Config, InvalidParameter, parse_stream_config


def sample(field: dataclasses.Field) -> tuple[str, object]:
    """A value other than the default, as text and as parsed."""
    choices = field.metadata.get("choices")
    if choices:
        value = next(c for c in choices if c != field.default)
        return value, value
    default = field.default
    if field.name == "log_levels":  # its items have a form: MODULE=LEVEL
        return "streaming=debug, uvicorn=warning", ("streaming=debug", "uvicorn=warning")
    if isinstance(default, tuple):
        return "first, second", ("first", "second")
    if isinstance(default, bool):
        return str(not default).lower(), not default
    if isinstance(default, int):
        return str(default * 2 + 1), default * 2 + 1
    if isinstance(default, float):
        value = default * 1.5 if default > 0 else default - 0.5
        try:
            Config(**{field.name: value})
        except ValueError:  # beyond the field's range (28 s pieces may not grow by half)
            value = default * 0.75
        return repr(value), value
    return "x-value", "x-value"


@pytest.mark.parametrize("field", dataclasses.fields(Config), ids=lambda f: f.name)
def test_each_field_has_a_flag_and_an_env_var(field: dataclasses.Field) -> None:
    raw, value = sample(field)
    args = build_parser().parse_args(["serve", flag(field.name), raw])
    assert getattr(config_from(args, {}), field.name) == value
    args = build_parser().parse_args(["serve"])
    assert getattr(config_from(args, {env_var(field.name): raw}), field.name) == value


def test_a_list_flag_may_be_repeated_and_secrets_stay_out_of_the_repr() -> None:
    args = build_parser().parse_args(["serve", "--api-key", "k1", "--api-key", "k2,k3"])
    config = config_from(args, {})
    assert config.api_key == ("k1", "k2", "k3")
    assert "k1" not in repr(config)


def test_flag_beats_env_and_env_beats_default() -> None:
    args = build_parser().parse_args(["serve", "--max-sessions", "3"])
    assert config_from(args, {"STREAMING_MAX_SESSIONS": "5"}).max_sessions == 3
    args = build_parser().parse_args(["serve"])
    assert config_from(args, {"STREAMING_MAX_SESSIONS": "5"}).max_sessions == 5
    assert config_from(args, {}).max_sessions == Config().max_sessions


def test_invalid_values_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="vad_threshold"):
        Config(vad_threshold=1.5)
    with pytest.raises(ValueError, match="first_partial_patience"):
        Config(first_partial_patience=-0.1)
    args = build_parser().parse_args(["serve"])
    with pytest.raises(ValueError, match="STREAMING_PORT"):
        config_from(args, {"STREAMING_PORT": "eighty"})


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"encoding": "opus"}, "encoding"),
        ({"sample_rate": "4000"}, "sample_rate"),
        ({"sample_rate": "abc"}, "sample_rate"),
        ({"channels": "0"}, "channels"),
        ({"language": "auto"}, "multilingual"),
        ({"language": "fr"}, "English-only"),
        ({"task": "translate"}, "multilingual"),
        ({"interim_results": "maybe"}, "interim_results"),
        ({"colour": "blue"}, "unknown query parameter"),
    ],
)
def test_stream_parameters_are_validated(query: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        parse_stream_config(query, multilingual=False)


def test_stream_parameters_parse() -> None:
    config = parse_stream_config(
        {
            "encoding": "mulaw",
            "sample_rate": "8000",
            "channels": "2",
            "language": "auto",
            "task": "translate",
            "interim_results": "false",
            "hotwords": "Kubernetes",
        },
        multilingual=True,
    )
    assert config.encoding == "mulaw"
    assert config.sample_rate == 8000
    assert config.frame_bytes == 2
    assert config.language is None
    assert not config.interim_results


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"multichannel": "true"}, "channels between 2 and 2"),
        ({"multichannel": "true", "channels": "3"}, "channels between 2 and 2"),
        ({"multichannel": "true", "channels": "2", "speakers": "a"}, "one per channel"),
        ({"multichannel": "true", "channels": "2", "speakers": "a,a"}, "different names"),
        ({"multichannel": "true", "channels": "2", "speakers": "a,"}, "1 to 40 characters"),
        ({"channels": "2", "speakers": "a,b"}, "needs multichannel=true"),
        ({"multichannel": "maybe", "channels": "2"}, "true or false"),
    ],
)
def test_multichannel_parameters_are_validated(query: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        parse_stream_config(query, multilingual=False)


def test_multichannel_speakers_default_to_channel_names() -> None:
    stream = parse_stream_config({"multichannel": "true", "channels": "2"}, multilingual=False)
    assert stream.speaker_labels == ("channel_0", "channel_1")
    named = parse_stream_config(
        {"multichannel": "true", "channels": "2", "speakers": "agent, customer"}, multilingual=False
    )
    assert named.speaker_labels == ("agent", "customer")
