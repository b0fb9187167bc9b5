# The service on its embedded models, as a non-root container.
#
#   CPU:  podman build -t streaming:0.1.0-cpu .
#   CUDA: podman build -t streaming:0.1.0-cuda \
#             --build-arg BASE=docker.io/nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 .
#         podman run --device nvidia.com/gpu=all -e STREAMING_DEVICE=cuda ... streaming:0.1.0-cuda
#
# Any Debian or Ubuntu base with a python3 of 3.11 or newer works: CTranslate2's CUDA wheels
# need CUDA 12 and cuDNN 9 from the base, nothing else. torch is only a dependency of a
# dependency, removed after the install (below); it is installed first, as the small CPU build,
# so that pip never fetches PyPI's multi-GB CUDA one: from the PyTorch index by default;
# TORCH_SOURCE points pip elsewhere (a wheel directory mounted at build time, an internal mirror).
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"
# Behind a private index or a TLS-inspecting proxy: pip's own settings, passed as build args
# (PIP_CERT names a CA bundle mounted at build time). Unset, pip uses PyPI and its own CAs.
ARG PIP_INDEX_URL
ARG PIP_CERT
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The base's own python3 (its version differs between Debian and Ubuntu bases: not pinned).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
# torch first, from TORCH_SOURCE, so that the project's pin (torch==2.13.0) is already met; a
# layer of its own, so that a change to the code does not download it again.
# hadolint ignore=DL3059
RUN /opt/venv/bin/pip install ${TORCH_SOURCE} torch==2.13.0
COPY pyproject.toml README.md /src/
COPY streaming /src/streaming
COPY clients /src/clients
# torch is silero-vad's dependency, but the service never imports either: it runs silero's
# network on onnxruntime, from the package's data file. Leaving torch out saves 750 MB.
# The speaker model (diarize=true) is the weights file in resemblyzer's wheel: the service reads
# only that file, so the package comes without its dependencies (librosa, webrtcvad, torch).
RUN /opt/venv/bin/pip install /src \
    && /opt/venv/bin/pip install --no-deps resemblyzer==0.1.4 \
    && /opt/venv/bin/pip uninstall -y torch sympy mpmath networkx
# The embedded models, joined and verified by SHA-256 now: a corrupt download fails the build,
# and the running container writes nothing to load them.
# hadolint ignore=DL3059
RUN /opt/venv/bin/python -c "from pathlib import Path; from streaming.models import resolve_model; \
from streaming.voices import VoiceEncoder; VoiceEncoder.load(); print('verified the speaker model'); \
[print('verified', *resolve_model(m, Path('/opt/models'))) for m in ('tiny.en', 'base')]"

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /nonexistent streaming
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/models /opt/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STREAMING_HOST=0.0.0.0 \
    STREAMING_PORT=8000 \
    STREAMING_CACHE_DIR=/opt/models
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthcheck', timeout=4)"]
# Exec form: the server is PID 1 and gets SIGTERM itself, which starts its drain.
CMD ["python", "-m", "streaming", "serve"]
