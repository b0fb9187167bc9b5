"""API keys and allowed origins, in process: every route without a key, with a wrong one, with a
right one; a page of another origin refused."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from streaming.app import create_app
from streaming.auth import RedactTokens
from streaming.config import Config
from tests.fakes import LoudnessScorer, ScriptedEngine

KEYS = ("key-one", "key-two")
FILE_KEY = "key-from-file"
GOOD_ORIGIN = "https://captions.example"
# Every route that does something, with a request that would succeed given the key.
ROUTES = [
    ("GET", "/"),
    ("GET", "/v1/info"),
    ("GET", "/metrics"),
    ("POST", "/predict"),
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# one key per line\n\n{FILE_KEY}\n")
    config = Config(api_key=KEYS, api_key_file=str(key_file), allowed_origins=(GOOD_ORIGIN,))
    app = create_app(config, engine_factory=ScriptedEngine, scorer_factory=LoudnessScorer)
    with TestClient(app) as test_client:
        for _ in range(100):
            if test_client.get("/healthcheck").status_code == 200:
                break
            threading.Event().wait(0.05)
        yield test_client


def request(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    if method == "POST":
        body = {"audio": base64.b64encode(b"not audio").decode()}
        return client.post(path, json=body, headers=headers).status_code
    return client.get(path, headers=headers).status_code


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_key(client: TestClient, method: str, path: str) -> None:
    assert request(client, method, path) == 401
    assert request(client, method, path, {"Authorization": "Bearer wrong"}) == 401
    assert request(client, method, path, {"Authorization": "Basic key-one"}) == 401
    for key in (*KEYS, FILE_KEY):
        status = request(client, method, path, {"Authorization": f"Bearer {key}"})
        # With the key the route answers as it would anyway (the POST's body is not audio).
        assert status == (422 if method == "POST" else 200), (path, key)


def test_a_refusal_says_why_in_json(client: TestClient) -> None:
    response = client.get("/v1/info")
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert "Authorization: Bearer" in error["message"]
    assert client.get("/v1/info", headers={"Authorization": "Bearer nope"}).json()["error"]["message"] == (
        "the API key is not valid"
    )


def test_a_browser_may_send_the_key_as_a_token(client: TestClient) -> None:
    assert client.get("/v1/info?token=key-two").status_code == 200
    assert client.get("/v1/info?token=wrong").status_code == 401


def test_probes_and_the_page_code_stay_open(client: TestClient) -> None:
    assert client.get("/healthcheck").status_code == 200
    assert client.get("/ready").status_code == 200  # kubelet and balancers send no key
    assert client.get("/static/app.js").status_code == 200


def test_a_websocket_without_a_valid_key_is_refused_at_the_handshake(client: TestClient) -> None:
    for url, headers in [
        ("/v1/stream", {}),
        ("/v1/stream?token=wrong", {}),
        ("/v1/stream", {"Authorization": "Bearer wrong"}),
    ]:
        with (
            pytest.raises(WebSocketDenialResponse) as refused,
            client.websocket_connect(url, headers=headers),
        ):
            pass
        assert refused.value.status_code == 401
        assert refused.value.json()["error"]["code"] == "unauthorized"
    for url, headers in [
        ("/v1/stream?token=key-one", {}),
        ("/v1/stream", {"Authorization": f"Bearer {FILE_KEY}"}),
    ]:
        with client.websocket_connect(url, headers=headers) as ws:
            assert json.loads(ws.receive_text())["type"] == "ready"
            ws.send_text('{"type":"end"}')
            assert json.loads(ws.receive_text())["type"] == "final"
            with pytest.raises(WebSocketDisconnect):
                ws.receive_text()


def test_a_page_of_another_origin_is_refused(client: TestClient) -> None:
    good = {"Origin": GOOD_ORIGIN}
    with client.websocket_connect("/v1/stream?token=key-one", headers=good) as ws:
        assert json.loads(ws.receive_text())["type"] == "ready"
        ws.send_text('{"type":"end"}')
        assert json.loads(ws.receive_text())["type"] == "final"
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()
    bad = {"Origin": "https://evil.example"}
    with (
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/v1/stream?token=key-one", headers=bad),
    ):
        pass
    assert refused.value.status_code == 403
    assert refused.value.json()["error"]["code"] == "origin_not_allowed"
    assert client.get("/v1/info?token=key-one", headers=bad).status_code == 403


def test_keys_never_reach_the_servers_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        client.get("/v1/info?token=secret-guess")
        client.get("/v1/info", headers={"Authorization": "Bearer another-guess"})
        client.get("/v1/info?token=key-one")
    # The test client logs its own requests; the server's loggers are what a deployment keeps.
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith(("streaming", "uvicorn")))
    assert "refused http /v1/info: unauthorized" in text
    for secret in ("secret-guess", "another-guess", "key-one"):
        assert secret not in text


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/stream?language=en&token=key-one&x=1", "/v1/stream?language=en&token=[redacted]&x=1"),
        (
            "/v1/stream?resume=ab12&resume_token=tok-1&token=key-one",
            "/v1/stream?resume=ab12&resume_token=[redacted]&token=[redacted]",
        ),
    ],
)
def test_the_access_log_blanks_keys_and_resume_tokens(path: str, logged: str) -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', None, None
    )
    record.args = ("127.0.0.1:5000", "GET", path, "1.1", 101)
    RedactTokens().filter(record)
    assert record.getMessage() == f'127.0.0.1:5000 - "GET {logged} HTTP/1.1" 101'


def test_an_unreadable_key_file_stops_the_start(tmp_path: Path) -> None:
    from streaming.cli import STARTUP_FAILURE, main

    missing = tmp_path / "absent.txt"
    assert main(["serve", "--api-key-file", str(missing), "--port", "0"], environ={}) == STARTUP_FAILURE


def test_info_shows_the_limits_a_stream_gets_in_ready(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {KEYS[0]}"}
    info = client.get("/v1/info", headers=headers).json()
    with client.websocket_connect("/v1/stream", headers=headers) as ws:
        ready = ws.receive_json()
        ws.send_json({"type": "end"})
        while ws.receive_json()["type"] != "final":
            pass
        # The server's close, as a client waits for it: leaving at once cancelled the handler
        # while it closed, which Starlette's test client reported as a cancelled future.
        assert ws.receive() == {"type": "websocket.close", "code": 1000, "reason": ""}
    assert ready["type"] == "ready"
    assert info["limits"] == ready["config"]["limits"]
    assert info["limits"]["max_frame_bytes"] == Config().max_frame_bytes
