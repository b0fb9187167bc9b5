"""SRT and WebVTT from the hosted schema's segments."""

from __future__ import annotations

from streaming.subtitles import to_srt, to_vtt

SEGMENTS = [
    {"start": 3661.5, "end": 3663.25, "text": "Second  line\n with a break", "speaker": "agent", "words": []},
    {"start": 0.0, "end": 1.2345, "text": "First <line> & more", "speaker": None, "words": []},
    {"start": 5.0, "end": 6.0, "text": "   ", "speaker": None, "words": []},
]


def test_srt_numbers_cues_in_time_order_with_comma_milliseconds() -> None:
    assert to_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:01,234\nFirst <line> & more\n\n"
        "2\n01:01:01,500 --> 01:01:03,250\nagent: Second line with a break\n"
    )


def test_vtt_has_its_header_escapes_text_and_names_the_voice() -> None:
    assert to_vtt(SEGMENTS) == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.234\nFirst &lt;line&gt; &amp; more\n\n"
        "01:01:01.500 --> 01:01:03.250\n<v agent>Second line with a break\n"
    )


def test_no_segments_give_empty_captions() -> None:
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"


def test_a_long_sentence_is_split_into_cues_within_caption_limits() -> None:
    from streaming.subtitles import MAX_CUE_SECONDS, MAX_LINE_CHARS, MAX_LINES

    words = [{"word": f"word{i:02d}", "start": i * 0.5, "end": i * 0.5 + 0.4} for i in range(40)]
    sentence = {"start": 0.0, "end": 19.9, "text": " ".join(w["word"] for w in words), "words": words}
    blocks = to_srt([sentence]).strip().split("\n\n")
    assert len(blocks) > 2
    said = []
    for block in blocks:
        _, times, *lines = block.split("\n")
        start, end = (
            sum(float(x) * 60**i for i, x in enumerate(reversed(t.replace(",", ".").split(":"))))
            for t in times.split(" --> ")
        )
        assert end - start <= MAX_CUE_SECONDS
        assert len(lines) <= MAX_LINES
        assert all(len(line) <= MAX_LINE_CHARS for line in lines)
        said += " ".join(lines).split()
    assert said == [w["word"] for w in words]  # every word once, in order
