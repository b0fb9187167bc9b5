"""Real replicas behind the load balancers we ship, on loopback: for tests/test_balancer.py and
bench/balancer.py. HAProxy runs deploy/haproxy.cfg as it is (its addresses are environment
variables); nginx runs deploy/nginx.conf with its upstream addresses rewritten, inside a
minimal main configuration."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from streaming.testing import free_port, serve_process, wait_until_healthy

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
HAPROXY_CONFIG = DEPLOY / "haproxy.cfg"
NGINX_SITE = DEPLOY / "nginx.conf"
NAMES = ("r1", "r2", "r3")  # the servers of deploy/haproxy.cfg


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Fleet:
    """Three replicas and the HAProxy in front of them."""

    replicas: dict[str, subprocess.Popen[bytes]]  # HAProxy's server name -> process
    ports: dict[str, int]
    url: str  # the balancer's /v1/stream
    stats_socket: Path

    def command(self, line: str) -> str:
        """One command on HAProxy's admin socket."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.stats_socket))
            sock.sendall(line.encode() + b"\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.decode()

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's ``show stat``, one row per proxy and server."""
        return list(csv.DictReader(io.StringIO(self.command("show stat").lstrip("# "))))

    def sessions(self) -> dict[str, int]:
        """Connections HAProxy sent to each replica so far, over both backends."""
        out = dict.fromkeys(self.replicas, 0)
        for row in self.stats():
            if row["svname"] in out:
                out[row["svname"]] += int(row["stot"])
        return out

    def set_state(self, server: str, state: str) -> None:
        """``ready``, ``drain`` or ``maint``, in both backends."""
        for backend in ("streaming", "alive"):
            answer = self.command(f"set server {backend}/{server} state {state}").strip()
            if answer:
                raise RuntimeError(answer)

    def status(self, server: str) -> str:
        """UP or DOWN (by /ready), or MAINT, DRAIN, ...: as the ``streaming`` backend sees it."""
        return next(r["status"] for r in self.stats() if r["pxname"] == "streaming" and r["svname"] == server)


def start_replicas(*flags: str) -> dict[str, tuple[int, subprocess.Popen[bytes]]]:
    """``python -m streaming serve`` three times, at once, each on a free port."""
    ports = [free_port() for _ in NAMES]
    with ThreadPoolExecutor(len(NAMES)) as pool:
        started = list(pool.map(lambda port: serve_process(port, *flags), ports))
    return dict(zip(NAMES, zip(ports, started, strict=True), strict=True))


@contextlib.contextmanager
def fleet(tmp: Path, *flags: str, check_interval: str = "200ms") -> Iterator[Fleet]:
    """Three replicas with ``flags``, HAProxy in front, every replica UP."""
    started = start_replicas(*flags)
    replicas = {name: process for name, (_, process) in started.items()}
    ports = {name: port for name, (port, _) in started.items()}
    try:
        with haproxy(ports, tmp, check_interval=check_interval) as (url, stats_socket):
            found = Fleet(replicas, ports, url, stats_socket)
            wait_for(lambda: all(found.status(n) == "UP" for n in NAMES), 10, "every replica UP")
            yield found
    finally:
        for process in replicas.values():
            process.kill()
            process.wait(timeout=30)


@contextlib.contextmanager
def haproxy(ports: dict[str, int], tmp: Path, *, check_interval: str = "200ms") -> Iterator[tuple[str, Path]]:
    """deploy/haproxy.cfg as shipped, its addresses set through its environment variables:
    ``(ws URL of /v1/stream, admin socket)``."""
    listen = free_port()
    env = {
        **os.environ,
        "LISTEN": f"127.0.0.1:{listen}",
        "HAPROXY_SOCKET": str(tmp / "stats.sock"),
        "CHECK_INTERVAL": check_interval,
        **{f"REPLICA{i}": f"127.0.0.1:{port}" for i, port in enumerate(ports.values(), 1)},
    }
    log = tmp / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["haproxy", "-db", "-f", str(HAPROXY_CONFIG)], env=env, stdout=out, stderr=out
        )
    try:
        if not wait_until_healthy(f"http://127.0.0.1:{listen}", timeout=30):
            raise RuntimeError(f"HAProxy did not come up:\n{log.read_text()}")
        yield f"ws://127.0.0.1:{listen}/v1/stream", tmp / "stats.sock"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def nginx(ports: dict[str, int], tmp: Path) -> Iterator[str]:
    """deploy/nginx.conf as shipped, in a minimal nginx.conf, its addresses set to ``ports``:
    the ``host:port`` it listens on."""
    listen = free_port()
    site = NGINX_SITE.read_text()
    site, listens = re.subn(r"listen 8080;", f"listen 127.0.0.1:{listen};", site)
    if listens != 1:
        raise RuntimeError("deploy/nginx.conf has no 'listen 8080;'")
    for i, port in enumerate(ports.values(), 1):
        site, n = re.subn(rf"server 127\.0\.0\.1:800{i} ", f"server 127.0.0.1:{port} ", site)
        if n != 1:
            raise RuntimeError(f"deploy/nginx.conf has no upstream server 127.0.0.1:800{i}")
    (tmp / "site.conf").write_text(site)
    temp_paths = " ".join(
        f"{kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp / "nginx.conf").write_text(
        f"daemon off; pid {tmp / 'nginx.pid'}; error_log {tmp / 'error.log'} info;\n"
        f"events {{}}\nhttp {{ access_log {tmp / 'access.log'}; {temp_paths}\n"
        f"include {tmp / 'site.conf'}; }}\n"
    )
    with (tmp / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(tmp / "nginx.conf")], stderr=stderr)
    try:
        if not wait_until_healthy(f"http://127.0.0.1:{listen}", timeout=30):
            raise RuntimeError(f"nginx did not come up: {(tmp / 'stderr.log').read_text()}")
        yield f"127.0.0.1:{listen}"
    finally:
        process.terminate()
        process.wait(timeout=10)
