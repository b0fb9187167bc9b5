"""The server's log lines: plain text for a person at a terminal, or one JSON object per line
for a log pipeline (``--log-format json``), with the session id on every line a stream's work
writes, and a level per module (``--log-levels streaming.transport=debug``).

The session id travels in a context variable: the endpoint sets it once it has a session, and
the tasks it starts (reader, writer) inherit it. No line holds audio; API keys and resume
tokens are blanked where uvicorn prints query strings (:class:`streaming.auth.RedactTokens`).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

LEVELS = ("critical", "error", "warning", "info", "debug")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

session_id: ContextVar[str | None] = ContextVar("session_id", default=None)


class SessionFilter(logging.Filter):
    """Puts the current stream's session id on the record (None outside a stream)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.session_id = session_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        session = getattr(record, "session_id", None)
        if session is not None:
            line["session_id"] = session
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def parse_levels(items: tuple[str, ...]) -> dict[str, str]:
    """``("streaming.transport=debug", ...)`` as a mapping; raises ValueError naming a bad one."""
    levels = {}
    for item in items:
        name, _, level = item.partition("=")
        if not name.strip() or level.strip().lower() not in LEVELS:
            raise ValueError(
                f"log_levels takes MODULE=LEVEL with a level of {', '.join(LEVELS)}, got {item!r}"
            )
        levels[name.strip()] = level.strip().lower()
    return levels


def configure(level: str, log_format: str, levels: dict[str, str]) -> None:
    """Send every log line to stderr in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(SessionFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # faster-whisper logs every decode at INFO: one line per utterance is noise here.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, root.level))
    for name, named_level in levels.items():
        logging.getLogger(name).setLevel(named_level.upper())
