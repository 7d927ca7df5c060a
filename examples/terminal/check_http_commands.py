#!/usr/bin/env python3
"""Runs the README's HTTP commands against a real server and checks them.

The twin of check_commands.py for the HTTP port. The commands live in one
place: README.md, between `<!-- http-commands:begin -->` and
`<!-- http-commands:end -->`. This script (standard library only):

1. starts `agentstream serve` with its HTTP port on a free loopback port
   (the binary from AGENTSTREAM_BIN, or $CARGO_TARGET_DIR/debug/agentstream);
2. runs every `curl` and `buf curl` command there in order, exactly as
   written but for the address (127.0.0.1:8080 becomes the server's),
   `TASK_ID` (the last task id a command printed) and `STREAM_ID` (the
   `x-agentstream-stream-id` of the last resumable completion), and checks each output
   by its route: the status named in the comment just above the command
   (e.g. "400"), else a success with the route's body (SSE events, NDJSON
   lines, JSON, text);
3. checks that every route of the HTTP API has at least one command.

Prints "ok ..." per command and "N passed, M failed" at the end; exits
non-zero on the first mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED_ADDR = "127.0.0.1:8080"
BEGIN, END = "<!-- http-commands:begin -->", "<!-- http-commands:end -->"
COMMAND_TIMEOUT = 30

# Every route of the HTTP API: (method, path pattern). Each needs a command.
ROUTES = {
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"), ("GET", "/v1/chat/ws"),
    ("GET", "/v1/chat/streams/{id}"), ("POST", "/v1/chat/streams/{id}/cancel"),
    ("POST", "/v1/rag/answer"), ("POST", "/v1/documents"), ("GET", "/v1/documents"),
    ("DELETE", "/v1/documents/{id}"),
    ("POST", "/v1/tasks"), ("GET", "/v1/tasks"), ("GET", "/v1/tasks/{id}"),
    ("POST", "/v1/tasks/{id}/cancel"), ("GET", "/v1/tasks/{id}/events"),
    ("GRPC-WEB", "/agentstream.v1.ChatService/StreamChat"),
}


class Mismatch(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Mismatch(what)


@dataclass
class Request:
    """What a curl command line asks for."""

    method: str
    url: str
    headers: dict[str, str]
    data: str | None
    include_headers: bool

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def accept(self) -> str:
        return self.headers.get("accept", "")

    def json(self) -> dict:
        return json.loads(self.data) if self.data else {}

    def route(self) -> tuple[str, str]:
        path = re.sub(r"^/v1/documents/[^/]+$", "/v1/documents/{id}", self.path)
        path = re.sub(r"^/v1/tasks/[^/]+(/cancel|/events)?$", r"/v1/tasks/{id}\1", path)
        path = re.sub(r"^/v1/chat/streams/[^/]+(/cancel)?$", r"/v1/chat/streams/{id}\1", path)
        return self.method, path


def parse_curl(argv: list[str]) -> Request:
    """The request of a `curl` argv (the options the README uses)."""
    method, url, headers, data, include = None, None, {}, None, False
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg in ("-X", "--request"):
            method, i = argv[i + 1], i + 1
        elif arg in ("-H", "--header"):
            name, _, value = argv[i + 1].partition(":")
            headers[name.strip().lower()] = value.strip()
            i += 1
        elif arg in ("-d", "--data", "--data-raw"):
            data, i = argv[i + 1], i + 1
        elif arg == "--max-time":
            i += 1
        elif arg in ("-i", "--include"):
            include = True
        elif arg in ("-N", "-s", "--no-buffer", "--silent"):
            pass
        elif arg.startswith("-"):
            raise Mismatch(f"an option this checker does not know: {arg}")
        else:
            url = arg
        i += 1
    expect(url is not None, "a URL")
    return Request(method or ("POST" if data is not None else "GET"), url, headers, data, include)


@dataclass
class Command:
    line: int
    text: str
    argv: list[str]
    comment: str

    @property
    def tool(self) -> str:
        return "buf" if self.argv[:2] == ["buf", "curl"] else self.argv[0]

    def expected_status(self) -> int | None:
        named = re.findall(r"\b([1-5]\d\d)\b", self.comment)
        expect(len(set(named)) <= 1, f"README line {self.line}: the comment names several statuses: {named}")
        return int(named[0]) if named else None


def read_commands(readme: Path) -> list[Command]:
    text = readme.read_text(encoding="utf-8")
    expect(text.count(BEGIN) == 1 and text.count(END) == 1, f"{readme}: expected one {BEGIN} ... {END} section")
    start = text.index(BEGIN)
    first_line = text[:start].count("\n") + 1
    commands, comment, in_code, pending, pending_line = [], [], False, "", 0
    for number, raw in enumerate(text[start:text.index(END)].splitlines(), first_line):
        line = raw.rstrip()
        if line.startswith("```"):
            in_code, comment = not in_code, []
            continue
        if not in_code:
            continue
        if not pending and line.lstrip().startswith("#"):
            comment.append(line.lstrip("# "))
            continue
        if not pending:
            pending_line = number
        pending += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        if pending.strip():
            commands.append(Command(pending_line, pending.strip(), shlex.split(pending), " ".join(comment)))
        pending, comment = "", []
    return commands


@dataclass
class Response:
    status: int | None
    headers: dict[str, str]
    body: str


def split_response(output: str, include_headers: bool) -> Response:
    if not include_headers:
        return Response(None, {}, output)
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(status, headers, body)


def sse_events(body: str) -> list[dict[str, str]]:
    """SSE events as {field: value} (data lines joined), comments skipped."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        event: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            event[name] = event[name] + "\n" + value if name in event else value
        if event:
            events.append(event)
    return events


def ndjson(body: str) -> list[dict]:
    return [json.loads(line) for line in body.splitlines() if line.strip()]


@dataclass
class State:
    task_id: str | None = None
    stream_id: str | None = None
    stream_events: int = 0


# ---- the checks, by route ----------------------------------------------------


def check_chat_chunks(chunks: list[dict], request: dict) -> None:
    expect(len(chunks) >= 2, "several chunks")
    expect(all(c["object"] == "chat.completion.chunk" for c in chunks), "chat.completion.chunk objects")
    expect(len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-"), "one chatcmpl- id")
    content = [c for c in chunks if c["choices"]]
    expect(content[0]["choices"][0]["delta"].get("role") == "assistant", "the first delta has role assistant")
    expect(content[-1]["choices"][0]["finish_reason"] in ("stop", "length"), "the last chunk has a finish_reason")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in content)
    if request.get("model", "echo") == "echo":
        question = request["messages"][-1]["content"]
        expect(question in text, f"the echo restates {question!r}: {text!r}")
    if (request.get("stream_options") or {}).get("include_usage"):
        usage = chunks[-1].get("usage")
        expect(chunks[-1]["choices"] == [] and usage, "a last chunk with usage and no choices")
        expect(usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], "usage adds up")


def tool_calls_of(chunks: list[dict]) -> list[dict]:
    """The calls of choice 0, assembled as OpenAI's SDKs do: id, type and
    name on the first delta of each index, argument fragments after."""
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for piece in choice["delta"].get("tool_calls") or []:
                if piece["index"] not in calls:
                    expect(piece.get("id") and piece.get("type") == "function", f"id and type on a call's first delta: {piece}")
                    calls[piece["index"]] = {"id": piece["id"], "name": piece["function"]["name"], "arguments": ""}
                else:
                    expect(set(piece) == {"index", "function"}, f"only index and arguments after the first delta: {piece}")
                calls[piece["index"]]["arguments"] += piece["function"].get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


def check_agent_turn(request: Request, response: Response) -> None:
    """A turn of the agent loop against the `tools` model: it calls the
    tools the question asks for, or answers from the tool results."""
    body = request.json()
    last = body["messages"][-1]
    events = sse_events(response.body)
    expect(events[-1].get("data") == "[DONE]", "data: [DONE] last")
    chunks = [json.loads(e["data"]) for e in events[:-1]]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    if last["role"] == "tool":
        expect(finish == ["stop"] and not tool_calls_of(chunks), f"an answer, no call: {finish}")
        expect(last["content"] in text, f"the answer quotes the tool's result {last['content']!r}: {text!r}")
        return
    calls = tool_calls_of(chunks)
    expect(finish == ["tool_calls"] and text == "", f"tool calls and no text: {finish} {text!r}")
    names = {t["function"]["name"] for t in body["tools"]}
    expect(calls and all(c["name"] in names and json.loads(c["arguments"]) is not None for c in calls), f"calls with JSON arguments: {calls}")


def check_chat(request: Request, response: Response, state: State) -> None:
    body = request.json()
    if body.get("tools") and body.get("stream") and not request.accept:
        check_agent_turn(request, response)
    elif not body.get("stream"):
        completion = json.loads(response.body)
        expect(completion["object"] == "chat.completion", "a chat.completion")
        n = body.get("n") or 1
        expect([c["index"] for c in completion["choices"]] == list(range(n)), f"{n} choices")
        question = body["messages"][-1]["content"]
        expect(all(question in c["message"]["content"] for c in completion["choices"]), "each choice restates the question")
        usage = completion["usage"]
        expect(usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], "usage adds up")
    elif "ndjson" in request.accept:
        lines = ndjson(response.body)
        check_chat_chunks(lines, body)
    elif "text/plain" in request.accept:
        question = body["messages"][-1]["content"]
        expect(question in response.body, f"the text restates {question!r}: {response.body!r}")
        for stop in body.get("stop") or []:
            expect(stop not in response.body, f"the text stops before {stop!r}: {response.body!r}")
        expect("data:" not in response.body, "bare text, no SSE framing")
    else:
        events = sse_events(response.body)
        expect(events[-1].get("data") == "[DONE]", "data: [DONE] last")
        check_chat_chunks([json.loads(e["data"]) for e in events[:-1]], body)
        if body.get("resumable"):
            expect(request.include_headers, "a resumable completion shows its headers (-i)")
            state.stream_id = response.headers.get("x-agentstream-stream-id")
            expect(state.stream_id and state.stream_id.startswith("stream-"), f"x-agentstream-stream-id: {response.headers}")
            ids = [int(e["id"]) for e in events[:-1]]
            expect(ids == list(range(1, len(ids) + 1)), f"id: is the sequence 1, 2, ...: {ids}")
            expect("usage" in json.loads(events[-2]["data"]), "a resumable stream ends with its usage chunk")
            state.stream_events = len(ids)


def check_resume_stream(request, response, state):
    after = int(request.headers.get("last-event-id") or parse_qs(urlsplit(request.url).query).get("after_sequence", ["0"])[0])
    events = sse_events(response.body)
    expect(events[-1].get("data") == "[DONE]", "data: [DONE] last")
    ids = [int(e["id"]) for e in events[:-1]]
    expect(ids == list(range(after + 1, state.stream_events + 1)), f"the chunks after {after}, once: {ids}")
    chunks = [json.loads(e["data"]) for e in events[:-1]]
    usage = chunks[-1].get("usage")
    expect(chunks[-1]["choices"] == [] and usage and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], "the final usage last")


def check_cancel_stream(request, response, state):
    expect(json.loads(response.body) == {}, f"{{}}: {response.body!r}")


def check_error(request: Request, response: Response, status: int) -> None:
    error = json.loads(response.body)["error"]
    expect(error.get("message"), "an error message")
    if status == 400:
        expect(error["type"] == "invalid_request_error", f"invalid_request_error: {error}")
        fields = request.json().keys() - {"messages", "model", "stream"}
        expect(error.get("param") in fields, f"param names the bad field ({sorted(fields)}): {error}")
    if status == 404 and request.path == "/v1/chat/completions":
        expect(error.get("code") == "model_not_found", f"code model_not_found: {error}")


def check_models(request, response, state):
    listed = json.loads(response.body)
    expect(listed["object"] == "list", "a list")
    ids = {m["id"] for m in listed["data"]}
    expect({"echo", "synthetic"} <= ids and all(m["object"] == "model" for m in listed["data"]), f"the built-in models: {ids}")


def check_health(request, response, state):
    expect(response.status == 200, f"200, got {response.status}")


def check_metrics(request, response, state):
    for name in ("agentstream_live_generations", "agentstream_active_streams"):
        expect(re.search(rf"^{name} \d+", response.body, re.M), f"the {name} series")


def check_websocket(request, response, state):
    expect(response.headers.get("upgrade", "").lower() == "websocket", f"upgrade: websocket: {response.headers}")


def remember_task(response: Response, state: State) -> dict:
    task = json.loads(response.body)["task"]
    expect(task["taskId"].startswith("task-"), f"a task id: {task}")
    state.task_id = task["taskId"]
    return task


def check_start_task(request, response, state):
    task = remember_task(response, state)
    expect(task["kind"] == "demo", "a demo task")


def check_ingest(request, response, state):
    task = remember_task(response, state)
    expect(task["kind"] == "ingest", "an ingestion task")
    if response.status is not None:
        expect(response.headers.get("location") == f"/v1/tasks/{task['taskId']}", f"Location: {response.headers}")


def check_get_task(request, response, state):
    expect(json.loads(response.body)["task"]["taskId"] == state.task_id, "the task asked for")


def check_list_tasks(request, response, state):
    listed = [t["taskId"] for t in json.loads(response.body).get("tasks", [])]
    expect(state.task_id in listed, "the last task is listed")


def check_cancel_task(request, response, state):
    expect(json.loads(response.body)["task"]["state"] == "TASK_STATE_CANCELLED", "the task is cancelled")


def check_task_events(request, response, state):
    after = int(request.headers.get("last-event-id") or parse_qs(urlsplit(request.url).query).get("after_sequence", ["0"])[0])
    if "ndjson" in request.accept:
        events = [line["event"] for line in ndjson(response.body)]
        ids = [e["sequence"] for e in events]
    else:
        sse = sse_events(response.body)
        expect(sse[-1].get("event") == "end" and json.loads(sse[-1]["data"]) == {}, f"event: end last: {sse[-1:]}")
        events = [json.loads(e["data"])["event"] for e in sse[:-1]]
        ids = [e["id"] for e in sse[:-1]]
        expect([e["state"].removeprefix("TASK_STATE_").lower() for e in events] == [e["event"] for e in sse[:-1]], "event: is the state")
    sequences = [int(e["sequence"]) for e in events]
    expect(sequences == list(range(after + 1, after + 1 + len(events))), f"sequences from {after + 1}: {sequences}")
    expect([int(i) for i in ids] == sequences, "id: is the sequence")
    expect(events[-1]["state"] == "TASK_STATE_SUCCEEDED", f"ends with SUCCEEDED: {events[-1]}")


def check_answer(request, response, state):
    if "ndjson" in request.accept:
        messages = ndjson(response.body)
        kinds = [next(k for k in m if k != "sequence") for m in messages]
    else:
        events = sse_events(response.body)
        messages = [json.loads(e["data"]) for e in events]
        names = [e["event"] for e in events]
        kinds = [next(k for k in m if k != "sequence") for m in messages]
        snake = [re.sub(r"[A-Z]", lambda c: "_" + c[0].lower(), k) for k in kinds]
        expect(names == snake, f"event: is the event kind: {names} vs {snake}")
        expect([e["id"] for e in events] == [m["sequence"] for m in messages], "id: is the sequence")
    expect([int(m["sequence"]) for m in messages] == list(range(1, len(messages) + 1)), "sequences 1, 2, ...")
    expect(kinds[:3] == ["retrievalStarted", "passagesRetrieved", "generationStarted"] and kinds[-1] == "done", f"event order: {kinds}")
    passages = messages[1]["passagesRetrieved"].get("passages", [])
    expect(passages and passages[0]["documentId"] == "intro", f"the ingested document is retrieved: {passages}")


def check_list_documents(request, response, state):
    ids = [d["id"] for d in json.loads(response.body).get("documents", [])]
    expect("intro" in ids, f"the ingested document is listed: {ids}")


def check_delete_document(request, response, state):
    expect(response.status == 204 and not response.body.strip(), f"204 with no body: {response.status} {response.body!r}")


CHECKS = {
    ("GET", "/healthz"): check_health,
    ("GET", "/readyz"): check_health,
    ("GET", "/metrics"): check_metrics,
    ("GET", "/v1/models"): check_models,
    ("POST", "/v1/chat/completions"): check_chat,
    ("GET", "/v1/chat/ws"): check_websocket,
    ("GET", "/v1/chat/streams/{id}"): check_resume_stream,
    ("POST", "/v1/chat/streams/{id}/cancel"): check_cancel_stream,
    ("POST", "/v1/rag/answer"): check_answer,
    ("POST", "/v1/documents"): check_ingest,
    ("GET", "/v1/documents"): check_list_documents,
    ("DELETE", "/v1/documents/{id}"): check_delete_document,
    ("POST", "/v1/tasks"): check_start_task,
    ("GET", "/v1/tasks"): check_list_tasks,
    ("GET", "/v1/tasks/{id}"): check_get_task,
    ("POST", "/v1/tasks/{id}/cancel"): check_cancel_task,
    ("GET", "/v1/tasks/{id}/events"): check_task_events,
}


def run_curl(command: Command, addr: str, state: State) -> tuple[str, str]:
    argv = [a.replace(DOCUMENTED_ADDR, addr) for a in command.argv]
    if state.task_id:
        argv = [a.replace("TASK_ID", state.task_id) for a in argv]
    if state.stream_id:
        argv = [a.replace("STREAM_ID", state.stream_id) for a in argv]
    request = parse_curl(argv)
    route = request.route()
    done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", timeout=COMMAND_TIMEOUT)
    if route == ("GET", "/v1/chat/ws"):
        # The socket stays open after the upgrade until curl's --max-time (exit 28).
        expect(done.returncode in (0, 28), f"curl exit {done.returncode}: {done.stderr}")
    else:
        expect(done.returncode == 0, f"curl exit {done.returncode}: {done.stderr}")
    response = split_response(done.stdout, request.include_headers)
    status = command.expected_status()
    if status is not None:
        expect(request.include_headers, "a command whose status is documented shows it (-i)")
        expect(response.status == status, f"status {status}, got {response.status}: {response.body[:300]}")
        if status >= 400:
            check_error(request, response, status)
            return route
    elif response.status is not None:
        expect(200 <= response.status < 300, f"a success, got {response.status}: {response.body[:300]}")
    expect(route in CHECKS, f"no check for {route}: add one to {Path(__file__).name}")
    CHECKS[route](request, response, state)
    return route


def run_buf_curl(command: Command, addr: str, state: State) -> tuple[str, str]:
    argv = [a.replace(DOCUMENTED_ADDR, addr) for a in command.argv]
    expect("--protocol" in argv and argv[argv.index("--protocol") + 1] == "grpcweb", "buf curl --protocol grpcweb")
    done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", timeout=COMMAND_TIMEOUT, cwd=REPO)
    expect(done.returncode == 0, f"buf curl exit {done.returncode}: {done.stderr}")
    decoder, messages, index, text = json.JSONDecoder(), [], 0, done.stdout
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            break
        message, index = decoder.raw_decode(text, index)
        messages.append(message)
    method = urlsplit(argv[-1]).path
    expect(method == "/agentstream.v1.ChatService/StreamChat", f"a method with a check: {method}")
    request = json.loads(argv[argv.index("-d") + 1])
    expect(len({m["id"] for m in messages}) == 1 and len(messages) >= 2, "several chunks of one completion")
    text = "".join(c["delta"].get("content", "") for m in messages for c in m.get("choices", []))
    question = request["messages"][-1]["content"]
    expect(question in text, f"the answer restates {question!r}: {text!r}")
    return "GRPC-WEB", method


class Server:
    def __init__(self, binary: Path, data_dir: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
        self.log: list[str] = []
        self.addr: str | None = None
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-format", "json",
             "--mock-token-delay", "5ms", "--shutdown-grace", "2s", "--data-dir", data_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(20) or not self.addr:
            self.process.kill()
            raise Mismatch("the server did not start:\n" + "".join(self.log[-20:]))

    def _read(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            if '"http listening"' in line:
                self.addr = json.loads(line)["fields"]["addr"]
                self.ready.set()
        self.ready.set()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def default_binary() -> Path:
    if os.environ.get("AGENTSTREAM_BIN"):
        return Path(os.environ["AGENTSTREAM_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    return (target if target.is_absolute() else REPO / target) / "debug" / "agentstream"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    parser.add_argument("--bin", type=Path, default=default_binary())
    args = parser.parse_args()

    commands = read_commands(args.readme)
    expect(all(c.tool in ("curl", "buf") for c in commands), "only curl and buf curl commands")
    expect(args.bin.is_file(), f"no server binary at {args.bin}: run `cargo build` or set AGENTSTREAM_BIN")
    passed, covered = 0, set()
    with tempfile.TemporaryDirectory(prefix="agentstream-http-") as data_dir:
        server = Server(args.bin, data_dir)
        state = State()
        try:
            for command in commands:
                try:
                    run = run_buf_curl if command.tool == "buf" else run_curl
                    route = run(command, server.addr, state)
                except (Mismatch, ValueError, KeyError, IndexError, StopIteration, subprocess.TimeoutExpired) as error:
                    raise Mismatch(f"README line {command.line}: {command.text}\n  {type(error).__name__}: {error}") from None
                covered.add(route)
                passed += 1
                print(f"ok   README line {command.line}: {' '.join(route)}")
        finally:
            code = server.stop()
        expect(code == 0, f"the server exited with {code}")
    missing = sorted(ROUTES - covered)
    expect(not missing, f"routes with no documented command: {missing}")
    passed += 1
    print(f"ok   every route has a command ({len(ROUTES)} routes)")
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as error:
        print(f"FAIL {error}", file=sys.stderr)
        print("0 passed, 1 failed")
        sys.exit(1)
