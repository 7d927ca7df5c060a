"""ChatService.StreamChat with Python grpc.aio, written the usual way: the
generated servicer, an async generator yielding protobuf messages.

    .venv/bin/python grpc_aio_server.py --port 50091 [--token-delay-ms 100]
"""

import argparse
import asyncio
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "gen"))

import grpc  # noqa: E402
from agentstream.v1 import chat_pb2, chat_pb2_grpc, common_pb2  # noqa: E402

from synthetic import word  # noqa: E402


class ChatService(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, delay: float):
        self.delay = delay

    async def StreamChat(self, request, context):
        max_tokens = request.max_tokens or 512
        chat_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(max_tokens):
            if self.delay:
                # Token k is due at start + (k + 1) x delay, like agentstream.
                await asyncio.sleep(max(0.0, start + (k + 1) * self.delay - loop.time()))
            yield chat_pb2.StreamChatResponse(
                id=chat_id,
                created=created,
                model="synthetic",
                choices=[
                    chat_pb2.ChatChoice(
                        index=0,
                        delta=chat_pb2.ChatDelta(
                            role=chat_pb2.ROLE_ASSISTANT if k == 0 else 0,
                            content=word(k),
                        ),
                    )
                ],
            )
        yield chat_pb2.StreamChatResponse(
            id=chat_id,
            created=created,
            model="synthetic",
            choices=[
                chat_pb2.ChatChoice(
                    index=0,
                    delta=chat_pb2.ChatDelta(),
                    finish_reason=common_pb2.FINISH_REASON_LENGTH,
                )
            ],
        )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50091)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    server = grpc.aio.server()
    chat_pb2_grpc.add_ChatServiceServicer_to_server(
        ChatService(args.token_delay_ms / 1000.0), server
    )
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"grpc.aio listening on 127.0.0.1:{args.port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
