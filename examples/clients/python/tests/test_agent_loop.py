"""The agent-loop example against the real server's built-in `tools` model."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import agent_loop
from stubs import chat_pb2, chat_pb2_grpc, common_pb2

SCRIPT = Path(__file__).resolve().parents[1] / "agent_loop.py"


def test_the_model_calls_the_tool_and_answers_from_its_result(channel):
    out = io.StringIO()
    answer = agent_loop.agent(channel, "What is the weather in Paris?", "tools", out=out)
    assert "get_weather" in answer
    assert '"temperature_c": 18' in answer  # the tool's result, quoted
    assert out.getvalue().strip() == answer


def test_tool_call_arguments_stream_in_fragments(channel):
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    request = chat_pb2.StreamChatRequest(
        model="tools",
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content="weather in Paris?")],
        tools=agent_loop.tool_definitions(),
    )
    pieces = [p for chunk in stub.StreamChat(request, timeout=30) for c in chunk.choices for p in c.delta.tool_calls]
    assert pieces[0].id and pieces[0].function.name == "get_weather"
    assert len(pieces) > 3
    assert "".join(p.function.arguments for p in pieces) == '{"city":"weather in Paris?"}'
    _, calls, finish = agent_loop.run_turn(stub, request, io.StringIO())
    assert finish == common_pb2.FINISH_REASON_TOOL_CALLS and calls[0]["name"] == "get_weather"


def test_the_script_prints_the_answer(server):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--server", server.addr, "Weather in Paris?"],
        capture_output=True, text=True, encoding="utf-8", timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "[tool] get_weather" in done.stderr
    assert "From the tool results: get_weather returned" in done.stdout
