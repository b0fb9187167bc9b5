"""Model weights are verified by SHA-256; a bad model stops the start with a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streaming.cli import STARTUP_FAILURE, main
from streaming.errors import ChecksumMismatch, ModelError
from streaming.models import EMBEDDED, EmbeddedModel, prepare_embedded, resolve_model, verify


def test_the_default_model_verifies() -> None:
    path, name = resolve_model("tiny.en")
    assert name == "tiny.en"
    assert (Path(path) / "model.bin").is_file()


def test_base_is_joined_once_and_verified(tmp_path: Path) -> None:
    directory = prepare_embedded(EMBEDDED["base"], tmp_path)
    joined = directory / "model.bin"
    assert joined.stat().st_size == 2 * 72608766
    before = joined.stat().st_mtime_ns
    prepare_embedded(EMBEDDED["base"], tmp_path)
    assert joined.stat().st_mtime_ns == before  # not joined again


def test_a_corrupt_file_is_a_checksum_mismatch(tmp_path: Path) -> None:
    source = Path(resolve_model("tiny.en")[0]) / "config.json"
    copy = tmp_path / "config.json"
    shutil.copy(source, copy)
    verify(copy, EMBEDDED["tiny.en"].sha256["config.json"])
    copy.write_bytes(copy.read_bytes() + b" ")
    with pytest.raises(ChecksumMismatch, match="corrupt or was replaced"):
        verify(copy, EMBEDDED["tiny.en"].sha256["config.json"])


def test_a_corrupt_joined_model_is_refused(tmp_path: Path) -> None:
    model = EMBEDDED["base"]
    wrong = EmbeddedModel(model.name, model.packages, model.data_dir, {**model.sha256, "model.bin": "0" * 64})
    with pytest.raises(ChecksumMismatch):
        prepare_embedded(wrong, tmp_path)


def test_a_directory_without_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"missing model\.bin"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere"))


def test_serve_exits_with_startup_failure_on_a_bad_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--model", str(tmp_path), "--port", "0"], environ={}) == STARTUP_FAILURE
