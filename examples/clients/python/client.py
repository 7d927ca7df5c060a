#!/usr/bin/env python3
"""agentstream from Python: stream a chat answer, a RAG answer, task progress.

    python client.py chat "什么是异步编程？" --usage
    python client.py ingest notes.md other.txt      # index files, watch the ingestion task
    python client.py ask "When does the client see the first token?"
    python client.py watch                          # start a demo task and follow it
    python client.py watch task-5c0f...             # follow an existing task

`--server` (or AGENTSTREAM_SERVER; default 127.0.0.1:50051), before or after
the command, picks the server, written as for the agentstream CLI: HOST:PORT
or http://HOST:PORT for plaintext (a bare HOST means port 50051), and
https://HOST:PORT for TLS with the system's trusted roots. Ctrl-C cancels the
call: the server stops generating at once.
Errors print the gRPC code, the message and each field named by a
google.rpc.BadRequest detail, and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterator

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from stubs import chat_pb2, chat_pb2_grpc, common_pb2, rag_pb2, rag_pb2_grpc, task_pb2, task_pb2_grpc

def stream_chat(
    channel: grpc.Channel,
    question: str,
    *,
    model: str = "",
    max_tokens: int = 0,
    n: int = 0,
    include_usage: bool = False,
    timeout: float | None = None,
) -> Iterator[chat_pb2.StreamChatResponse]:
    """Yields the chunks of one chat completion as the server produces them."""
    request = chat_pb2.StreamChatRequest(
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content=question)],
        model=model,
        max_tokens=max_tokens,
        n=n,
        include_usage=include_usage,
    )
    yield from chat_pb2_grpc.ChatServiceStub(channel).StreamChat(request, timeout=timeout)


def stream_answer(
    channel: grpc.Channel, question: str, *, top_k: int = 0, timeout: float | None = None
) -> Iterator[rag_pb2.StreamAnswerResponse]:
    """Yields the events of one retrieval-augmented answer."""
    request = rag_pb2.StreamAnswerRequest(question=question, top_k=top_k)
    yield from rag_pb2_grpc.RagServiceStub(channel).StreamAnswer(request, timeout=timeout)


def watch_task(channel: grpc.Channel, task_id: str, after_sequence: int = 0, retries: int = 5) -> Iterator[task_pb2.TaskEvent]:
    """Yields a task's events until its terminal one.

    When the connection drops, reconnects with the last sequence seen, so no
    event is missed or repeated (up to `retries` reconnects in a row without
    a new event).
    """
    tasks = task_pb2_grpc.TaskServiceStub(channel)
    failures = 0
    while True:
        try:
            for response in tasks.WatchTask(task_pb2.WatchTaskRequest(task_id=task_id, after_sequence=after_sequence)):
                failures = 0
                after_sequence = response.event.sequence
                yield response.event
            return
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE or failures >= retries:
                raise
            failures += 1
            grpc.channel_ready_future(channel).result(timeout=5 * failures)


def describe_error(error: grpc.RpcError) -> str:
    """The code, message and BadRequest field violations of a failed call."""
    lines = [f"{error.code().name}: {error.details()}"]
    if error.code() == grpc.StatusCode.UNAVAILABLE and "connect" in (error.details() or "").lower():
        lines[0] += " (is the server running? agentstream serve)"
    status = rpc_status.from_call(error)
    for detail in status.details if status else []:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            for violation in bad_request.field_violations:
                lines.append(f"  {violation.field}: {violation.description}")
    return "\n".join(lines)


def chat(channel: grpc.Channel, args: argparse.Namespace) -> int:
    for chunk in stream_chat(
        channel,
        args.question,
        model=args.model,
        max_tokens=args.max_tokens,
        n=args.n,
        include_usage=args.usage,
        timeout=args.timeout,
    ):
        for choice in chunk.choices:
            if args.n > 1:
                # Choices interleave: one line per chunk, tagged with its choice.
                if choice.delta.content:
                    print(f"[{choice.index}] {choice.delta.content!r}", flush=True)
            else:
                print(choice.delta.content, end="", flush=True)
            if choice.finish_reason:
                reason = common_pb2.FinishReason.Name(choice.finish_reason)
                print(f"\n(choice {choice.index} finished: {reason})", file=sys.stderr)
        if chunk.HasField("usage"):
            u = chunk.usage
            print(f"(usage: prompt {u.prompt_tokens}, completion {u.completion_tokens}, total {u.total_tokens})", file=sys.stderr)
    return 0


def ask(channel: grpc.Channel, args: argparse.Namespace) -> int:
    for response in stream_answer(channel, args.question, top_k=args.top_k, timeout=args.timeout):
        event = response.WhichOneof("event")
        if event == "retrieval_started":
            print(f"(retrieving {response.retrieval_started.top_k} passages)", file=sys.stderr)
        elif event == "passages_retrieved":
            passages = response.passages_retrieved.passages
            print(f"(found {len(passages)} passages in {response.passages_retrieved.retrieval_ms} ms)", file=sys.stderr)
            for i, passage in enumerate(passages, 1):
                print(f"  [{i}] {passage.title or passage.document_id} (score {passage.score:.2f})", file=sys.stderr)
        elif event == "generation_started":
            print(f"(answering with {response.generation_started.model})", file=sys.stderr)
        elif event == "content":
            print(response.content.text, end="", flush=True)
        elif event == "done":
            done = response.done
            reason = common_pb2.FinishReason.Name(done.finish_reason)
            print(f"\n(finish: {reason}, {done.usage.completion_tokens} tokens in {done.generation_ms} ms)", file=sys.stderr)
    return 0


def ingest(channel: grpc.Channel, args: argparse.Namespace) -> int:
    documents = [
        rag_pb2.Document(id=Path(path).name, title=Path(path).stem, text=Path(path).read_text(encoding="utf-8"), source=str(path))
        for path in args.files
    ]
    task = rag_pb2_grpc.RagServiceStub(channel).IngestDocuments(rag_pb2.IngestDocumentsRequest(documents=documents)).task
    print(f"ingesting {len(documents)} documents: {task.task_id}", file=sys.stderr)
    return follow(channel, task.task_id)


def watch(channel: grpc.Channel, args: argparse.Namespace) -> int:
    task_id = args.task_id
    if not task_id:
        spec = task_pb2.DemoTaskSpec(steps=args.steps, step_delay_ms=args.delay_ms)
        task_id = task_pb2_grpc.TaskServiceStub(channel).StartTask(task_pb2.StartTaskRequest(demo=spec)).task.task_id
        print(f"started {task_id}", file=sys.stderr)
    return follow(channel, task_id, args.after)


def follow(channel: grpc.Channel, task_id: str, after_sequence: int = 0) -> int:
    last = None
    for event in watch_task(channel, task_id, after_sequence):
        state = task_pb2.TaskState.Name(event.state).removeprefix("TASK_STATE_")
        print(f"{event.sequence:6} {state:<10} {event.step}/{event.total_steps} {event.percent:5.1f}% {event.message}{' ' + event.error if event.error else ''}")
        last = event
    return 0 if last is not None and last.state == task_pb2.TASK_STATE_SUCCEEDED else 1


DEFAULT_PORT = 50051


def open_channel(server: str) -> grpc.Channel:
    """A channel to `server`: HOST[:PORT] or http:// (plaintext), https:// (TLS)."""
    scheme, sep, rest = server.partition("://")
    if not sep:
        scheme, rest = "http", server
    rest = rest.rstrip("/")
    if not rest:
        raise ValueError(f"--server {server!r} names no host; use HOST:PORT or http://HOST:PORT")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or rest.endswith("]"):
        rest = f"{rest}:{DEFAULT_PORT}"
    if scheme.lower() == "http":
        return grpc.insecure_channel(rest)
    if scheme.lower() == "https":
        return grpc.secure_channel(rest, grpc.ssl_channel_credentials())
    raise ValueError(f"--server {server!r}: unsupported scheme {scheme}://; use HOST:PORT, http:// or https://")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # --server and --timeout are accepted before the command and after it:
    # the subcommands share them with SUPPRESS defaults, so a value given
    # before the command is not overwritten by a default after it.
    def connection_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
        server_default = os.environ.get("AGENTSTREAM_SERVER", "127.0.0.1:50051") if defaults else argparse.SUPPRESS
        parser.add_argument("--server", default=server_default, help="HOST:PORT, http://HOST:PORT or https://HOST:PORT (default 127.0.0.1:50051)")
        parser.add_argument("--timeout", type=float, default=None if defaults else argparse.SUPPRESS, help="deadline of streaming calls, in seconds")

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    connection_options(parser, defaults=True)
    shared = argparse.ArgumentParser(add_help=False)
    connection_options(shared, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=lambda **kw: argparse.ArgumentParser(parents=[shared], **kw))

    p = commands.add_parser("chat", help="stream a chat answer")
    p.add_argument("question")
    p.add_argument("--model", default="")
    p.add_argument("--max-tokens", type=int, default=0)
    p.add_argument("-n", type=int, default=1)
    p.add_argument("--usage", action="store_true", help="print token usage at the end")
    p.set_defaults(run=chat)

    p = commands.add_parser("ask", help="stream a RAG answer with its events")
    p.add_argument("question")
    p.add_argument("--top-k", type=int, default=0)
    p.set_defaults(run=ask)

    p = commands.add_parser("ingest", help="index text files (id = file name) and watch the task")
    p.add_argument("files", nargs="+")
    p.set_defaults(run=ingest)

    p = commands.add_parser("watch", help="watch a task (starts a demo task when no id is given)")
    p.add_argument("task_id", nargs="?")
    p.add_argument("--after", type=int, default=0, help="resume after this sequence")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--delay-ms", type=int, default=200)
    p.set_defaults(run=watch)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        channel = open_channel(args.server)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with channel:
        try:
            return args.run(channel, args)
        except grpc.RpcError as error:
            print(f"\nerror: {describe_error(error)}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # Leaving the with-block closes the channel, which cancels the call.
            print("\ncancelled", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
