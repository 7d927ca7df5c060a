"""ChatService.StreamChat from Python, through the generated stubs."""

from __future__ import annotations

import time
from collections import defaultdict

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from stubs import chat_pb2, chat_pb2_grpc, common_pb2


def request(question: str, **fields) -> chat_pb2.StreamChatRequest:
    return chat_pb2.StreamChatRequest(
        messages=[chat_pb2.ChatMessage(role=chat_pb2.ROLE_USER, content=question)], **fields
    )


def endless() -> chat_pb2.StreamChatRequest:
    """A generation that outlives any test unless it is stopped."""
    return request("go", model="synthetic", max_tokens=200_000)


@pytest.fixture
def chat(channel) -> chat_pb2_grpc.ChatServiceStub:
    return chat_pb2_grpc.ChatServiceStub(channel)


def test_chunks_share_id_created_model_and_carry_roles_finish_reasons_and_usage(chat):
    chunks = list(chat.StreamChat(request("hello", model="synthetic", n=3, max_tokens=7, include_usage=True), timeout=30))

    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-") and len(chunks[0].id) > len("chatcmpl-")
    assert len({c.created for c in chunks}) == 1
    assert abs(chunks[0].created - time.time()) < 300
    assert {c.model for c in chunks} == {"synthetic"}

    *content, last = chunks
    # The usage chunk comes last, alone, with no choices.
    assert not last.choices and last.HasField("usage")
    assert all(len(c.choices) == 1 and not c.HasField("usage") for c in content)

    by_choice = defaultdict(list)
    for c in content:
        by_choice[c.choices[0].index].append(c.choices[0])
    assert sorted(by_choice) == [0, 1, 2]
    for index, choices in by_choice.items():
        assert choices[0].delta.role == chat_pb2.ROLE_ASSISTANT, index
        assert all(c.delta.role == chat_pb2.ROLE_UNSPECIFIED for c in choices[1:]), index
        assert all(c.finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED for c in choices[:-1]), index
        # `synthetic` writes exactly max_tokens tokens and stops for LENGTH.
        assert choices[-1].finish_reason == common_pb2.FINISH_REASON_LENGTH, index
        assert "".join(c.delta.content for c in choices).strip(), index

    usage = last.usage
    assert usage.completion_tokens == 3 * 7
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_a_natural_end_finishes_with_stop_and_no_usage_unless_asked(chat):
    chunks = list(chat.StreamChat(request("hello"), timeout=30))
    assert chunks[-1].choices[0].finish_reason == common_pb2.FINISH_REASON_STOP
    assert not any(c.HasField("usage") for c in chunks)
    assert chunks[0].model == "echo"  # the server's default model


def test_chinese_text_round_trips_whole_in_every_chunk(chat):
    question = "什么是异步编程？请用中文回答，谢谢！🙂"
    chunks = list(chat.StreamChat(request(question), timeout=30))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices]
    # Every piece arrived as valid UTF-8 (protobuf would have refused to
    # decode a split character), and together they restate the question.
    assert question in "".join(pieces)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in p) for p in pieces)
    assert all("\ufffd" not in p for p in pieces)


def test_a_stop_sequence_is_never_sent(chat):
    chunks = list(chat.StreamChat(request("alpha beta gamma", stop=["beta"]), timeout=30))
    text = "".join(c.choices[0].delta.content for c in chunks if c.choices)
    assert "beta" not in text and "alpha" in text
    assert chunks[-1].choices[0].finish_reason == common_pb2.FINISH_REASON_STOP


def test_cancelling_from_the_client_stops_generation_on_the_server(chat, idle):
    call = chat.StreamChat(endless())
    for _ in range(3):
        next(call)
    open_now = idle.metrics()
    assert open_now["agentstream_active_streams"] == 1
    assert open_now["agentstream_live_generations"] == 1

    call.cancel()

    with pytest.raises(grpc.RpcError) as ended:
        for _ in call:
            pass
    assert ended.value.code() == grpc.StatusCode.CANCELLED
    after = idle.wait_for_metrics(
        lambda m: m["agentstream_active_streams"] == 0 and m["agentstream_live_generations"] == 0,
        "the cancelled stream to close",
    )
    # No token is produced once the stream is gone: a whole later call adds
    # exactly its own tokens (a generation still running would add more).
    measured = list(chat.StreamChat(request("count me", include_usage=True), timeout=30))
    assert idle.metrics()["agentstream_tokens_generated_total"] == (
        after["agentstream_tokens_generated_total"] + measured[-1].usage.completion_tokens
    )


def test_a_deadline_ends_the_stream_with_deadline_exceeded_and_stops_the_work(chat, idle):
    received = 0
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as ended:
        for _ in chat.StreamChat(endless(), timeout=0.5):
            received += 1
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert received > 0  # chunks flowed until the deadline
    assert time.monotonic() - started < 5
    idle.wait_for_metrics(
        lambda m: m["agentstream_active_streams"] == 0 and m["agentstream_live_generations"] == 0,
        "the expired stream to close",
    )


def test_invalid_arguments_carry_a_bad_request_naming_each_field(chat):
    bad = chat_pb2.StreamChatRequest(messages=[], n=99, stop=["a", "b", "c", "d", "e"])
    with pytest.raises(grpc.RpcError) as failed:
        list(chat.StreamChat(bad, timeout=10))
    error = failed.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    status = rpc_status.from_call(error)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    bad_requests = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            assert detail.Unpack(bad_request)
            bad_requests.append(bad_request)
    assert len(bad_requests) == 1
    violations = {v.field: v.description for v in bad_requests[0].field_violations}
    assert set(violations) == {"messages", "n", "stop"}
    assert all(violations.values())


def test_an_unknown_model_is_not_found(chat):
    with pytest.raises(grpc.RpcError) as failed:
        list(chat.StreamChat(request("hi", model="no-such-model"), timeout=10))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_request_id_sent_comes_back(chat):
    call = chat.StreamChat(request("hi"), timeout=30, metadata=[("x-request-id", "python-test-42")])
    list(call)
    assert dict(call.initial_metadata())["x-request-id"] == "python-test-42"
