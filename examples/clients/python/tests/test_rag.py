"""RagService from Python: ingest, a streamed answer with its events, list, delete."""

from __future__ import annotations

import grpc
import pytest

from client import watch_task
from stubs import common_pb2, rag_pb2, rag_pb2_grpc, task_pb2

DOCUMENTS = [
    rag_pb2.Document(
        id="py-streams",
        title="Streaming",
        text="agentstream streams tokens as they are produced, so a client sees the first token at once.",
        source="tests/streams.md",
        metadata={"lang": "en"},
    ),
    rag_pb2.Document(
        id="py-zh",
        title="流式输出",
        text="流式输出让客户端立即看到第一个词。取消请求后，服务器立即停止生成。",
        source="tests/zh.md",
    ),
]

ORDER = ["retrieval_started", "passages_retrieved", "generation_started", "content", "done"]


@pytest.fixture(scope="module")
def rag(channel) -> rag_pb2_grpc.RagServiceStub:
    rag = rag_pb2_grpc.RagServiceStub(channel)
    task = rag.IngestDocuments(rag_pb2.IngestDocumentsRequest(documents=DOCUMENTS), timeout=30).task
    assert task.kind == "ingest"
    events = list(watch_task(channel, task.task_id))
    assert events[-1].state == task_pb2.TASK_STATE_SUCCEEDED, events[-1]
    return rag


def test_an_answer_streams_its_events_in_order_and_cites_the_passages(rag):
    responses = list(rag.StreamAnswer(rag_pb2.StreamAnswerRequest(question="When does a client see the first token?", top_k=3), timeout=30))

    assert [r.sequence for r in responses] == list(range(1, len(responses) + 1))
    kinds = [r.WhichOneof("event") for r in responses]
    assert kinds[:3] == ORDER[:3] and kinds[-1] == "done"
    assert set(kinds[3:-1]) == {"content"}

    assert responses[0].retrieval_started.top_k == 3
    passages = responses[1].passages_retrieved.passages
    assert passages and passages[0].document_id == "py-streams"
    assert passages[0].title == "Streaming" and passages[0].source == "tests/streams.md"
    assert [p.score for p in passages] == sorted((p.score for p in passages), reverse=True)

    answer = "".join(r.content.text for r in responses if r.WhichOneof("event") == "content")
    assert "[1]" in answer
    done = responses[-1].done
    assert done.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)
    assert done.usage.completion_tokens > 0


def test_a_chinese_question_finds_the_chinese_passage(rag):
    responses = list(rag.StreamAnswer(rag_pb2.StreamAnswerRequest(question="客户端什么时候看到第一个词？"), timeout=30))
    passages = responses[1].passages_retrieved.passages
    assert passages and passages[0].document_id == "py-zh"
    assert "第一个词" in passages[0].text


def test_documents_are_listed_and_deleted(rag):
    listed = rag.ListDocuments(rag_pb2.ListDocumentsRequest(page_size=1000), timeout=10)
    info = {d.id: d for d in listed.documents}
    assert {"py-streams", "py-zh"} <= set(info)
    assert info["py-zh"].size_bytes == len(DOCUMENTS[1].text.encode())
    assert info["py-streams"].metadata["lang"] == "en"
    assert info["py-streams"].ingest_time.seconds > 0

    rag.DeleteDocument(rag_pb2.DeleteDocumentRequest(document_id="py-zh"), timeout=10)
    with pytest.raises(grpc.RpcError) as failed:
        rag.DeleteDocument(rag_pb2.DeleteDocumentRequest(document_id="py-zh"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
