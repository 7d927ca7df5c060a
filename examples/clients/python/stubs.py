"""The agentstream Python stubs, generated from the repository's proto/ files.

Nothing generated is committed: on import this module runs grpcio-tools'
protoc over ../../../proto into ./generated (git-ignored), unless that
directory already holds stubs of the same proto files made by the same
grpcio-tools version, and then imports them. Run `python stubs.py` to
(re)generate by hand.

    from stubs import chat_pb2, chat_pb2_grpc
"""

from __future__ import annotations

import hashlib
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[2] / "proto"
OUT = HERE / "generated"
STAMP = OUT / ".stamp"


def _proto_files() -> list[str]:
    files = sorted(p.relative_to(PROTO_ROOT).as_posix() for p in (PROTO_ROOT / "agentstream").rglob("*.proto"))
    if not files:
        raise RuntimeError(f"no .proto files under {PROTO_ROOT / 'agentstream'}")
    return files


def _fingerprint(files: list[str]) -> str:
    digest = hashlib.sha256(getattr(grpc_tools, "__version__", "?").encode())
    digest.update(protoc.__file__.encode())
    for name in files:
        digest.update(name.encode() + b"\0" + (PROTO_ROOT / name).read_bytes())
    return digest.hexdigest()


def generate(force: bool = False) -> Path:
    """Generates the stubs into ./generated when they are missing or stale."""
    files = _proto_files()
    fingerprint = _fingerprint(files)
    if not force and STAMP.is_file() and STAMP.read_text() == fingerprint:
        return OUT
    # google/protobuf/*.proto ship inside grpcio-tools.
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # Generate beside OUT and swap it in, so a failed run leaves no half tree.
    tmp = Path(tempfile.mkdtemp(prefix=".generated-", dir=OUT.parent))
    try:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *files,
            ]
        )
        if status != 0:
            raise RuntimeError(f"grpc_tools.protoc failed with status {status}")
        (tmp / ".stamp").write_text(fingerprint)
        shutil.rmtree(OUT, ignore_errors=True)
        tmp.rename(OUT)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return OUT


generate()
if str(OUT) not in sys.path:
    sys.path.insert(0, str(OUT))

from agentstream.v1 import (  # noqa: E402  (importable only once generated)
    chat_pb2,
    chat_pb2_grpc,
    common_pb2,
    rag_pb2,
    rag_pb2_grpc,
    task_pb2,
    task_pb2_grpc,
)

__all__ = [
    "chat_pb2",
    "chat_pb2_grpc",
    "common_pb2",
    "rag_pb2",
    "rag_pb2_grpc",
    "task_pb2",
    "task_pb2_grpc",
    "generate",
]

if __name__ == "__main__":
    print(generate(force=True))
