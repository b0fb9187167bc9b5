"""Audio decoding for streams: bytes in the declared encoding in, 16 kHz mono float32 out.

:class:`StreamDecoder` is incremental: bytes of a sample frame split across two websocket
frames are kept and joined, and the resampler carries its filter state from one chunk to the
next, so a stream cut into chunks of any size decodes to the same samples as the whole.
G.711 comes from the standard library's ``audioop`` (``audioop-lts`` on Python 3.13+),
resampling from libsoxr (a proper anti-aliasing resampler).
"""

from __future__ import annotations

import io
import warnings
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
import soxr

from streaming.config import MODEL_SAMPLE_RATE, StreamConfig
from streaming.errors import InvalidAudio

with warnings.catch_warnings():
    # audioop is deprecated in the 3.11/3.12 standard library and lives on as audioop-lts.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Samples = npt.NDArray[np.float32]


def _g711_table(decode: str) -> Samples:
    """The 256-entry table of a G.711 law, built once by the library's decoder."""
    linear = getattr(audioop, decode)(bytes(range(256)), 2)
    return (np.frombuffer(linear, dtype="<i2").astype(np.float32) / 32768.0).astype(np.float32)


MULAW_TABLE = _g711_table("ulaw2lin")
ALAW_TABLE = _g711_table("alaw2lin")


def _to_pcm(samples: Samples) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def encode_mulaw(samples: Samples) -> bytes:
    """Float samples in [-1, 1] to G.711 mu-law bytes (for clients and tests)."""
    return bytes(audioop.lin2ulaw(_to_pcm(samples), 2))


def encode_alaw(samples: Samples) -> bytes:
    """Float samples in [-1, 1] to G.711 A-law bytes (for clients and tests)."""
    return bytes(audioop.lin2alaw(_to_pcm(samples), 2))


def decode_samples(data: bytes, encoding: str) -> Samples:
    """Whole sample frames (any channel count, interleaved) to float32 in [-1, 1]."""
    if encoding == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    if encoding == "pcm_f32le":
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.isfinite(samples).all():
            raise InvalidAudio("pcm_f32le audio holds NaN or infinity; send finite samples in [-1, 1]")
        # Full scale is [-1, 1]: louder samples are clipped, as a converter to s16 would.
        return np.clip(samples, -1.0, 1.0, out=samples)
    if encoding == "mulaw":
        return MULAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    if encoding == "alaw":
        return ALAW_TABLE[np.frombuffer(data, dtype=np.uint8)]
    raise ValueError(f"unknown encoding {encoding!r}")


class StreamDecoder:
    """Decodes one stream's bytes, incrementally, to 16 kHz float32: mono (channels downmixed),
    or for a ``multichannel`` stream one column per channel."""

    def __init__(self, config: StreamConfig) -> None:
        self._config = config
        self._pending = b""
        self._kept = config.channels if config.multichannel else 1
        self._resampler: soxr.ResampleStream | None = None
        if config.sample_rate != MODEL_SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(
                config.sample_rate, MODEL_SAMPLE_RATE, self._kept, dtype="float32", quality="HQ"
            )

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete sample frame held for the next chunk."""
        return len(self._pending)

    def decode(self, data: bytes) -> Samples:
        """Decode a chunk; bytes of an incomplete sample frame are kept for the next one."""
        buffer = self._pending + data
        usable = len(buffer) - len(buffer) % self._config.frame_bytes
        # Validate before touching any state, so a rejected chunk leaves no trace.
        samples = decode_samples(buffer[:usable], self._config.encoding)
        self._pending = buffer[usable:]
        return self._convert(samples, last=False)

    def flush(self) -> Samples:
        """End of stream: the resampler's tail. A dangling partial sample frame is dropped
        (it holds less than one sample of audio)."""
        self._pending = b""
        return self._convert(np.zeros(0, dtype=np.float32), last=True)

    def _convert(self, samples: Samples, *, last: bool) -> Samples:
        channels = self._config.channels
        if self._kept > 1:
            samples = samples.reshape(-1, channels)
        elif channels > 1:
            samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
        if self._resampler is None:
            return samples
        out: Samples = self._resampler.resample_chunk(samples, last=last)
        return out.astype(np.float32, copy=False)


def decode_file(data: bytes) -> Samples:
    """A whole recording (wav, mp3, flac, ogg, ...) to 16 kHz mono float32.

    Raises :class:`InvalidAudio` when the bytes are not audio a decoder understands.
    """
    import av  # imported here: only the HTTP route needs a container demuxer

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise InvalidAudio("the file holds no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=MODEL_SAMPLE_RATE)
            chunks: list[Samples] = []
            for frame in container.decode(audio=0):
                chunks.extend(_mono(out) for out in resampler.resample(frame))
            chunks.extend(_mono(out) for out in resampler.resample(None))
    except av.error.FFmpegError as exc:
        raise InvalidAudio(
            f"the audio could not be decoded ({exc.strerror or exc}); send wav, mp3, flac or ogg"
        ) from None
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _mono(frame: Any) -> Samples:
    return np.asarray(frame.to_ndarray(), dtype=np.float32).reshape(-1)


class History:
    """The channel's recent audio, in the chunks it arrived in (no copy per frame)."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[int, Samples]] = deque()
        self.start = 0  # stream sample of the first kept sample
        self.end = 0

    def append(self, samples: Samples) -> None:
        if len(samples):
            self._chunks.append((self.end, samples))
            self.end += len(samples)

    def slice(self, lo: int, hi: int) -> Samples:
        lo = max(lo, self.start)
        parts = [
            chunk[max(lo - at, 0) : hi - at] for at, chunk in self._chunks if at < hi and at + len(chunk) > lo
        ]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def trim(self, keep_from: int) -> None:
        """Forget whole chunks that end before ``keep_from``."""
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= keep_from:
            self._chunks.popleft()
        self.start = self._chunks[0][0] if self._chunks else self.end
