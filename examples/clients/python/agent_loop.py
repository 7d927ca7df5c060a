#!/usr/bin/env python3
"""A complete agent loop over gRPC: the model calls a tool, this client runs
it, sends the result back, and the final answer streams.

    python agent_loop.py "What is the weather in Paris?"
    python agent_loop.py --model gpt-4o-mini "Weather in Paris and Tokyo?"   # an upstream model

The default model is agentstream's built-in `tools` model, which needs no
network: it calls the tools the question asks for (here `get_weather`) and
then answers from their results. Tool-call arguments arrive as fragments
(`ChatDelta.tool_calls`); this client joins them per call `index`, exactly
as it would for OpenAI's `chat.completion.chunk`. Progress goes to stderr,
the answer to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import grpc
from google.protobuf import json_format, struct_pb2

from stubs import chat_pb2, chat_pb2_grpc, common_pb2

# The tools this client offers, as JSON Schema, and their implementations.
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
    "required": ["city"],
}


def get_weather(city: str) -> str:
    """A stand-in for a real weather API: deterministic, offline."""
    return json.dumps({"city": city, "temperature_c": 18, "sky": "sunny"})


TOOLS = {"get_weather": get_weather}


def tool_definitions() -> list[chat_pb2.Tool]:
    parameters = struct_pb2.Struct()
    json_format.ParseDict(WEATHER_SCHEMA, parameters)
    return [
        chat_pb2.Tool(
            type="function",
            function=chat_pb2.FunctionDefinition(
                name="get_weather", description="Current weather of a city", parameters=parameters
            ),
        )
    ]


def run_turn(stub, request: chat_pb2.StreamChatRequest, out) -> tuple[str, list[dict], int]:
    """Streams one turn: prints content as it comes, joins tool-call
    fragments by index. Returns (text, calls, finish_reason)."""
    text: list[str] = []
    calls: dict[int, dict] = {}
    finish = common_pb2.FINISH_REASON_UNSPECIFIED
    for chunk in stub.StreamChat(request, timeout=60):
        for choice in chunk.choices:
            delta = choice.delta
            if delta.reasoning:
                print(delta.reasoning, end="", file=sys.stderr, flush=True)
            if delta.content:
                text.append(delta.content)
                print(delta.content, end="", file=out, flush=True)
            for piece in delta.tool_calls:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = call["id"] or piece.id
                call["name"] = call["name"] or piece.function.name
                call["arguments"] += piece.function.arguments
            if choice.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED:
                finish = choice.finish_reason
    return "".join(text), [calls[i] for i in sorted(calls)], finish


def agent(channel: grpc.Channel, question: str, model: str, out=sys.stdout, max_turns: int = 4) -> str:
    """Runs the loop until the model answers without calling a tool."""
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    messages = [chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content=question)]
    for _ in range(max_turns):
        request = chat_pb2.StreamChatRequest(messages=messages, model=model, tools=tool_definitions())
        text, calls, finish = run_turn(stub, request, out)
        if finish != common_pb2.FINISH_REASON_TOOL_CALLS or not calls:
            print(file=out)
            return text
        # Keep the assistant's turn, then answer each call by its id.
        messages.append(
            chat_pb2.ChatMessage(
                role=chat_pb2.ROLE_ASSISTANT,
                content=text,
                tool_calls=[
                    chat_pb2.ToolCall(
                        id=c["id"],
                        type="function",
                        function=chat_pb2.FunctionCall(name=c["name"], arguments=c["arguments"]),
                    )
                    for c in calls
                ],
            )
        )
        for call in calls:
            arguments = json.loads(call["arguments"] or "{}")
            result = TOOLS[call["name"]](**arguments)
            print(f"[tool] {call['name']}({call['arguments']}) -> {result}", file=sys.stderr)
            messages.append(chat_pb2.ChatMessage(role=chat_pb2.ROLE_TOOL, content=result, tool_call_id=call["id"]))
    raise RuntimeError(f"no answer after {max_turns} turns")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question")
    parser.add_argument("--model", default="tools")
    parser.add_argument("--server", default=os.environ.get("AGENTSTREAM_SERVER", "127.0.0.1:50051"))
    args = parser.parse_args()
    with grpc.insecure_channel(args.server) as channel:
        try:
            agent(channel, args.question, args.model)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
