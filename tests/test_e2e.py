"""The real service, model and VAD, over a real websocket on loopback, with real speech."""

from __future__ import annotations

import asyncio
import base64
import bisect
import io
import itertools
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clients.stream import Recording, read_audio, stream_file
from streaming.sentences import ends_sentence
from tests.conftest import RunningServer
from tests.schema import as_sent, rewritten, unmarked, validate_hosted, validate_message
from tests.wer import normalise, wer

pytestmark = pytest.mark.model

# Bounds, with the figures measured when they were set (tiny.en int8, beam 5, this CPU):
LONG_WER_BOUND = 0.075  # measured 0.063 to 0.067; offline tiny.en, beam 5, on the same file: 0.060
CLIP_WER_BOUND = 0.15
WORD_TIMING_TOLERANCE = 0.25  # seconds; the silver alignment itself is good to about ±50 ms
WORD_END_SLACK = 0.6  # seconds an LJ clip's last word may end before the clip does
STRAY_STOPS = 0.3  # per sentence of the final: measured 5 in 34, 2026-12-03 (abbreviations, ellipses)


def run(server: RunningServer, recording: Recording, **kwargs: Any) -> Any:
    return asyncio.run(stream_file(server.ws_url, recording, **kwargs))


@pytest.fixture(scope="module")
def long_result(server: RunningServer, data_dir: Path) -> Any:
    recording = read_audio(data_dir / "long/ljspeech_5min.flac")
    # Eight times real time: fast enough for CI, paced enough that partials are produced.
    return run(server, recording, realtime=True, speed=8.0)


def test_long_stream_wer_and_schema(long_result: Any, manifest: dict[str, Any]) -> None:
    assert long_result.close_code == 1000
    for message in long_result.messages:
        validate_message(message)
    kinds = [m["type"] for m in long_result.messages]
    assert kinds[0] == "ready"
    assert kinds[-1] == "final"
    # Paced at 8x, a partial's clip is seconds long and most of its words are old enough to be
    # committed at once: the partials show as pieces committed mid-utterance, if not as partials.
    assert "partial" in kinds or any(m.get("continues") for m in long_result.messages)
    assert "error" not in kinds
    final = long_result.final
    reference = manifest["long/ljspeech_5min.flac"]["text"]
    assert wer(reference, final["transcription"]) <= LONG_WER_BOUND
    # The final holds the words sent, in order, with their timings; a word's closing mark may
    # be the next decode's (it heard what follows). Its segments join the pieces sent into
    # sentences, fewer than the pieces.
    sent = [m["segment"] for m in long_result.messages if m["type"] == "segment"]
    words = final["response"]["word_segments"]
    sent_words = [w for s in sent for w in s["words"]]
    assert as_sent(words) == as_sent(sent_words)
    changed = rewritten(sent_words, words)
    # Only the stop a clip's end put there is rewritten (as_sent: never a word), "MSS?" read
    # "MSS." once the next decode heard what follows, or a word sent with no mark takes the one
    # that decode wrote after it ("paper" then ". He began"); a comma stays as sent.
    assert all(a.endswith((".", "?", "!", "\u2026")) or unmarked(a) == [a] for a, _ in changed), changed
    assert words == sorted(words, key=lambda w: (w["start"], w["end"]))
    assert len(final["response"]["segments"]) < len(sent)


def test_long_stream_segment_boundaries(long_result: Any, manifest: dict[str, Any]) -> None:
    """Every pause between the reference's utterances ends a piece sent as a ``segment``, and
    no piece crosses one: pieces may split an utterance, never merge two."""
    reference = manifest["long/ljspeech_5min.flac"]["segments"]
    segments = [m["segment"] for m in long_result.messages if m["type"] == "segment"]
    edges = [s["end"] for s in segments]
    gaps = [(a[2] + b[1]) / 2 for a, b in itertools.pairwise(reference)]
    # A piece ends where its last word does: within the reference clip's trailing silence
    # (up to about 0.6 s, the clips' own), before the next clip starts.
    pauses = [(a[2] - WORD_END_SLACK, b[1] + 0.05) for a, b in itertools.pairwise(reference)]
    matched = [p for p in pauses if any(p[0] <= e <= p[1] for e in edges)]
    assert len(matched) >= 0.9 * len(pauses), f"{len(matched)} of {len(pauses)} pauses end a segment"
    crossing = [s for s in segments for g in gaps if s["start"] + 0.4 < g < s["end"] - 0.4]
    assert len(crossing) <= 0.05 * len(segments)


def test_word_timings_match_the_silver_alignment(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    clips = [e for e in manifest.values() if e["set"] == "ljspeech" and e.get("words_silver")][:12]
    offsets: list[float] = []
    for entry in clips:
        result = run(server, read_audio(data_dir / entry["audio"]))
        final = result.final
        assert wer(entry["text"], final["transcription"]) <= CLIP_WER_BOUND + 0.2
        silver = iter(entry["words_silver"])
        # Pair words in order by their normalised spelling.
        from tests.wer import normalise

        for word in final["response"]["word_segments"]:
            name = normalise(word["word"])
            for ref_word, start, end in silver:
                if normalise(ref_word) == name:
                    offsets += [abs(word["start"] - start), abs(word["end"] - end)]
                    break
    assert len(offsets) > 150
    assert float(np.median(offsets)) <= WORD_TIMING_TOLERANCE / 2
    assert float(np.percentile(offsets, 90)) <= WORD_TIMING_TOLERANCE


@pytest.mark.parametrize(
    "file", ["telephony/OSR_us_000_0034_8k.flac", "telephony/LDC93S1_pcms16le_1_8000.flac"]
)
def test_8khz_telephony_sent_as_mulaw(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any], file: str
) -> None:
    recording = read_audio(data_dir / file)
    assert recording.sample_rate == 8000
    result = run(server, recording, encoding="mulaw")
    assert result.messages[0]["config"]["encoding"] == "mulaw"
    assert wer(manifest[file]["text"], result.final["transcription"]) <= 0.2


def test_48khz_resampled_clip(server: RunningServer, data_dir: Path, manifest: dict[str, Any]) -> None:
    import soxr

    entry = manifest["ljspeech/LJ001-0001.flac"]
    clip = read_audio(data_dir / entry["audio"])
    upsampled = soxr.resample(clip.samples, 16000, 48000).astype(np.float32)
    result = run(server, Recording(upsampled.reshape(-1, 1), 48000), encoding="pcm_f32le")
    assert result.messages[0]["config"]["sample_rate"] == 48000
    assert wer(entry["text"], result.final["transcription"]) <= CLIP_WER_BOUND


def test_stereo_is_downmixed(server: RunningServer, data_dir: Path, manifest: dict[str, Any]) -> None:
    entry = manifest["stereo/call_0_8k.flac"]
    result = run(server, read_audio(data_dir / entry["audio"]))
    assert result.messages[0]["config"]["channels"] == 2
    assert wer(entry["text"], result.final["transcription"]) <= 0.25


def _wav_and_mp3(path: Path) -> tuple[bytes, bytes]:
    import av

    recording = read_audio(path)
    pcm = (recording.samples[:, 0] * 32767).astype("<i2")
    wav = io.BytesIO()
    import wave

    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(recording.sample_rate)
        w.writeframes(pcm.tobytes())
    mp3 = io.BytesIO()
    with av.open(mp3, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=recording.sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = recording.sample_rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return wav.getvalue(), mp3.getvalue()


def test_predict_with_wav_and_mp3(server: RunningServer, data_dir: Path, manifest: dict[str, Any]) -> None:
    entry = manifest["ljspeech/LJ001-0003.flac"]
    for blob in _wav_and_mp3(data_dir / entry["audio"]):
        response = httpx.post(
            f"{server.http_url}/predict",
            json={"audio": base64.b64encode(blob).decode(), "language": "en", "task": "transcribe"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        validate_hosted(body)
        assert wer(entry["text"], body["transcription"]) <= CLIP_WER_BOUND
        assert body["response"]["word_segments"]


def test_predict_a_five_minute_file_in_long_pieces(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    """A whole file longer than a stream may keep waiting for the model, cut where a 2 s pause
    or the 28 s piece ends, each piece decoded in Whisper's full window after its context."""
    entry = manifest["long/ljspeech_5min.flac"]
    blob = (data_dir / entry["audio"]).read_bytes()
    response = httpx.post(
        f"{server.http_url}/predict", json={"audio": base64.b64encode(blob).decode()}, timeout=600
    )
    assert response.status_code == 200, response.text
    body = response.json()
    validate_hosted(body)
    # Offline faster-whisper scores 0.058 on this file (bench/predict.py); a stream, 0.063 to 0.067.
    assert wer(entry["text"], body["transcription"]) <= 0.07
    words = body["response"]["word_segments"]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(words))
    assert words[-1]["end"] <= entry["duration"]
    # Sentences, not pieces: 20 in the reference; a segment is at most max_sentence (20 s) long.
    segments = body["response"]["segments"]
    assert 15 <= len(segments) <= 45
    assert all(s["end"] - s["start"] <= 20.5 for s in segments)


def test_predict_keeps_the_words_after_a_sentence_end_and_a_pause(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    """LJ001-0058 ends "...of that epoch. By far," after a 0.7 s pause: decoded as one piece,
    tiny.en stops at "epoch." and the words after it are decoded once more on their own."""
    entry = manifest["ljspeech/LJ001-0058.flac"]
    blob = (data_dir / entry["audio"]).read_bytes()
    response = httpx.post(
        f"{server.http_url}/predict", json={"audio": base64.b64encode(blob).decode()}, timeout=120
    )
    assert response.status_code == 200, response.text
    text = response.json()["transcription"].lower()
    assert "by far" in text, text
    assert wer(entry["text"], text) <= 0.1


@pytest.mark.parametrize("name", ["mono_call/conv_0_16k.flac", "mono_call/conv_2_16k.flac"])
def test_predict_keeps_every_turn_of_a_call(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any], name: str
) -> None:
    """Decoding a 28 s piece of several voices, tiny.en passed over a whole turn of another
    ("Stuff it into you, his belly counselled him.", "She had your dark suit in greasy wash
    water all year.") and went on with the next: the speech between two of a final's words is
    decoded again on its own. Each turn has most of its three-word runs in the transcription."""
    entry = manifest[name]
    blob = (data_dir / entry["audio"]).read_bytes()
    response = httpx.post(
        f"{server.http_url}/predict", json={"audio": base64.b64encode(blob).decode()}, timeout=300
    )
    assert response.status_code == 200, response.text
    text = response.json()["transcription"]
    said = normalise(text)
    for _, turn, _, _ in entry["speaker_segments"]:
        words = normalise(turn).split()
        runs = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
        assert sum(f" {run} " in f" {said} " for run in runs) >= len(runs) / 2, (turn, text)
    assert wer(entry["text"], text) <= 0.08


def test_predict_keeps_a_turn_passed_over_before_a_piece_s_first_word(
    server: RunningServer, data_dir: Path, manifest: dict[str, Any]
) -> None:
    """On a CPU with AVX-512 (other int8 arithmetic, other words), the 8 kHz copy of the call
    above lost its TIMIT turn whole: the piece's first word came 1.6 s of that turn's speech
    after the words before it. The 8 kHz audio is heard less well ("dog suit and" offline
    too): most of the turn's words, in any case, and none of it lost."""
    entry = manifest["mono_call/conv_2_8k.flac"]
    blob = (data_dir / entry["audio"]).read_bytes()
    response = httpx.post(
        f"{server.http_url}/predict", json={"audio": base64.b64encode(blob).decode()}, timeout=300
    )
    assert response.status_code == 200, response.text
    said = normalise(response.json()["transcription"]).split()
    [turn] = [t for speaker, t, _, _ in entry["speaker_segments"] if speaker == "reader_timit"]
    words = normalise(turn).split()
    assert sum(w in said for w in words) >= 0.6 * len(words), (turn, said)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b'{"audio": "@@@not base64"}', 400),
        (b'{"audio": "' + base64.b64encode(b"garbage bytes, not audio" * 50) + b'"}', 422),
        (b'{"audio": "", "language": "xx"}', 400),
    ],
)
def test_predict_bad_input_is_a_4xx_json_error(server: RunningServer, body: bytes, status: int) -> None:
    response = httpx.post(f"{server.http_url}/predict", content=body, timeout=30)
    assert response.status_code == status
    assert response.json()["error"]["code"]


def test_healthcheck(server: RunningServer) -> None:
    response = httpx.get(f"{server.http_url}/healthcheck")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model": "tiny.en"}


def test_invalid_query_gets_an_error_and_close_before_audio(server: RunningServer) -> None:
    import websockets

    async def go() -> tuple[list[str], int | None]:
        async with websockets.connect(server.ws_url + "?encoding=opus") as ws:
            got = [str(m) for m in [await ws.recv()]]
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return got, ws.close_code

    messages, code = asyncio.run(go())
    assert '"invalid_parameter"' in messages[0]
    assert code == 1008


def test_predict_oversized_body_is_413(server: RunningServer) -> None:
    body = b'{"audio": "' + b"A" * (64 << 20) + b'"}'
    response = httpx.post(f"{server.http_url}/predict", content=body, timeout=60)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_client_cli_writes_the_final_json(server: RunningServer, data_dir: Path, tmp_path: Path) -> None:
    from clients.stream import main

    out, srt, vtt = tmp_path / "final.json", tmp_path / "final.srt", tmp_path / "final.vtt"
    clip = str(data_dir / "ljspeech/LJ001-0002.flac")
    code = main([clip, "--url", server.ws_url, "--out", str(out), "--srt", str(srt), "--vtt", str(vtt)])
    assert code == 0
    import json

    body = json.loads(out.read_text())
    validate_hosted(body)
    assert "comparatively modern" in body["transcription"].lower()
    segments = body["response"]["segments"]
    assert srt.read_text().startswith("1\n00:00:0")
    assert srt.read_text().count(" --> ") == len(segments)
    assert vtt.read_text().startswith("WEBVTT\n\n00:00:0")
    assert "comparatively modern" in vtt.read_text().lower()


@pytest.mark.parametrize(
    ("fmt", "media_type", "head"), [("srt", "application/x-subrip", "1\n"), ("vtt", "text/vtt", "WEBVTT")]
)
def test_predict_answers_captions_when_asked(
    server: RunningServer, data_dir: Path, fmt: str, media_type: str, head: str
) -> None:
    wav, _ = _wav_and_mp3(data_dir / "ljspeech/LJ001-0002.flac")
    response = httpx.post(
        f"{server.http_url}/predict",
        json={"audio": base64.b64encode(wav).decode(), "response_format": fmt},
        timeout=120,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert response.text.startswith(head)
    assert "comparatively modern" in response.text.lower()
    bad = httpx.post(f"{server.http_url}/predict", json={"audio": "", "response_format": "docx"}, timeout=30)
    assert bad.status_code == 400
    assert "response_format" in bad.json()["error"]["message"]


def test_client_cli_exits_non_zero_on_a_server_error(
    server: RunningServer, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from clients.stream import main

    code = main([str(data_dir / "ljspeech/LJ001-0002.flac"), "--url", server.ws_url, "--language", "fr"])
    assert code == 1
    captured = capsys.readouterr()
    assert "invalid_parameter" in captured.out
    assert "1008" in captured.err


def test_pieces_read_as_sentences(long_result: Any) -> None:
    """A piece continues its sentence when the piece before did not end one, as the final ends
    its last word (a later decode, hearing what follows, may have rewritten a stop the model
    wrote where its clip stopped), or when it starts in lower case. The final reads as
    sentences: few of its full stops are followed by a lower-case word."""
    pieces = [m for m in long_result.messages if m["type"] == "segment"]
    words = long_result.final["response"]["word_segments"]
    ends = list(itertools.accumulate(len(p["segment"]["words"]) for p in pieces))
    sentence_start = pieces[0]["segment"]["start"]
    for (before, after), end in zip(itertools.pairwise(pieces), ends, strict=False):
        ended = ends_sentence(words[end - 1]["word"])
        lower = after["segment"]["text"].lstrip()[:1].islower()
        gap = after["segment"]["start"] - before["segment"]["end"]
        said = (before["segment"]["text"], after["segment"]["text"])
        if ended and not lower:
            assert not after["continues"], said
        elif gap < 1.0 and after["segment"]["end"] - sentence_start <= 20.0:  # max_sentence
            assert after["continues"], said
        if not after["continues"]:
            sentence_start = after["segment"]["start"]
    stray = [
        (a["word"], b["word"])
        for a, b in itertools.pairwise(words)
        if ends_sentence(a["word"]) and b["word"][:1].islower()
    ]
    # Before the rewriting, the live pieces had such stops in 12 of 75 (2026-12-02), and the
    # final kept them all.
    assert len(stray) <= STRAY_STOPS * len(long_result.final["response"]["segments"]), stray


def test_speech_with_few_pauses_gets_its_words_within_the_bound(
    server: RunningServer, data_dir: Path
) -> None:
    """Words are committed while a long utterance is still spoken, typically within the
    commit bound (1.5 s) of being said; the slack allows for decodes on a loaded CI machine."""
    sent_at: dict[float, float] = {}
    recording = read_audio(data_dir / "read/2412-153948-0000.flac")  # 11.7 s, read without stopping
    result = run(server, recording, realtime=True, sent_at=sent_at)
    assert result.close_code == 1000
    ends = sorted(sent_at)

    def sent(t: float) -> float:
        return sent_at[ends[min(bisect.bisect_left(ends, t), len(ends) - 1)]]

    waits = [
        arrival - sent(word["end"])
        for m, arrival in zip(result.messages, result.arrivals, strict=True)
        if m["type"] == "segment"
        for word in m["segment"]["words"]
    ]
    assert len(waits) >= 20
    # The bound itself is tested with a manual clock (tests/test_commits.py) and its tail is
    # measured in bench.latency: here, on a machine shared with the rest of the suite, the
    # typical word keeps to it with a second's slack (a decode delayed by the machine delays
    # every word it commits: 2.8 s at p90 was seen once in a CI run).
    assert float(np.median(waits)) <= 1.5 + 1.0, sorted(waits)
    # Most words came while the speech went on, not at its end.
    first = min(t for m, t in zip(result.messages, result.arrivals, strict=True) if m["type"] == "segment")
    assert first < recording.duration - 3.0
