"""The app in process, with a scripted engine and VAD: lifespan, health, routes."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from streaming.app import create_app
from streaming.config import Config
from tests.fakes import LoudnessScorer, ScriptedEngine, silence, tone


def test_healthcheck_is_503_while_the_model_loads_then_200() -> None:
    release = threading.Event()

    def slow_engine() -> ScriptedEngine:
        release.wait(timeout=10)
        return ScriptedEngine()

    app = create_app(Config(), engine_factory=slow_engine, scorer_factory=LoudnessScorer)
    with TestClient(app) as client:
        response = client.get("/healthcheck")
        assert response.status_code == 503
        assert response.json() == {"status": "loading"}
        assert client.get("/ready").status_code == 503
        with client.websocket_connect("/v1/stream") as ws:
            assert json.loads(ws.receive_text())["code"] == "not_ready"
        release.set()
        for _ in range(100):
            if client.get("/healthcheck").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/healthcheck").json() == {"status": "ok", "model": "scripted"}


def test_a_model_that_fails_to_load_is_reported() -> None:
    failures: list[BaseException] = []

    def broken() -> ScriptedEngine:
        raise OSError("no such model")

    app = create_app(Config(), engine_factory=broken, scorer_factory=LoudnessScorer, on_fatal=failures.append)
    with TestClient(app) as client:
        for _ in range(100):
            if failures:
                break
            threading.Event().wait(0.05)
        response = client.get("/healthcheck")
    assert response.status_code == 503
    assert "no such model" in response.json()["error"]
    assert isinstance(failures[0], OSError)


def test_server_full_is_refused_with_1013() -> None:
    app = create_app(Config(max_sessions=1), engine_factory=ScriptedEngine, scorer_factory=LoudnessScorer)
    with TestClient(app) as client:
        for _ in range(100):
            if client.get("/healthcheck").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/ready").json() == {
            "ready": True,
            "sessions": 0,
            "max_sessions": 1,
            "model_loaded": True,
            "draining": False,
        }
        with client.websocket_connect("/v1/stream?encoding=pcm_f32le") as first:
            assert json.loads(first.receive_text())["type"] == "ready"
            full = client.get("/ready")
            assert full.status_code == 503
            assert full.json()["sessions"] == 1
            with client.websocket_connect("/v1/stream") as second:
                message = json.loads(second.receive_text())
                assert message["code"] == "server_full"
                with pytest.raises(WebSocketDisconnect) as closed:
                    second.receive_text()
                assert closed.value.code == 1013
            audio = np.concatenate([tone(1.0), silence(0.6)]).astype("<f4").tobytes()
            first.send_bytes(audio)
            first.send_text('{"type":"end"}')
            kinds = []
            while True:
                message = json.loads(first.receive_text())
                kinds.append(message["type"])
                if message["type"] == "final":
                    break
            assert "segment" in kinds
            # A client waits for the close after the final (the test client cancels the app
            # on leaving the block, so leaving earlier would cut the server's close short).
            with pytest.raises(WebSocketDisconnect) as ended:
                first.receive_text()
            assert ended.value.code == 1000
