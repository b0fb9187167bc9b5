"""The segmenter's logic with scripted scores, and silero-vad on real speech."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from streaming.config import Config
from streaming.vad import WINDOW, Segmenter, SileroVad, Utterance, VadParams
from tests.fakes import RATE, TEST_VAD, LoudnessScorer, silence, tone

PARAMS = TEST_VAD


def run(audio: np.ndarray, chunk: int = 1600, params: VadParams = PARAMS) -> list[Utterance]:
    segmenter = Segmenter(LoudnessScorer(), params)
    out: list[Utterance] = []
    for i in range(0, len(audio), chunk):
        out += segmenter.push(audio[i : i + chunk])
    last = segmenter.cut()
    return out + ([last] if last else [])


def test_speech_between_silences_is_one_padded_utterance() -> None:
    audio = np.concatenate([silence(1.0), tone(1.0), silence(1.0)])
    [utterance] = run(audio)
    # Speech starts at 1.0 s: the utterance starts one pad earlier and ends one pad after.
    assert abs(utterance.start - int(0.8 * RATE)) <= WINDOW
    assert abs(utterance.end - int(2.2 * RATE)) <= WINDOW
    assert np.array_equal(utterance.audio, audio[utterance.start : utterance.end])


def test_a_pause_shorter_than_min_silence_does_not_split() -> None:
    audio = np.concatenate([tone(1.0), silence(0.2), tone(1.0), silence(1.0)])
    assert len(run(audio)) == 1


def test_a_long_pause_splits_and_utterances_never_overlap() -> None:
    audio = np.concatenate([tone(1.0), silence(0.35), tone(1.0), silence(1.0), tone(0.5)])
    utterances = run(audio)
    assert len(utterances) == 3
    for a, b in itertools.pairwise(utterances):
        assert a.end <= b.start


@pytest.mark.parametrize("chunk", [1, 333, 512, 4096, 100_000])
def test_chunking_does_not_change_the_result(chunk: int) -> None:
    audio = np.concatenate([silence(0.5), tone(1.2), silence(0.6), tone(0.7), silence(0.4)])
    reference = run(audio, chunk=1600)
    got = run(audio, chunk=chunk)
    assert [(u.start, u.end) for u in got] == [(u.start, u.end) for u in reference]


def test_long_speech_is_cut_at_the_quietest_point_and_nothing_is_lost() -> None:
    # 7 s of speech with one soft dip at 3.0 s: the cut lands in the dip, and the pieces tile.
    speech = tone(7.0)
    dip = slice(int(3.0 * RATE), int(3.0 * RATE) + WINDOW * 2)
    speech[dip] *= 0.05
    audio = np.concatenate([silence(0.5), speech, silence(1.0)])
    utterances = run(audio)
    assert len(utterances) >= 2
    cut = utterances[0].end
    assert abs(cut - int(3.5 * RATE)) <= 2 * WINDOW
    for a, b in itertools.pairwise(utterances):
        assert a.end == b.start  # contiguous: no sample dropped at a cut
    assert all(len(u.audio) <= PARAMS.max_utterance for u in utterances)


def test_blips_shorter_than_min_speech_are_not_utterances() -> None:
    audio = np.concatenate([silence(1.0), tone(0.04), silence(1.0)])
    assert run(audio) == []


def test_buffer_stays_bounded_in_silence() -> None:
    segmenter = Segmenter(LoudnessScorer(), PARAMS)
    for _ in range(100):
        segmenter.push(silence(1.0))
    assert segmenter.buffered <= PARAMS.speech_pad + WINDOW
    assert segmenter.received == 100 * RATE


def test_silero_finds_the_speech_in_a_real_clip(manifest: dict[str, dict], data_dir) -> None:
    from streaming.audio import decode_file

    entry = manifest["ljspeech/LJ001-0002.flac"]
    speech = decode_file((data_dir / entry["audio"]).read_bytes())
    audio = np.concatenate([silence(1.0), speech, silence(1.0)])
    segmenter = Segmenter(SileroVad().scorer(), VadParams.from_config(Config()))
    utterances = segmenter.push(audio)
    assert len(utterances) == 1
    [u] = utterances
    words = entry["words_silver"]
    assert u.start <= (1.0 + words[0][1]) * RATE
    assert u.end >= (1.0 + words[-1][2]) * RATE


def test_streams_sharing_the_network_score_as_the_packaged_model_does(
    manifest: dict[str, dict], data_dir
) -> None:
    """Two interleaved streams over one shared network get the packaged TorchScript model's
    scores (ONNX Runtime against torch: equal to 1e-5): neither's recurrent state leaks into the
    other."""
    import silero_vad
    import torch

    from streaming.audio import decode_file

    clips = [
        decode_file((data_dir / manifest[name]["audio"]).read_bytes())
        for name in ("ljspeech/LJ001-0002.flac", "read/jfk.flac")
    ]
    windows = min(len(c) for c in clips) // WINDOW
    packaged = []
    for clip in clips:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load
            model = silero_vad.load_silero_vad(onnx=False)
        with torch.inference_mode():
            packaged.append(
                [
                    float(model(torch.from_numpy(clip[i * WINDOW : (i + 1) * WINDOW]), RATE))
                    for i in range(windows)
                ]
            )
    vad = SileroVad()
    scorers = [vad.scorer(), vad.scorer()]
    shared: list[list[float]] = [[], []]
    for i in range(windows):
        for k, clip in enumerate(clips):
            shared[k].append(scorers[k](clip[i * WINDOW : (i + 1) * WINDOW]))
    assert np.allclose(shared, packaged, atol=1e-5, rtol=0)
    assert max(packaged[0]) > 0.9  # real speech was scored


def test_the_vad_network_is_refused_unless_its_checksum_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    from streaming import vad
    from streaming.errors import ChecksumMismatch

    monkeypatch.setattr(vad, "SILERO_ONNX_SHA256", "0" * 64)
    with pytest.raises(ChecksumMismatch):
        SileroVad()
