"""Who is speaking: a speaker embedding ("voiceprint") of a stretch of speech.

The model is resemblyzer's d-vector encoder (GE2E, trained on LibriSpeech, VoxCeleb 1 and 2):
40 mel bands every 10 ms, three LSTM layers of 256, a linear layer, ReLU and L2 norm. Its 17 MB
``pretrained.pt`` ships inside the ``resemblyzer`` wheel on PyPI; it is verified by SHA-256
and read here without torch (the image leaves torch out: the service never imports it).

- The checkpoint is a legacy torch pickle. It is read by an unpickler that builds nothing but
  dicts and float32 arrays: any other class in the file is refused, so a tampered file cannot
  run code even before its checksum would be compared.
- The network runs in NumPy (``tests/test_voices.py`` holds it to torch's own ``nn.LSTM`` on
  the same weights). A stretch is embedded as resemblyzer does: 1.6 s windows, 1.3 per second,
  each window's embedding averaged and normed again.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from faster_whisper.feature_extractor import FeatureExtractor

from streaming.config import MODEL_SAMPLE_RATE as SAMPLE_RATE
from streaming.errors import ChecksumMismatch, ModelError, SpeakerModelMissing

Samples = npt.NDArray[np.float32]
Vector = npt.NDArray[np.float32]

PACKAGE = "resemblyzer"
WEIGHTS = "pretrained.pt"
WEIGHTS_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"

N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 40
HIDDEN = 256
LAYERS = 3
WINDOW_FRAMES = 160  # 1.6 s per window
WINDOWS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75  # a last window less full than this is dropped (unless it is the only one)
LOUDNESS_DBFS = -30.0  # quiet speech is raised to this level first, as in training


@dataclass(frozen=True, slots=True)
class Voiceprint:
    """The embedding of one stretch of a stream: stream samples ``start`` to ``end``."""

    start: int
    end: int
    vector: Vector  # unit length, 256 values


class Embedder(Protocol):
    """What makes voiceprints: :class:`VoiceEncoder`, or a test's scripted one."""

    def embed(self, stretches: Sequence[Samples]) -> list[Vector]: ...


class _Storage:
    def __init__(self, count: int) -> None:
        self.count = count
        self.data: npt.NDArray[np.float32] | None = None


class _Tensor:
    """A tensor whose storage is read after the pickle: materialised by :func:`_array`."""

    def __init__(
        self, storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _Tensor:
    return _Tensor(storage, offset, tuple(size), tuple(stride))


class _FloatStorage:
    """Stands for torch.FloatStorage: the only storage type the checkpoint has."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch", "FloatStorage"): _FloatStorage,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise ModelError(f"the speaker model holds {module}.{name}, which is not a weight")
        return found

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, count = pid[:5]
        if kind != "storage" or storage_type is not _FloatStorage:
            raise ModelError(f"the speaker model holds a storage of {storage_type!r}, not float32")
        return self._storages.setdefault(str(key), _Storage(int(count)))


def read_checkpoint(data: bytes) -> dict[str, Any]:
    """A legacy (pre-zip) torch checkpoint of float32 tensors as a dict of NumPy arrays."""
    f = io.BytesIO(data)
    storages: dict[str, _Storage] = {}
    # Five pickles, each read by the guarded unpickler: the magic number, the protocol version,
    # the saving machine's type sizes, the tree of tensors, and the keys of their storages.
    for _ in range(3):
        _Unpickler(f, storages).load()
    tree = _Unpickler(f, storages).load()
    keys = _Unpickler(f, storages).load()
    for key in keys:
        (count,) = struct.unpack("<q", f.read(8))
        storage = storages[str(key)]
        if count != storage.count:
            raise ModelError("the speaker model's storages do not match their headers")
        storage.data = np.frombuffer(f.read(4 * count), dtype="<f4").astype(np.float32)
    found = _materialise(tree)
    if not isinstance(found, dict):
        raise ModelError("the speaker model is not a checkpoint dict")
    return found


def _materialise(node: Any) -> Any:
    if isinstance(node, _Tensor):
        data = node.storage.data
        if data is None:
            raise ModelError("the speaker model refers to a storage it does not hold")
        strides = tuple(4 * s for s in node.stride)
        view = np.lib.stride_tricks.as_strided(data[node.offset :], shape=node.size, strides=strides)
        return np.array(view, dtype=np.float32)
    if isinstance(node, dict):
        return {k: _materialise(v) for k, v in node.items()}
    return node


def weights_path() -> Path:
    """Where the installed ``resemblyzer`` distribution keeps the weights. Found through its
    metadata, not imported: its own code needs librosa and torch, which the service does not."""
    try:
        found = metadata.distribution(PACKAGE).locate_file(f"{PACKAGE}/{WEIGHTS}")
    except metadata.PackageNotFoundError:
        raise SpeakerModelMissing(
            "no speaker model: the resemblyzer package is not installed "
            "(pip install -e '.[speakers]'), so diarize=true cannot be served"
        ) from None
    return Path(str(found))


class VoiceEncoder:
    """Turns stretches of 16 kHz speech into unit vectors; one instance serves every worker
    (it holds only read-only weights)."""

    def __init__(self, weights: dict[str, Vector]) -> None:
        layers = []
        for i in range(LAYERS):
            w_ih, w_hh = weights[f"lstm.weight_ih_l{i}"], weights[f"lstm.weight_hh_l{i}"]
            bias = weights[f"lstm.bias_ih_l{i}"] + weights[f"lstm.bias_hh_l{i}"]
            layers.append((np.ascontiguousarray(w_ih.T), np.ascontiguousarray(w_hh.T), bias))
        self._layers = layers
        self._linear = (np.ascontiguousarray(weights["linear.weight"].T), weights["linear.bias"])
        mel = FeatureExtractor.get_mel_filters(SAMPLE_RATE, N_FFT, n_mels=N_MELS)
        self._mel = np.ascontiguousarray(mel.T.astype(np.float32))
        self._window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann

    @classmethod
    def load(cls, path: Path | None = None, sha256: str = WEIGHTS_SHA256) -> VoiceEncoder:
        """The encoder from ``path`` (default: the resemblyzer wheel's), verified first."""
        path = path or weights_path()
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise ChecksumMismatch(str(path), sha256, actual)
        state = read_checkpoint(data)["model_state"]
        return cls(state)

    def embed(self, stretches: Sequence[Samples]) -> list[Vector]:
        """One unit vector per stretch of speech (any length; under a window is padded)."""
        windows: list[npt.NDArray[np.float32]] = []
        owners: list[int] = []
        for i, audio in enumerate(stretches):
            found = self._windows(audio)
            windows += found
            owners += [i] * len(found)
        if not windows:
            return []
        per_window = self._network(np.stack(windows))
        out = []
        for i in range(len(stretches)):
            mean = per_window[np.asarray(owners) == i].mean(axis=0)
            out.append((mean / max(float(np.linalg.norm(mean)), 1e-9)).astype(np.float32))
        return out

    def _windows(self, audio: Samples) -> list[npt.NDArray[np.float32]]:
        """The stretch's mel frames cut into 1.6 s windows at 1.3 per second, as resemblyzer's
        ``embed_utterance`` does (a last window at least 75 % full is padded, never dropped
        when it is the only one)."""
        audio = np.asarray(audio, dtype=np.float32)
        rms = float(np.sqrt(np.mean(np.square(audio)))) if len(audio) else 0.0
        if rms > 0:
            gain_db = LOUDNESS_DBFS - 20 * np.log10(rms)
            if gain_db > 0:  # raise quiet speech, never lower loud speech
                audio = audio * np.float32(10 ** (gain_db / 20))
        frames = len(audio) // HOP + 1
        step = round(SAMPLE_RATE / WINDOWS_PER_SECOND / HOP)
        starts = list(range(0, max(1, frames - WINDOW_FRAMES + step + 1), step))
        last = starts[-1] * HOP
        if len(starts) > 1 and (len(audio) - last) / (WINDOW_FRAMES * HOP) < MIN_COVERAGE:
            starts.pop()
        padded = np.pad(audio, (0, max(0, (starts[-1] + WINDOW_FRAMES) * HOP - len(audio))))
        mel = self._mel_frames(padded)
        return [mel[s : s + WINDOW_FRAMES] for s in starts]

    def _mel_frames(self, audio: Samples) -> npt.NDArray[np.float32]:
        """Power mel spectrogram, frames centred on every hop (librosa's defaults)."""
        padded = np.pad(audio, (N_FFT // 2, N_FFT // 2))
        count = 1 + (len(padded) - N_FFT) // HOP
        index = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
        power = np.abs(np.fft.rfft(padded[index] * self._window, axis=1)) ** 2
        mel: npt.NDArray[np.float32] = (power.astype(np.float32) @ self._mel).astype(np.float32)
        return mel

    def _network(self, mels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(windows, frames, 40) mel frames → (windows, 256) unit vectors."""
        x = mels
        hidden = np.zeros((len(mels), HIDDEN), np.float32)
        for w_ih, w_hh, bias in self._layers:
            gates_in = x @ w_ih + bias  # every step's input part at once
            hidden = np.zeros((len(mels), HIDDEN), np.float32)
            cell = np.zeros_like(hidden)
            outputs = np.empty((len(mels), x.shape[1], HIDDEN), np.float32)
            for t in range(x.shape[1]):
                gates = gates_in[:, t] + hidden @ w_hh
                i, f, g, o = np.split(gates, 4, axis=1)  # torch's gate order
                cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(g)
                hidden = _sigmoid(o) * np.tanh(cell)
                outputs[:, t] = hidden
            x = outputs
        w, b = self._linear
        raw = np.maximum(hidden @ w + b, 0.0)
        norms = np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-9)
        unit: npt.NDArray[np.float32] = (raw / norms).astype(np.float32)
        return unit


def _sigmoid(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = (0.5 * (np.tanh(0.5 * x) + 1.0)).astype(np.float32)
    return out
