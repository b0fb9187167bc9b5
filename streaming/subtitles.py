"""SubRip (SRT) and WebVTT captions from the segments of a ``final`` (the hosted schema).

Segments are sentences; a cue keeps caption limits: at most ``MAX_CUE_SECONDS`` on screen and
``MAX_LINES`` lines of ``MAX_LINE_CHARS`` characters (the common broadcast limits), so a long
sentence is split between words, where its word timings say. Cues come in start-time order; a
segment with a ``speaker`` names it (``agent: ...`` in SRT, a ``<v agent>`` voice span in
WebVTT). The browser page writes the same formats (``clients/web/captions.js``).
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


MAX_CUE_SECONDS = 7.0
MAX_LINE_CHARS = 42
MAX_LINES = 2

Cue = tuple[float, float, str, str | None]


def _cues(segments: Iterable[Mapping[str, Any]]) -> list[Cue]:
    cues: list[Cue] = []
    for segment in sorted(segments, key=lambda s: (s["start"], s["end"])):
        cues += _split(segment)
    return cues


def _split(segment: Mapping[str, Any]) -> list[Cue]:
    """One cue if the segment fits the limits, else one per run of words that does."""
    # A cue's text may not hold a blank line: it would end the cue.
    text = " ".join(str(segment["text"]).split())
    start, end, speaker = float(segment["start"]), float(segment["end"]), segment.get("speaker")
    words = [w for w in segment.get("words") or [] if str(w["word"]).strip()]
    if not text:
        return []
    if _fits(text, end - start) or len(words) < 2:
        return [(start, end, _wrap(text), speaker)]
    runs: list[list[Mapping[str, Any]]] = [[]]
    for word in words:
        candidate = [*runs[-1], word]
        line = " ".join(str(w["word"]) for w in candidate)
        if runs[-1] and not _fits(line, float(word["end"]) - float(runs[-1][0]["start"])):
            runs.append([word])
        else:
            runs[-1] = candidate
    return [
        (
            start if i == 0 else float(run[0]["start"]),
            end if i == len(runs) - 1 else float(run[-1]["end"]),
            _wrap(" ".join(str(w["word"]) for w in run)),
            speaker,
        )
        for i, run in enumerate(runs)
    ]


def _fits(text: str, seconds: float) -> bool:
    lines = _wrap(text).split("\n")
    return (
        seconds <= MAX_CUE_SECONDS
        and len(lines) <= MAX_LINES
        and all(len(x) <= MAX_LINE_CHARS for x in lines)
    )


def _wrap(text: str) -> str:
    """One line if it fits, else two, broken at the space nearest the middle."""
    if len(text) <= MAX_LINE_CHARS:
        return text
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    if not spaces:
        return text
    best = min(spaces, key=lambda i: abs(i - len(text) / 2))
    return f"{text[:best]}\n{text[best + 1 :]}"


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
