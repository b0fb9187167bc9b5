"""SubRip (SRT) and WebVTT captions from the segments of a ``final`` (the hosted schema).

One cue per segment, in start-time order; a segment with a ``speaker`` names it (``agent: ...``
in SRT, a ``<v agent>`` voice span in WebVTT). The browser page writes the same formats
(``clients/web/captions.js``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

SubtitleFormat = Literal["srt", "vtt"]
FORMATS: tuple[SubtitleFormat, ...] = ("srt", "vtt")
MEDIA_TYPES: dict[SubtitleFormat, str] = {
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def _timestamp(seconds: float, separator: str) -> str:
    millis = max(round(seconds * 1000), 0)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cues(segments: Iterable[Mapping[str, Any]]) -> list[tuple[float, float, str, str | None]]:
    cues = []
    for segment in sorted(segments, key=lambda s: (s["start"], s["end"])):
        # A cue's text may not hold a blank line: it would end the cue.
        text = " ".join(str(segment["text"]).split())
        if text:
            cues.append((float(segment["start"]), float(segment["end"]), text, segment.get("speaker")))
    return cues


def to_srt(segments: Iterable[Mapping[str, Any]]) -> str:
    blocks = []
    for index, (start, end, text, speaker) in enumerate(_cues(segments), start=1):
        line = f"{speaker}: {text}" if speaker else text
        blocks.append(f"{index}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{line}\n")
    return "\n".join(blocks)


def to_vtt(segments: Iterable[Mapping[str, Any]]) -> str:
    blocks = ["WEBVTT\n"]
    for start, end, text, speaker in _cues(segments):
        # WebVTT text escapes &, < and >; a voice span names the speaker.
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        line = f"<v {speaker}>{escaped}" if speaker else escaped
        blocks.append(f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{line}\n")
    return "\n".join(blocks)


def render(segments: Iterable[Mapping[str, Any]], fmt: SubtitleFormat) -> str:
    return to_srt(segments) if fmt == "srt" else to_vtt(segments)
