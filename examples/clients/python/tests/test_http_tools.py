"""Tool calls through the official `openai` package against agentstream's
HTTP port and its built-in `tools` model: the SDK's streaming helper
assembles and parses the calls, the plain stream's deltas accumulate as
OpenAI's do, and the agent loop example ends with the answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openai
import pytest

import agent_loop_openai

SCRIPT = Path(__file__).resolve().parents[1] / "agent_loop_openai.py"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    with openai.OpenAI(
        base_url=f"http://{server.http_addr}/v1", api_key="unused", max_retries=0, timeout=30
    ) as client:
        yield client


def test_the_stream_helper_parses_the_call_then_the_answer_streams(client, idle):
    question = "What is the weather in Zürich?"
    messages: list = [{"role": "user", "content": question}]
    with client.chat.completions.stream(model="tools", messages=messages, tools=agent_loop_openai.TOOLS) as stream:
        events = list(stream)
        completion = stream.get_final_completion()

    fragments = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    assert len(fragments) > 3, "the arguments arrive in pieces"
    [done] = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert done.name == "get_weather" and done.index == 0
    assert done.parsed_arguments == {"city": question}
    assert "".join(f.arguments_delta for f in fragments) == done.arguments
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.parsed_arguments == {"city": question}

    # The SDK's own message object goes back as the assistant turn.
    messages += [choice.message, {"role": "tool", "tool_call_id": call.id, "content": "18 °C and sunny"}]
    with client.chat.completions.stream(model="tools", messages=messages, tools=agent_loop_openai.TOOLS) as stream:
        text = "".join(e.delta for e in stream if e.type == "content.delta")
        final = stream.get_final_completion()
    assert "get_weather returned" in text and "18 °C and sunny" in text
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == text
    assert not final.choices[0].message.tool_calls


def test_plain_stream_deltas_accumulate_into_parallel_calls(client, idle):
    clock = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}
    chunks = list(
        client.chat.completions.create(
            model="tools",
            messages=[{"role": "user", "content": "weather and clock"}],
            tools=[*agent_loop_openai.TOOLS, clock],
            stream=True,
        )
    )
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for piece in chunk.choices[0].delta.tool_calls or []:
            if piece.id:
                assert piece.index not in calls and piece.type == "function"
                calls[piece.index] = {"id": piece.id, "name": piece.function.name, "arguments": ""}
            else:
                assert piece.function.name is None
            calls[piece.index]["arguments"] += piece.function.arguments or ""
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "clock"]
    assert calls[0]["arguments"] == '{"city":"weather and clock"}'
    assert calls[1]["arguments"] == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    completion = client.chat.completions.create(
        model="tools",
        messages=[{"role": "user", "content": "weather and clock"}],
        tools=[*agent_loop_openai.TOOLS, clock],
        parallel_tool_calls=False,
    )
    message = completion.choices[0].message
    assert message.content is None
    assert [c.function.name for c in message.tool_calls] == ["get_weather"]


def test_a_bad_tool_choice_raises_bad_request_naming_it(client, idle):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(
            model="tools",
            messages=[{"role": "user", "content": "hi"}],
            tools=agent_loop_openai.TOOLS,
            tool_choice={"type": "function", "function": {"name": "no_such_tool"}},
        )
    assert raised.value.param == "tool_choice.function.name"


def test_the_example_runs_the_whole_loop(server):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--base-url", f"http://{server.http_addr}/v1", "Weather in Paris?"],
        capture_output=True, text=True, encoding="utf-8", timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "[call] get_weather" in done.stderr
    assert "[tool] get_weather" in done.stderr
    assert "From the tool results: get_weather returned" in done.stdout
    assert '"temperature_c": 18' in done.stdout
