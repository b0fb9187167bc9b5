"""Decoding, G.711 and resampling of streamed audio."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streaming.audio import StreamDecoder, decode_file, decode_samples, encode_alaw, encode_mulaw
from streaming.config import StreamConfig
from streaming.errors import InvalidAudio


def sine(rate: int, seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def decode_all(config: StreamConfig, data: bytes, chunk: int) -> np.ndarray:
    decoder = StreamDecoder(config)
    parts = [decoder.decode(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return np.concatenate([*parts, decoder.flush()])


@pytest.mark.parametrize("chunk", [1, 3, 7, 640, 100_000])
def test_a_sample_split_across_frames_is_joined(chunk: int) -> None:
    samples = (np.arange(-500, 500, dtype=np.int16) * 60).astype("<i2")
    config = StreamConfig(encoding="pcm_s16le", channels=2)
    out = decode_all(config, samples.tobytes(), chunk)
    expected = samples.reshape(-1, 2).astype(np.float32).mean(axis=1) / 32768
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_f32_with_nan_is_refused_and_leaves_no_trace() -> None:
    decoder = StreamDecoder(StreamConfig(encoding="pcm_f32le"))
    with pytest.raises(InvalidAudio, match="NaN"):
        decoder.decode(np.array([0.1, np.nan], dtype="<f4").tobytes())
    assert decoder.pending_bytes == 0


@pytest.mark.parametrize(("encoding", "encode"), [("mulaw", encode_mulaw), ("alaw", encode_alaw)])
def test_g711_round_trip_is_close(encoding: str, encode: Any) -> None:
    samples = sine(8000, 0.5, 300)
    decoded = decode_samples(encode(samples), encoding)
    assert np.max(np.abs(decoded - samples)) < 0.02
    # The two laws are different codes for the same sound.
    assert encode_alaw(samples) != encode_mulaw(samples)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_the_tone_and_the_length(rate: int) -> None:
    samples = sine(rate, 1.0, 1000)
    config = StreamConfig(encoding="pcm_f32le", sample_rate=rate)
    out = decode_all(config, samples.astype("<f4").tobytes(), 4001)
    assert abs(len(out) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(out[2000:14000]))
    peak_hz = np.argmax(spectrum) * 16000 / 12000
    assert abs(peak_hz - 1000) < 5


def test_resampling_rejects_what_would_alias() -> None:
    # A 12 kHz tone at 48 kHz cannot be represented at 16 kHz (Nyquist 8 kHz): an
    # anti-aliasing resampler removes it instead of folding it down to 4 kHz.
    samples = sine(48000, 1.0, 12000)
    out = decode_all(StreamConfig(encoding="pcm_f32le", sample_rate=48000), samples.tobytes(), 9600)
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.005


def test_decode_file_refuses_garbage() -> None:
    with pytest.raises(InvalidAudio):
        decode_file(b"this is not audio at all" * 100)
