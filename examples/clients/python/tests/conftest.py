"""Runs the real `agentstream` binary for the tests.

The fixture builds nothing. It takes the binary from AGENTSTREAM_BIN, or
else `$CARGO_TARGET_DIR/debug/agentstream` (CARGO_TARGET_DIR defaulting to
the repository's `target/`), starts it on free loopback ports with JSON
logs, learns the gRPC, HTTP and metrics addresses from its log lines, and stops it
with SIGTERM at the end, checking that it exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

import grpc
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # client.py and stubs.py

REPO = HERE.parents[3]
START_TIMEOUT = 20.0
HTTP_LISTENING = "http listening"


def server_binary() -> Path:
    if os.environ.get("AGENTSTREAM_BIN"):
        return Path(os.environ["AGENTSTREAM_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug" / "agentstream"


class Server:
    """One `agentstream serve` process on 127.0.0.1: gRPC, HTTP and metrics ports."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        binary = server_binary()
        if not binary.is_file():
            pytest.fail(f"no server binary at {binary}: run `cargo build` or set AGENTSTREAM_BIN", pytrace=False)
        # The tests choose every setting; a developer's AGENTSTREAM_* must not leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
        env["RUST_LOG"] = "info"
        self.log: list[str] = []
        self.addr: str | None = None
        self.metrics_addr: str | None = None
        self.http_addr: str | None = None
        self._ready = threading.Event()
        self.process = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--listen", "127.0.0.1:0",
                "--metrics-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0",
                "--log-format", "json",
                "--mock-token-delay", "5ms",
                "--shutdown-grace", "2s",
                "--data-dir", str(data_dir),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            encoding="utf-8",
        )
        # The reader keeps draining stderr for the server's whole life, so a
        # chatty server never blocks on a full pipe.
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT) or None in (self.addr, self.metrics_addr, self.http_addr):
            self.process.kill()
            pytest.fail("the server did not log its listening addresses:\n" + "".join(self.log[-30:]), pytrace=False)

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "agentstream listening":
                self.addr = fields["addr"]
            elif fields.get("message") == "metrics listening":
                self.metrics_addr = fields["addr"]
            elif fields.get("message") == HTTP_LISTENING:
                self.http_addr = fields["addr"]
            if self.addr and self.metrics_addr and self.http_addr:
                self._ready.set()
        self._ready.set()  # the process ended: wake the starter up

    def metrics(self) -> dict[str, float]:
        """The Prometheus samples of GET /metrics, by name."""
        with urllib.request.urlopen(f"http://{self.metrics_addr}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def wait_for_metrics(self, condition: Callable[[dict[str, float]], bool], what: str, timeout: float = 10.0) -> dict[str, float]:
        """Polls the metrics endpoint until `condition` holds; fails after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            samples = self.metrics()
            if condition(samples):
                return samples
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}; metrics: {samples}")
            time.sleep(0.01)  # polling interval, not a wait for an event

    def stop(self) -> int:
        """SIGTERM, then the exit code (killing it if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)
        return self.process.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    server = Server(tmp_path_factory.mktemp("agentstream-data"))
    yield server
    code = server.stop()
    assert code == 0, f"server exited with {code}:\n" + "".join(server.log[-30:])


@pytest.fixture(scope="session")
def channel(server: Server):
    with grpc.insecure_channel(server.addr) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        yield channel


@pytest.fixture
def idle(server: Server) -> Server:
    """The server, once no stream of an earlier test is still open."""
    server.wait_for_metrics(
        lambda m: m["agentstream_active_streams"] == 0 and m["agentstream_live_generations"] == 0,
        "no open stream",
    )
    return server
