"""``python -m streaming serve``: every :class:`~streaming.config.Config` field is a flag and an
environment variable (``--max-sessions`` / ``STREAMING_MAX_SESSIONS``); a flag beats its
variable, which beats the default. This is the only module that configures logging.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from streaming import logs
from streaming.config import Config, bool_word
from streaming.errors import ModelError
from streaming.models import resolve_model

ENV_PREFIX = "STREAMING_"
STARTUP_FAILURE = 3


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse_bool(text: str) -> bool:
    parsed = bool_word(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return parsed


def _parse_list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _is_list(field: dataclasses.Field[Any]) -> bool:
    return str(field.type).startswith("tuple")


def _converter(field: dataclasses.Field[Any]) -> Any:
    if _is_list(field):
        return _parse_list
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    return {"int": int, "float": float, "bool": _parse_bool}.get(kind, str)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m streaming")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the websocket and HTTP API",
        description="Serve /v1/stream, /predict and /healthcheck. Every flag can also be set "
        f"with an environment variable: {ENV_PREFIX}<FLAG NAME>, e.g. {env_var('max_sessions')}.",
    )
    for field in dataclasses.fields(Config):
        # List options may be repeated, or take commas.
        serve.add_argument(
            flag(field.name),
            dest=field.name,
            type=_converter(field),
            action="append" if _is_list(field) else "store",
            choices=field.metadata.get("choices"),
            default=None,
            metavar=field.name.upper(),
            help=f"{field.metadata['help']} (default: {field.default!r}; env {env_var(field.name)})",
        )
    return parser


def config_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """Flags beat environment variables, which beat the defaults."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Config):
        given = getattr(args, field.name, None)
        if given is not None:
            # A repeated list flag arrives as one tuple per use.
            values[field.name] = tuple(x for part in given for x in part) if _is_list(field) else given
        elif env_var(field.name) in environ:
            raw = environ[env_var(field.name)]
            try:
                values[field.name] = _converter(field)(raw)
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise ValueError(f"{env_var(field.name)}={raw!r}: {exc}") from None
    return Config(**values)


def uvicorn_config(config: Config, app: Any) -> Any:
    """The uvicorn settings the service runs with (shared by the CLI and the tests)."""
    import uvicorn

    from streaming.auth import RedactTokens

    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level=config.log_level,
        # In JSON, uvicorn's lines go through our handler too (its own config prints text).
        log_config=None if config.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        lifespan="on",
        # Frames above max_frame_bytes get our typed error; far larger ones (base64 grows
        # them by a third) are refused by the protocol layer with 1009.
        ws_max_size=config.max_frame_bytes * 2,
        # Pings keep NAT mappings alive, but no timeout: while a faster-than-real-time sender
        # is slowed by backpressure, its pong waits behind its audio. Dead clients are caught
        # by idle_timeout instead.
        ws_ping_interval=20.0,
        ws_ping_timeout=None,
        # uvicorn's websockets-sansio protocol stalled our sends while the app held reads back
        # for backpressure (a paused 5-minute stream never resumed); the websockets protocol
        # handles the same pause and resume correctly.
        ws="websockets",
    )
    # Browsers send their API key, and resuming clients their resume token, in the query
    # string, which uvicorn logs: in its access log, and in its websocket handshake lines.
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    for name, level in logs.parse_levels(config.log_levels).items():  # after uvicorn's own
        logging.getLogger(name).setLevel(level.upper())
    return settings


def serve(config: Config) -> int:
    import uvicorn

    from streaming.app import Lifecycle, create_app
    from streaming.server import DrainingServer

    logs.configure(config.log_level, config.log_format, logs.parse_levels(config.log_levels))
    log = logging.getLogger("streaming")
    # The protocol choice in uvicorn_config is deliberate; don't print its deprecation at start.
    warnings.filterwarnings("ignore", "websockets.legacy is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "The `websockets` implementation is deprecated")
    try:
        # Verify the weights before binding: a checksum mismatch must stop the start.
        resolve_model(config.model, Path(config.cache_dir) if config.cache_dir else None)
    except ModelError as exc:
        log.error("cannot start: %s", exc)
        return STARTUP_FAILURE
    failure: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        failure.append(exc)
        if server is not None:
            server.should_exit = True

    lifecycle = Lifecycle()
    try:
        app = create_app(config, on_fatal=on_fatal, lifecycle=lifecycle)
    except OSError as exc:
        log.error("cannot start: cannot read the API key file: %s", exc)
        return STARTUP_FAILURE
    settings = uvicorn_config(config, app)  # configures uvicorn's loggers
    server = DrainingServer(settings, lifecycle, config.drain_timeout)
    asyncio.run(server.serve())
    if failure:
        log.error("stopped: the model could not be loaded: %s", failure[0])
        return STARTUP_FAILURE
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from(args, os.environ if environ is None else environ)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(config)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
