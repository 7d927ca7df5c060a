#!/usr/bin/env python3
"""Runs the README's terminal commands against a real server and checks them.

The commands live in one place: README.md, between the
`<!-- terminal-commands:begin -->` and `<!-- terminal-commands:end -->`
markers. This script (standard library only):

1. starts `agentstream serve` on a free loopback port (the binary from
   AGENTSTREAM_BIN, or $CARGO_TARGET_DIR/debug/agentstream, or target/debug);
2. runs every `buf curl` command there in order, with the documented
   address replaced by the server's, `TASK_ID` by the last task id a
   StartTask or IngestDocuments printed and `STREAM_ID` by the last stream
   id a resumable StreamChat printed, and checks each output: the
   response messages of that RPC, or the error status named by the comment
   just above the command (e.g. "INVALID_ARGUMENT");
3. checks that every RPC the server lists is documented, and that each
   grpcurl command sends the same request to the same method as a buf curl
   command (grpcurl itself is not installed in CI).

Exits non-zero on the first mismatch; prints "N passed, 0 failed" at the end.
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

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED_ADDR = "127.0.0.1:50051"
BEGIN, END = "<!-- terminal-commands:begin -->", "<!-- terminal-commands:end -->"
CODES = [
    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
]  # in the order of their numbers, 1 to 16
COMMAND_TIMEOUT = 30


class Mismatch(Exception):
    pass


@dataclass
class Command:
    line: int
    text: str
    argv: list[str]
    comment: str  # the comment lines just above it

    @property
    def tool(self) -> str:
        return "buf" if self.argv[:2] == ["buf", "curl"] else self.argv[0]

    def data(self) -> dict | None:
        for flag in ("-d", "--data"):
            if flag in self.argv:
                return json.loads(self.argv[self.argv.index(flag) + 1])
        return None

    def method(self) -> str | None:
        """service/Method, e.g. agentstream.v1.ChatService/StreamChat."""
        if self.tool == "buf":
            url = self.argv[-1]
            prefix = f"http://{DOCUMENTED_ADDR}/"
            return url[len(prefix):] if url.startswith(prefix) and url != prefix else None
        last = self.argv[-1]
        return last if "/" in last else None

    def expected_error(self) -> str | None:
        named = [code for code in CODES if re.search(rf"\b{code}\b", self.comment)]
        if len(named) > 1:
            raise Mismatch(f"README line {self.line}: the comment names several codes: {named}")
        return named[0] if named else None


def read_commands(readme: Path) -> list[Command]:
    text = readme.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise Mismatch(f"{readme}: expected one {BEGIN} ... {END} section")
    start = text.index(BEGIN)
    first_line = text[:start].count("\n") + 1
    section = text[start:text.index(END)]
    commands, comment, in_code, pending, pending_line = [], [], False, "", 0
    for number, raw in enumerate(section.splitlines(), first_line):
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


def parse_messages(text: str) -> list[dict]:
    """buf curl prints each message as an indented JSON document, one after another."""
    decoder, messages, index = json.JSONDecoder(), [], 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index == len(text):
            return messages
        message, index = decoder.raw_decode(text, index)
        messages.append(message)


@dataclass
class State:
    task_id: str | None = None
    task_ids: list[str] = field(default_factory=list)
    stream_id: str | None = None
    stream_chunks: int = 0
    methods: set[str] = field(default_factory=set)


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Mismatch(what)


def check_stream_chat(request, messages, state):
    expect(len(messages) >= 2, "several chunks")
    expect(len({m["id"] for m in messages}) == 1 and messages[0]["id"].startswith("chatcmpl-"), "one chatcmpl- id")
    expect([int(m["sequence"]) for m in messages] == list(range(1, len(messages) + 1)), "sequences 1, 2, ...")
    stream_ids = {m.get("streamId", "") for m in messages}
    if request.get("resumable"):
        expect(len(stream_ids) == 1 and messages[0]["streamId"].startswith("stream-"), f"one stream id: {stream_ids}")
        expect("usage" in messages[-1], "a resumable stream ends with its usage")
        state.stream_id, state.stream_chunks = messages[0]["streamId"], len(messages)
    else:
        expect(stream_ids == {""}, "no stream id unless resumable")
    if request.get("tools"):
        check_tool_calls(request, messages)
        return
    chunks = [m for m in messages if m.get("choices")]
    n = request.get("n") or 1
    for index in range(n):
        choices = [c for m in chunks for c in m["choices"] if c.get("index", 0) == index]
        expect(choices and choices[0]["delta"].get("role") == "ROLE_ASSISTANT", f"choice {index} starts with ROLE_ASSISTANT")
        expect(choices[-1].get("finishReason") in ("FINISH_REASON_STOP", "FINISH_REASON_LENGTH"), f"choice {index} has a finish reason")
        text = "".join(c["delta"].get("content", "") for c in choices)
        question = request["messages"][-1]["content"]
        expect(question in text, f"choice {index} restates {question!r} whole: {text!r}")
    if request.get("include_usage"):
        usage = messages[-1].get("usage")
        expect(usage is not None and "choices" not in messages[-1], "a final usage chunk")
        expect(usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"], "usage adds up")


def check_tool_calls(request, messages):
    pieces = [p for m in messages for c in m.get("choices", []) for p in c.get("delta", {}).get("toolCalls", [])]
    expect(len(pieces) > 2, f"tool-call arguments in fragments: {pieces}")
    first = pieces[0]
    expect(first.get("id", "").startswith("call_") and first.get("function", {}).get("name") == "get_weather", f"the first piece names the call: {first}")
    arguments = json.loads("".join(p.get("function", {}).get("arguments", "") for p in pieces))
    expect(set(arguments) == {"city"}, f"the arguments follow the schema: {arguments}")
    finish = [c.get("finishReason") for m in messages for c in m.get("choices", []) if c.get("finishReason")]
    expect(finish == ["FINISH_REASON_TOOL_CALLS"], f"finish TOOL_CALLS: {finish}")


def check_resume_stream(request, messages, state):
    after = int(request.get("after_sequence", 0))
    sequences = [int(m["sequence"]) for m in messages]
    expect(sequences == list(range(after + 1, state.stream_chunks + 1)), f"the chunks after {after}, once: {sequences}")
    expect(all(m["streamId"] == state.stream_id for m in messages), "chunks of the stream")
    usage = messages[-1].get("usage")
    expect(usage is not None and usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"], "the final usage last")


def check_cancel_stream(request, messages, state):
    expect(messages == [{}], "an empty response")


def check_list_models(request, messages, state):
    models = {m["id"]: m for m in messages[0]["models"]}
    expect({"echo", "synthetic", "tools"} <= set(models), f"the built-in models: {list(models)}")
    expect(all(m["ownedBy"] == "agentstream" for m in models.values()), "owned by agentstream")


def check_start_task(request, messages, state):
    task = messages[0]["task"]
    expect(task["taskId"].startswith("task-") and task["kind"] == "demo", "a demo task")
    state.task_id = task["taskId"]
    state.task_ids.append(task["taskId"])


def check_get_task(request, messages, state):
    expect(messages[0]["task"]["taskId"] == state.task_id, "the task asked for")


def check_watch_task(request, messages, state):
    events = [m["event"] for m in messages]
    sequences = [int(e["sequence"]) for e in events]
    after = int(request.get("after_sequence", 0))
    expect(sequences == list(range(after + 1, after + 1 + len(events))), f"sequences {after + 1}, {after + 2}, ...: {sequences}")
    expect(all(e["taskId"] == state.task_id for e in events), "events of the task")
    expect(events[-1]["state"] == "TASK_STATE_SUCCEEDED", f"ends with SUCCEEDED: {events[-1]}")


def check_cancel_task(request, messages, state):
    expect(messages[0]["task"]["state"] == "TASK_STATE_CANCELLED", "the task is cancelled")


def check_list_tasks(request, messages, state):
    listed = [t["taskId"] for t in messages[0].get("tasks", [])]
    expect(state.task_id in listed, "the started task is listed")


def check_ingest(request, messages, state):
    task = messages[0]["task"]
    expect(task["kind"] == "ingest", "an ingestion task")
    state.task_id = task["taskId"]


def check_stream_answer(request, messages, state):
    expect([int(m["sequence"]) for m in messages] == list(range(1, len(messages) + 1)), "sequences 1, 2, ...")
    kinds = [next(k for k in m if k != "sequence") for m in messages]
    expect(kinds[:3] == ["retrievalStarted", "passagesRetrieved", "generationStarted"] and kinds[-1] == "done", f"event order: {kinds}")
    expect(set(kinds[3:-1]) <= {"content"}, "content between generation_started and done")
    passages = messages[1]["passagesRetrieved"].get("passages", [])
    expect(passages and passages[0]["documentId"] == "intro", "the ingested document is retrieved")


def check_list_documents(request, messages, state):
    ids = [d["id"] for d in messages[0].get("documents", [])]
    expect("intro" in ids, f"the ingested document is listed: {ids}")


def check_delete_document(request, messages, state):
    expect(messages == [{}], "an empty response")


def check_health_check(request, messages, state):
    expect(messages == [{"status": "SERVING"}], "SERVING")


def check_health_watch(request, messages, state):
    expect(messages and messages[0] == {"status": "SERVING"}, "SERVING first")


CHECKS = {
    "agentstream.v1.ChatService/StreamChat": check_stream_chat,
    "agentstream.v1.ChatService/ListModels": check_list_models,
    "agentstream.v1.ChatService/ResumeStream": check_resume_stream,
    "agentstream.v1.ChatService/CancelStream": check_cancel_stream,
    "agentstream.v1.TaskService/StartTask": check_start_task,
    "agentstream.v1.TaskService/GetTask": check_get_task,
    "agentstream.v1.TaskService/WatchTask": check_watch_task,
    "agentstream.v1.TaskService/CancelTask": check_cancel_task,
    "agentstream.v1.TaskService/ListTasks": check_list_tasks,
    "agentstream.v1.RagService/IngestDocuments": check_ingest,
    "agentstream.v1.RagService/StreamAnswer": check_stream_answer,
    "agentstream.v1.RagService/ListDocuments": check_list_documents,
    "agentstream.v1.RagService/DeleteDocument": check_delete_document,
    "grpc.health.v1.Health/Check": check_health_check,
    "grpc.health.v1.Health/Watch": check_health_watch,
}
# Documented as the way to discover methods, not as calls of their own.
NOT_CALLED = {"grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}


def run_buf_curl(command: Command, addr: str, state: State) -> None:
    argv = [a.replace(DOCUMENTED_ADDR, addr) for a in command.argv]
    if state.task_id:
        argv = [a.replace("TASK_ID", state.task_id) for a in argv]
    if state.stream_id:
        argv = [a.replace("STREAM_ID", state.stream_id) for a in argv]
    done = subprocess.run(argv, capture_output=True, text=True, encoding="utf-8", timeout=COMMAND_TIMEOUT)
    method = command.method()
    if method is None:  # --list-methods
        expect("--list-methods" in argv and done.returncode == 0, f"exit 0: {done.stderr}")
        state.methods = set(done.stdout.split())
        return
    expected_error = command.expected_error()
    if expected_error:
        status = json.loads(done.stderr[done.stderr.index("{"):]) if "{" in done.stderr else {}
        expect(done.returncode == 8 * (CODES.index(expected_error) + 1), f"exit code for {expected_error}: {done.returncode}; {done.stderr}")
        expect(status.get("code") == expected_error.lower(), f"status {expected_error}: {done.stderr}")
        if expected_error == "INVALID_ARGUMENT":
            details = [d["type"] for d in status.get("details", [])]
            expect(details == ["google.rpc.BadRequest"], f"a BadRequest detail: {details}")
        if method != "grpc.health.v1.Health/Watch":
            return
    else:
        expect(done.returncode == 0, f"exit 0, got {done.returncode}: {done.stderr}")
    if method not in CHECKS:
        raise Mismatch(f"no check for {method}: add one to {Path(__file__).name}")
    CHECKS[method](command.data() or {}, parse_messages(done.stdout), state)


def check_grpcurl_twins(commands: list[Command]) -> None:
    """Each grpcurl command calls what a buf curl command calls, and vice versa."""
    def key(c: Command):
        return (c.method(), json.dumps(c.data(), sort_keys=True))

    buf = {key(c) for c in commands if c.tool == "buf" and c.method()}
    grpcurl = [c for c in commands if c.tool == "grpcurl"]
    for c in grpcurl:
        expect("-plaintext" in c.argv and DOCUMENTED_ADDR in c.argv, f"README line {c.line}: grpcurl -plaintext {DOCUMENTED_ADDR}")
        if c.method():
            expect(key(c) in buf, f"README line {c.line}: no buf curl command sends this request: {c.text}")
    documented = {key(c) for c in grpcurl if c.method()}
    for missing in buf - documented:
        raise Mismatch(f"no grpcurl command for {missing}")


class Server:
    def __init__(self, binary: Path, data_dir: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTSTREAM_")}
        self.log: list[str] = []
        self.addr: str | None = None
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [str(binary), "serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--log-format", "json", "--mock-token-delay", "5ms", "--shutdown-grace", "2s", "--data-dir", data_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(20) or not self.addr:
            self.process.kill()
            raise Mismatch("the server did not start:\n" + "".join(self.log[-20:]))

    def _read(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            if '"agentstream listening"' in line:
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
    buf_commands = [c for c in commands if c.tool == "buf"]
    passed = 0
    check_grpcurl_twins(commands)
    passed += 1
    print(f"ok   every grpcurl command has a buf curl twin ({len(commands) - len(buf_commands)} grpcurl commands)")

    if not args.bin.is_file():
        raise Mismatch(f"no server binary at {args.bin}: run `cargo build` or set AGENTSTREAM_BIN")
    with tempfile.TemporaryDirectory(prefix="agentstream-terminal-") as data_dir:
        server = Server(args.bin, data_dir)
        state = State()
        try:
            for command in buf_commands:
                try:
                    run_buf_curl(command, server.addr, state)
                except (Mismatch, ValueError, KeyError, IndexError, StopIteration, subprocess.TimeoutExpired) as error:
                    raise Mismatch(f"README line {command.line}: {command.text}\n  {type(error).__name__}: {error}") from None
                passed += 1
                print(f"ok   README line {command.line}: buf curl {command.method() or '--list-methods'}")
        finally:
            code = server.stop()
        expect(code == 0, f"the server exited with {code}")

    called = {c.method() for c in buf_commands if c.method()}
    expect(bool(state.methods), "a --list-methods command")
    missing = sorted(state.methods - called - NOT_CALLED)
    expect(not missing, f"RPCs with no documented buf curl command: {missing}")
    passed += 1
    print(f"ok   every RPC the server lists is documented ({len(state.methods)} methods)")
    print(f"{passed} passed, 0 failed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Mismatch as error:
        print(f"FAIL {error}", file=sys.stderr)
        print("0 passed, 1 failed")
        sys.exit(1)
