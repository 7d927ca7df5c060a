"""The official `openai` Python package against agentstream's HTTP port.

`base_url` points at agentstream's `/v1`: the SDK's own request building,
SSE parsing and error classes are what is tested. Where the answer is
deterministic (the built-in `echo` and `synthetic` models), the text is
compared with what the gRPC StreamChat of the same server returns, since
both protocols share one core.
"""

from __future__ import annotations

from collections import defaultdict

import openai
import pytest

from stubs import chat_pb2, chat_pb2_grpc


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    with openai.OpenAI(
        base_url=f"http://{server.http_addr}/v1",
        api_key="not-checked-when-the-server-has-no-keys",
        max_retries=0,
        timeout=30,
    ) as client:
        yield client


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def grpc_text(channel, question: str, **fields) -> dict[int, str]:
    """The text of each choice of the same request over gRPC."""
    stub = chat_pb2_grpc.ChatServiceStub(channel)
    request = chat_pb2.StreamChatRequest(
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content=question)], **fields
    )
    texts: dict[int, str] = defaultdict(str)
    for chunk in stub.StreamChat(request, timeout=30):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content
    return dict(texts)


def test_streaming_yields_openai_chunks_with_the_grpc_text(client, channel, idle):
    question = "什么是异步编程？ Tell me about streams"
    chunks = list(client.chat.completions.create(model="echo", messages=user(question), stream=True))

    assert len(chunks) > 5
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert {c.model for c in chunks} == {"echo"}
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert question in text
    assert text == grpc_text(channel, question, model="echo")[0]


def test_non_streaming_returns_one_completion_with_usage(client, channel, idle):
    question = "Say it once"
    completion = client.chat.completions.create(model="echo", messages=user(question), max_tokens=300)

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "echo"
    [choice] = completion.choices
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == grpc_text(channel, question, model="echo")[0]
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_n_choices_stream_interleaved_and_each_ends(client, channel, idle):
    chunks = list(
        client.chat.completions.create(
            model="synthetic", messages=user("go"), n=3, max_tokens=6, stream=True
        )
    )
    texts: dict[int, str] = defaultdict(str)
    finish: dict[int, str] = {}
    for chunk in chunks:
        [choice] = chunk.choices
        texts[choice.index] += choice.delta.content or ""
        if choice.finish_reason:
            assert choice.index not in finish, "one finish_reason per choice"
            finish[choice.index] = choice.finish_reason
    assert sorted(texts) == [0, 1, 2]
    assert finish == {0: "length", 1: "length", 2: "length"}
    assert texts == grpc_text(channel, "go", model="synthetic", n=3, max_tokens=6)

    completion = client.chat.completions.create(model="synthetic", messages=user("go"), n=2, max_tokens=4)
    assert [c.index for c in completion.choices] == [0, 1]
    assert all(c.finish_reason == "length" for c in completion.choices)
    assert completion.usage.completion_tokens == 2 * 4


def test_stop_sequences_end_the_text_before_them(client, idle):
    def text(**extra) -> tuple[str, str]:
        chunks = list(
            client.chat.completions.create(
                model="synthetic", messages=user("go"), max_tokens=200, stream=True, **extra
            )
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks), chunks[-1].choices[0].finish_reason

    full, full_finish = text()
    assert full_finish == "length" and " model" in full
    cut, cut_finish = text(stop=[" model", "no such text"])
    assert cut_finish == "stop"
    assert " model" not in cut
    assert full.startswith(cut + " model")
    # A single string works as well as a list.
    assert text(stop=" model") == (cut, "stop")


def test_include_usage_adds_a_last_chunk_with_usage_and_no_choices(client, idle):
    chunks = list(
        client.chat.completions.create(
            model="synthetic",
            messages=user("count"),
            max_tokens=9,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *content, last = chunks
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in content)
    assert last.usage.completion_tokens == 2 * 9
    assert last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_message_parts_and_every_role_are_accepted(client, idle):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": "really brief"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "part one, "}, {"type": "text", "text": "part two"}]},
    ]
    completion = client.chat.completions.create(model="echo", messages=messages, user="someone")
    assert "part one, part two" in completion.choices[0].message.content


def test_models_lists_the_built_in_models(client):
    ids = {model.id for model in client.models.list()}
    assert {"echo", "synthetic"} <= ids


def test_unknown_model_raises_not_found(client, idle):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=user("hi"), stream=True)
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"
    assert "no-such-model" in raised.value.message


@pytest.mark.parametrize(
    ("arguments", "param"),
    [
        ({"n": 99}, "n"),
        ({"temperature": 7.5}, "temperature"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 10**9}, "max_tokens"),
    ],
)
def test_bad_arguments_raise_bad_request_naming_the_field(client, idle, arguments, param):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="echo", messages=user("hi"), **arguments)
    assert raised.value.status_code == 400
    assert raised.value.type == "invalid_request_error"
    assert raised.value.param == param


def test_empty_messages_raise_bad_request(client, idle):
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="echo", messages=[], stream=True)
    assert raised.value.param == "messages"


def test_closing_the_stream_stops_generation(client, server, idle):
    stream = client.chat.completions.create(
        model="synthetic", messages=user("go"), max_tokens=200_000, stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    server.wait_for_metrics(lambda m: m["agentstream_live_generations"] == 1, "the generation to run")
    stream.close()
    server.wait_for_metrics(
        lambda m: m["agentstream_live_generations"] == 0 and m["agentstream_active_streams"] == 0,
        "the generation to stop after the client closed the stream",
    )
    before = server.metrics()["agentstream_tokens_generated_total"]
    # Another full call proves the counter still moves, and by exactly its tokens.
    client.chat.completions.create(model="synthetic", messages=user("go"), max_tokens=5)
    assert server.metrics()["agentstream_tokens_generated_total"] == before + 5
