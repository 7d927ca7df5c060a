"""OpenAI-style chat completion chunks over Server-Sent Events with FastAPI,
written the way the usual asyncio tutorials do it: an async generator of
`data: {json}` lines returned in a StreamingResponse, served by uvicorn.

    .venv/bin/python sse_server.py --port 50092 [--token-delay-ms 100]
"""

import argparse
import asyncio
import json
import time
import uuid

import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from synthetic import word

app = FastAPI()
DELAY = 0.0


class ChatRequest(BaseModel):
    model: str = "synthetic"
    max_tokens: int = 512
    stream: bool = True
    messages: list[dict] = []


@app.post("/v1/chat/completions")
async def completions(request: ChatRequest):
    async def events():
        chat_id = "chatcmpl-" + uuid.uuid4().hex
        created = int(time.time())
        loop = asyncio.get_running_loop()
        start = loop.time()
        for k in range(request.max_tokens):
            if DELAY:
                await asyncio.sleep(max(0.0, start + (k + 1) * DELAY - loop.time()))
            delta = {"role": "assistant", "content": word(k)} if k == 0 else {"content": word(k)}
            chunk = {
                "id": chat_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": "synthetic",
                "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n"
        last = {
            "id": chat_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": "synthetic",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
        }
        yield f"data: {json.dumps(last)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=50092)
    parser.add_argument("--token-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    DELAY = args.token_delay_ms / 1000.0
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", backlog=16384)
