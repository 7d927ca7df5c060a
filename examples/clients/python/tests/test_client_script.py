"""The example script itself works against the real server."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "client.py"


def run(server, *args: str) -> subprocess.CompletedProcess:
    return script("--server", server.addr, *args)


def script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def test_chat_prints_the_answer_and_usage(server):
    done = run(server, "chat", "什么是异步编程？", "--usage")
    assert done.returncode == 0, done.stderr
    assert "什么是异步编程？" in done.stdout
    assert "FINISH_REASON_STOP" in done.stderr and "usage: prompt" in done.stderr


def test_watch_starts_a_demo_task_and_follows_it_to_success(server):
    done = run(server, "watch", "--steps", "3", "--delay-ms", "10")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "PENDING" in lines[0] and "SUCCEEDED" in lines[-1]


def test_ask_ingest_and_ask_print_events_and_the_answer(server, tmp_path):
    note = tmp_path / "cancellation.md"
    note.write_text("Cancelling a call stops generation on the server at once.", encoding="utf-8")
    ingested = run(server, "ingest", str(note))
    assert ingested.returncode == 0, ingested.stderr
    assert "SUCCEEDED" in ingested.stdout

    done = run(server, "ask", "What does cancelling a call do?")
    assert done.returncode == 0, done.stderr
    assert "[1] cancellation" in done.stderr  # the passage list
    assert "[1]" in done.stdout  # the cited answer
    assert "finish: FINISH_REASON_" in done.stderr


def test_errors_print_the_code_and_the_bad_request_fields(server):
    done = run(server, "chat", "hi", "-n", "99")
    assert done.returncode == 1
    assert "INVALID_ARGUMENT" in done.stderr
    assert "  n: " in done.stderr


def test_server_is_accepted_after_the_command_and_with_http(server):
    done = script("chat", "你好", "--server", f"http://{server.addr}")
    assert done.returncode == 0, done.stderr
    assert "你好" in done.stdout


def test_a_server_that_is_not_running_gets_a_hint():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    done = script("chat", "hi", "--server", closed, "--timeout", "5")
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr
    assert "is the server running? agentstream serve" in done.stderr


def test_other_schemes_are_refused():
    done = script("chat", "hi", "--server", "grpc://127.0.0.1:1")
    assert done.returncode == 2
    assert "unsupported scheme" in done.stderr
