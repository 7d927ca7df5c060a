#!/usr/bin/env bash
# Resident memory of an idle server, after one chat call, and after RAG is
# in use (an ingestion and a question): BENCHMARKS.md, "Idle memory".
#
#   cargo build --release --bins && benches/idle-rss.sh
#   MIMALLOC_ALLOW_THP=1 benches/idle-rss.sh   # mimalloc's own THP default
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/release/agentstream
data=$(mktemp -d)
"$bin" serve --listen 127.0.0.1:50301 --http-listen 127.0.0.1:50302 --data-dir "$data" \
  >/tmp/agentstream-idle-rss.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data"' EXIT
until curl -sf http://127.0.0.1:50302/healthz >/dev/null; do sleep 0.2; done
rss() { awk '/VmRSS/ {printf "%.1f MB", $2 / 1000}' "/proc/$server/status"; }
sleep 2
echo "idle:              $(rss)"
"$bin" chat --server 127.0.0.1:50301 "hello" >/dev/null
sleep 1
echo "after a chat call: $(rss)"
"$bin" ingest --server 127.0.0.1:50301 README.md >/dev/null
"$bin" ask --server 127.0.0.1:50301 "How do I run the tests?" >/dev/null 2>&1
sleep 1
echo "after RAG in use:  $(rss)"
