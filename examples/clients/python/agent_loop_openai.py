#!/usr/bin/env python3
"""The agent loop over HTTP with the official `openai` package: the model
calls a tool, this client runs it, sends the result back, and the final
answer streams.

    python agent_loop_openai.py "What is the weather in Paris?"
    python agent_loop_openai.py --base-url http://127.0.0.1:8080/v1 --model gpt-4o-mini "Weather in Paris?"

Nothing here is agentstream-specific: it is the SDK's own streaming helper
(`client.chat.completions.stream`), which assembles the tool-call fragments
and parses each call's arguments when the call is complete. Against the
built-in `tools` model (the default) it needs no network. Progress goes to
stderr, the answer to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import openai

# The tool this client offers. `strict` lets the SDK's helper parse the
# arguments for us.
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
                "required": ["city"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]


def get_weather(city: str) -> str:
    """A stand-in for a real weather API: deterministic, offline."""
    return json.dumps({"city": city, "temperature_c": 18, "sky": "sunny"})


IMPLEMENTATIONS = {"get_weather": get_weather}


def agent(client: openai.OpenAI, question: str, model: str, out=sys.stdout, max_turns: int = 4) -> str:
    """Runs the loop until the model answers without calling a tool."""
    messages: list = [{"role": "user", "content": question}]
    for _ in range(max_turns):
        with client.chat.completions.stream(model=model, messages=messages, tools=TOOLS) as stream:
            for event in stream:
                if event.type == "content.delta":
                    print(event.delta, end="", file=out, flush=True)
                elif event.type == "tool_calls.function.arguments.done":
                    print(f"[call] {event.name}({event.arguments})", file=sys.stderr)
            completion = stream.get_final_completion()
        message = completion.choices[0].message
        if completion.choices[0].finish_reason != "tool_calls" or not message.tool_calls:
            print(file=out)
            return message.content or ""
        # Keep the assistant's turn as it came, then answer each call by id.
        messages.append(message)
        for call in message.tool_calls:
            result = IMPLEMENTATIONS[call.function.name](**call.function.parsed_arguments)
            print(f"[tool] {call.function.name} -> {result}", file=sys.stderr)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    raise RuntimeError(f"no answer after {max_turns} turns")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("question")
    parser.add_argument("--model", default="tools")
    parser.add_argument(
        "--base-url", default=os.environ.get("AGENTSTREAM_HTTP_URL", "http://127.0.0.1:8080/v1")
    )
    args = parser.parse_args()
    # agentstream without --api-keys-file checks no key; the SDK wants one.
    api_key = os.environ.get("OPENAI_API_KEY", "unused")
    with openai.OpenAI(base_url=args.base_url, api_key=api_key, max_retries=0, timeout=60) as client:
        try:
            agent(client, args.question, args.model)
        except openai.APIError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
