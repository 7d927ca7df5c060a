"""Server reflection describes every message fully, with no proto files.

This is what grpcurl and `buf curl` rely on: a client that knows nothing but
the address builds a descriptor pool from reflection alone and encodes and
decodes every request and response of every RPC with it.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from stubs import chat_pb2, task_pb2

SERVICES = {
    "agentstream.v1.ChatService": {"StreamChat", "ListModels", "ResumeStream", "CancelStream"},
    "agentstream.v1.RagService": {"IngestDocuments", "StreamAnswer", "ListDocuments", "DeleteDocument"},
    "agentstream.v1.TaskService": {"StartTask", "GetTask", "WatchTask", "CancelTask", "ListTasks"},
    "grpc.health.v1.Health": {"Check", "Watch"},
}


def reachable_messages(descriptor, seen):
    if descriptor.full_name in seen:
        return
    seen[descriptor.full_name] = descriptor
    for field in descriptor.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            reachable_messages(field.message_type, seen)


def test_every_rpc_and_every_message_it_uses_resolves_through_reflection(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(database)

    listed = set(database.get_services())
    assert set(SERVICES) <= listed, listed

    messages = {}
    for service_name, methods in SERVICES.items():
        service = pool.FindServiceByName(service_name)
        assert {m.name for m in service.methods} == methods
        for method in service.methods:
            reachable_messages(method.input_type, messages)
            reachable_messages(method.output_type, messages)

    assert "google.protobuf.Timestamp" in messages
    assert "google.protobuf.Struct" in messages  # tool schemas
    assert "agentstream.v1.StreamAnswerResponse" in messages
    # Every message can be built and round-trips through the wire format.
    for name, descriptor in messages.items():
        cls = message_factory.GetMessageClass(descriptor)
        assert cls.FromString(cls().SerializeToString()) == cls(), name


def test_reflection_alone_encodes_a_request_the_stubs_decode(channel):
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    dynamic = message_factory.GetMessageClass(pool.FindMessageTypeByName("agentstream.v1.StreamChatRequest"))
    request = dynamic()
    message = request.messages.add()
    message.role = pool.FindEnumTypeByName("agentstream.v1.Role").values_by_name["ROLE_USER"].number
    message.content = "你好"
    request.n = 2
    decoded = chat_pb2.StreamChatRequest.FromString(request.SerializeToString())
    assert decoded.messages[0].role == chat_pb2.ROLE_USER and decoded.messages[0].content == "你好" and decoded.n == 2

    event = message_factory.GetMessageClass(pool.FindMessageTypeByName("agentstream.v1.TaskEvent"))()
    event.time.seconds = 1_700_000_000
    assert task_pb2.TaskEvent.FromString(event.SerializeToString()).time.seconds == 1_700_000_000


def test_the_google_rpc_error_details_resolve_too(channel):
    # INVALID_ARGUMENT carries google.rpc.BadRequest; reflection clients can
    # decode it only if the server describes it.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    bad_request = pool.FindMessageTypeByName("google.rpc.BadRequest")
    assert bad_request.fields_by_name["field_violations"].message_type.full_name == "google.rpc.BadRequest.FieldViolation"
    assert pool.FindMessageTypeByName("google.rpc.RetryInfo").fields_by_name["retry_delay"].message_type.full_name == "google.protobuf.Duration"
