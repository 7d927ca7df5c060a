#!/usr/bin/env bash
# Creates benches/peers/.venv with the pinned peers and generates the Python
# gRPC stubs from proto/ into benches/peers/gen (both git-ignored).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt
mkdir -p gen
.venv/bin/python -m grpc_tools.protoc -I ../../proto --python_out=gen --grpc_python_out=gen \
  agentstream/v1/common.proto agentstream/v1/chat.proto
