"""Speaker labels on one channel (``diarize=true``).

- Sans-I/O: the online clustering and the diarizer with scripted voiceprints, and a session
  (scripted engine, manual clock) whose voices are told apart by pitch.
- The real speaker model: our NumPy port against resemblyzer's own encoder on real speech, its
  checksum, and a checkpoint that tries to run code.
- The real service on the ``mono-call`` set over loopback: ``/predict`` and a stream.
"""

from __future__ import annotations

import asyncio
import base64
import io
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soxr

from clients.stream import read_audio, stream_file
from streaming.config import StreamConfig, parse_stream_config
from streaming.diarize import MIN_VOICE, NEW_VOICE, Clusters, Diarizer
from streaming.errors import ChecksumMismatch, InvalidParameter, ModelError
from streaming.messages import Word
from streaming.voices import Vector, VoiceEncoder, Voiceprint, read_checkpoint, weights_path
from tests.conftest import RunningServer
from tests.fakes import RATE, silence, tone
from tests.test_session import Harness

# ---------------------------------------------------------------------------- sans-I/O


def unit(*leading: float) -> Vector:
    vector = np.zeros(256, np.float32)
    vector[: len(leading)] = leading
    return (vector / np.linalg.norm(vector)).astype(np.float32)


A, A_AGAIN, B, C = unit(1, 0), unit(1, 0.2), unit(0, 1), unit(0, 0, 1)


def word(text: str, start: float, end: float) -> Word:
    return Word(text, round(start * RATE), round(end * RATE), 0.9)


def heard(start: float, end: float, vector: Vector) -> Voiceprint:
    return Voiceprint(round(start * RATE), round(end * RATE), vector)


def texts(runs: list[tuple[str, list[Word]]]) -> list[tuple[str, list[str]]]:
    return [(speaker, [w.text for w in words]) for speaker, words in runs]


def test_clusters_find_the_nearest_speaker_and_stop_at_the_most() -> None:
    clusters = Clusters(max_speakers=2)
    assert clusters.nearest(A) is None
    assert clusters.start(A * 3.0) == 0
    speaker, similarity = clusters.nearest(A_AGAIN)  # type: ignore[misc]
    assert speaker == 0
    assert similarity == pytest.approx(0.98, abs=0.01)
    assert clusters.start(B) == 1
    assert clusters.start(C) is None
    clusters.add(1, C * 10.0)  # B's speaker now sounds mostly like C
    assert clusters.nearest(C)[0] == 1  # type: ignore[index]


def test_a_known_voice_is_decided_on_a_second_a_new_one_on_three() -> None:
    diarizer = Diarizer(Clusters())
    diarizer.learn([heard(0.0, 4.0, A)], over=True)
    assert texts(diarizer.take([word("one", 0.5, 1.0)])) == [("speaker_0", ["one"])]
    # A new voice, 1.2 s heard so far: its words wait.
    diarizer.learn([heard(5.0, 6.2, B)], over=False)
    assert diarizer.take([word("two", 5.2, 5.6)]) == []
    assert diarizer.held == 1
    diarizer.learn([heard(5.0, 5.0 + NEW_VOICE / RATE, B)], over=False)
    assert texts(diarizer.take([])) == [("speaker_1", ["two"])]
    # The first voice again, a little over a second of it: decided at once.
    diarizer.learn([heard(9.0, 9.0 + MIN_VOICE / RATE + 0.1, A_AGAIN)], over=False)
    assert texts(diarizer.take([word("three", 9.2, 9.6)])) == [("speaker_0", ["three"])]


def test_a_run_too_short_to_tell_goes_on_the_turn_before() -> None:
    diarizer = Diarizer(Clusters())
    diarizer.learn([heard(0.0, 4.0, A)], over=True)
    diarizer.take([word("hello", 0.5, 1.0)])
    diarizer.learn([heard(4.4, 4.9, B)], over=True)  # "Yes." from someone else: too short to tell
    assert texts(diarizer.take([word("yes", 4.5, 4.8)])) == [("speaker_0", ["yes"])]
    assert len(diarizer.clusters) == 1


def test_a_short_turn_like_nobody_waits_for_its_end_then_starts_a_speaker_only_if_clearly_new() -> None:
    diarizer = Diarizer(Clusters())
    diarizer.learn([heard(0.0, 4.0, A)], over=True)
    diarizer.take([word("one", 0.5, 1.0)])
    diarizer.voice(started=True, at=round(5.0 * RATE))
    diarizer.learn([heard(5.0, 7.0, B)], over=True)  # 2 s of a new voice, then silence
    assert diarizer.take([word("two", 5.5, 6.0)]) == []
    diarizer.voice(started=False, at=round(7.0 * RATE))
    assert diarizer.heard(round(7.5 * RATE)) == []  # a pause, not yet the turn's end
    assert texts(diarizer.heard(round(8.0 * RATE))) == [("speaker_1", ["two"])]
    # 2 s like speaker_0 at 0.70, between CHANGE and THRESHOLD: not clearly new, so speaker_0.
    between = unit(1, 0, 1.02)
    diarizer.voice(started=True, at=round(9.0 * RATE))
    diarizer.learn([heard(9.0, 11.0, between)], over=True)
    assert diarizer.take([word("three", 9.5, 10.0)]) == []
    diarizer.voice(started=False, at=round(11.0 * RATE))
    assert texts(diarizer.heard(round(12.0 * RATE))) == [("speaker_0", ["three"])]
    assert len(diarizer.clusters) == 2


def test_a_turn_is_not_over_while_the_vad_hears_speech_its_runs_not_yet_embedded() -> None:
    diarizer = Diarizer(Clusters())
    diarizer.learn([heard(0.0, 4.0, A)], over=True)
    diarizer.take([word("one", 0.5, 1.0)])
    diarizer.voice(started=False, at=round(4.0 * RATE))
    diarizer.voice(started=True, at=round(4.5 * RATE))  # a "Mr." and on, no decode back yet
    diarizer.learn([heard(4.5, 4.9, B)], over=True)  # too short to tell: on the turn before
    assert diarizer.heard(round(9.0 * RATE)) == []
    diarizer.learn([heard(5.2, 5.2 + NEW_VOICE / RATE, B)], over=False)  # a new voice after all
    assert texts(diarizer.take([word("mister", 4.6, 4.8), word("john", 5.4, 5.8)])) == [
        ("speaker_0", ["mister"]),
        ("speaker_1", ["john"]),
    ]


def test_a_decided_turn_is_never_relabelled_but_sharpens_its_speaker() -> None:
    diarizer = Diarizer(Clusters())
    diarizer.learn([heard(0.0, 3.5, A)], over=False)
    assert texts(diarizer.take([word("one", 0.2, 0.6)])) == [("speaker_0", ["one"])]
    # The whole run, embedded by its final, sounds like someone else: its words stay speaker_0.
    diarizer.learn([heard(0.0, 6.0, B)], over=True)
    assert texts(diarizer.take([word("two", 4.0, 4.4)])) == [("speaker_0", ["two"])]
    # ... and speaker_0 is now the whole run's voice, not the first seconds'.
    assert diarizer.clusters.nearest(B)[1] == pytest.approx(1.0)  # type: ignore[index]


def test_spans_leave_out_runs_on_a_turn_but_a_final_embeds_its_whole_utterance() -> None:
    diarizer = Diarizer(Clusters())
    diarizer.learn([heard(0.0, 2.0, A)], over=True)
    speech = [(0, 2 * RATE), (3 * RATE, 5 * RATE)]
    assert diarizer.spans(speech, 0, 4 * RATE, whole=False) == ((3 * RATE, 4 * RATE),)
    assert diarizer.spans(speech, 0, 4 * RATE, whole=True) == ((0, 2 * RATE), (3 * RATE, 4 * RATE))


def test_words_keep_their_order_and_the_end_releases_every_one() -> None:
    diarizer = Diarizer(Clusters())
    diarizer.learn([heard(0.0, 0.5, A)], over=False)  # too short to place yet
    diarizer.learn([heard(1.0, 4.0, B)], over=True)
    assert diarizer.take([word("one", 0.1, 0.4), word("two", 1.2, 1.6)]) == []  # "one" holds "two"
    released = diarizer.flush()
    assert [w.text for _, words in released for w in words] == ["one", "two"]
    assert {speaker for speaker, _ in released} <= {"speaker_0", "speaker_1"}
    assert diarizer.held == 0


class PitchVoices:
    """A scripted embedder keeping the real one's contract (a unit vector per stretch): the
    scripted engine's speech is tones, and a low tone is one voice, a high tone another."""

    def __init__(self) -> None:
        self.stretches: list[int] = []

    def embed(self, stretches: Sequence[np.ndarray]) -> list[Vector]:
        out = []
        for audio in stretches:
            self.stretches.append(len(audio))
            loud = audio[np.abs(audio) > 0.05]
            crossings = np.count_nonzero(np.diff(np.signbit(loud))) / 2 / max(len(loud) / RATE, 1e-3)
            out.append(A if crossings < 330 else B)
        return out


def test_a_session_labels_each_turn_with_its_voice() -> None:
    voices = PitchVoices()
    h = Harness(StreamConfig(encoding="pcm_f32le", diarize=True), embedder=voices, partial_interval=0.5)
    turns = [(220.0, 2.5), (440.0, 3.5), (220.0, 1.5), (440.0, 2.0)]
    audio = np.concatenate([part for f, s in turns for part in (tone(s, freq=f), silence(0.7))])
    h.audio(audio)
    h.text({"type": "end"})
    segments = [m["segment"] for m in h.of_type("segment")]  # type: ignore[typeddict-item]
    spoken = [(s["speaker"], s["start"]) for s in segments]
    by_turn: dict[int, set[str]] = {}
    starts = np.cumsum([0.0] + [s + 0.7 for _, s in turns])
    for speaker, start in spoken:
        turn = int(np.searchsorted(starts, start + 0.5)) - 1
        by_turn.setdefault(turn, set()).add(speaker)
    assert by_turn == {0: {"speaker_0"}, 1: {"speaker_1"}, 2: {"speaker_0"}, 3: {"speaker_1"}}
    for segment in segments:
        assert {w["speaker"] for w in segment["words"]} == {segment["speaker"]}
    [final] = h.of_type("final")
    assert {s["speaker"] for s in final["response"]["segments"]} == {"speaker_0", "speaker_1"}  # type: ignore[index]
    assert voices.stretches, "the session asked for no voiceprints"


def test_diarize_is_asked_for_on_one_channel_of_a_server_that_has_the_model() -> None:
    def parse(query: dict[str, str], diarization: bool = True) -> StreamConfig:
        return parse_stream_config(query, multilingual=False, diarization=diarization)

    assert parse({"diarize": "true", "max_speakers": "3"}).max_speakers == 3
    for query, message in [
        ({"max_speakers": "2"}, "max_speakers needs diarize=true"),
        ({"diarize": "true", "max_speakers": "0"}, "max_speakers must be between 1 and 10"),
        ({"diarize": "true", "channels": "2", "multichannel": "true"}, "each channel is a speaker"),
    ]:
        with pytest.raises(InvalidParameter, match=message):
            parse(query)
    with pytest.raises(InvalidParameter, match="no speaker model"):
        parse({"diarize": "true"}, diarization=False)


# ---------------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    return VoiceEncoder.load()


def test_our_port_embeds_as_librosa_and_torch_do(encoder: VoiceEncoder, data_dir: Path) -> None:
    """resemblyzer's own recipe, from the libraries it uses (its package cannot be imported on
    a current setuptools: webrtcvad needs pkg_resources): librosa's mel spectrogram, torch's
    LSTM with the same weights, a 1.6 s window of real speech at 16 and 8 kHz."""
    librosa = pytest.importorskip("librosa")
    torch = pytest.importorskip("torch")
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
    lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
    lstm.load_state_dict({k.removeprefix("lstm."): v for k, v in state.items() if k.startswith("lstm.")})
    window = 160 * 160
    for name in ("read/jfk.flac", "read/1089-134686-0000.flac", "telephony/OSR_us_000_0034_8k.flac"):
        found = read_audio(data_dir / name)
        wav = soxr.resample(found.samples[:, 0], found.sample_rate, RATE)[RATE : RATE + window]
        wav = (wav * 10 ** (-20 / 20) / np.sqrt(np.mean(wav**2))).astype(np.float32)  # over -30 dBFS
        mel = librosa.feature.melspectrogram(y=wav, sr=RATE, n_fft=400, hop_length=160, n_mels=40)
        with torch.no_grad():
            _, (hidden, _) = lstm(torch.from_numpy(mel.T[None, :160].astype(np.float32)))
            raw = torch.relu(hidden[-1] @ state["linear.weight"].T + state["linear.bias"])[0].numpy()
        [ours] = encoder.embed([wav])
        assert float(np.dot(ours, raw / np.linalg.norm(raw))) > 0.9999, name


def test_the_weights_are_verified_and_may_hold_nothing_but_tensors(tmp_path: Path) -> None:
    copy = tmp_path / "pretrained.pt"
    data = bytearray(weights_path().read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch):
        VoiceEncoder.load(copy)

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (print, ("this ran",))

    hostile = io.BytesIO()
    for part in (0x1950A86A20F9469CFC6C, 1001, {}, {"model_state": Exploit()}, []):
        pickle.dump(part, hostile, protocol=2)
    with pytest.raises(ModelError, match="print, which is not a weight"):
        read_checkpoint(hostile.getvalue())


# ---------------------------------------------------------------------------- the real service


def right_share(turns: list[list[Any]], words: list[dict[str, Any]]) -> tuple[float, int]:
    """The share of words given the right speaker (labels mapped onto speakers as most words
    say), and how many labels were given."""
    from bench.speakers import score

    found = score(turns, words)
    return found["right_speaker"], found["speakers_found"]


def test_predict_labels_a_four_speaker_conversation(
    server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    name = "mono_call/conv_2_8k.flac"
    body = {"audio": base64.b64encode((data_dir / name).read_bytes()).decode(), "diarize": True}
    answer = httpx.post(f"{server.http_url}/predict", json=body, timeout=300)
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    share, found = right_share(manifest[name]["speaker_segments"], response["word_segments"])
    assert share >= 0.9
    assert found == 4
    for segment in response["segments"]:
        assert {w["speaker"] for w in segment["words"]} == {segment["speaker"]}


def test_a_stream_labels_a_two_speaker_call(
    server: RunningServer, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    name = "mono_call/conv_1_16k.flac"
    result = asyncio.run(
        stream_file(
            server.ws_url, read_audio(data_dir / name), realtime=True, speed=2.0, params={"diarize": "true"}
        )
    )
    assert result.messages[0]["config"]["diarize"] is True
    words = [w for m in result.messages if m["type"] == "segment" for w in m["segment"]["words"]]
    share, found = right_share(manifest[name]["speaker_segments"], words)
    assert share >= 0.9
    assert found == 2
    assert result.final is not None
    assert [w["speaker"] for w in result.final["response"]["word_segments"]] == [w["speaker"] for w in words]
