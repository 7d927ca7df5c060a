#!/usr/bin/env bash
# Instruction counts per chunk, repeatable on a noisy machine: runs a server
# under callgrind, streams 10,000 (warm-up) + 100,000 tokens through it with
# the `single` scenario, stops it with SIGTERM and prints the instructions
# spent producing response bodies (tonic's EncodeBody::poll_frame, inclusive:
# the service's stream, prost encoding, tonic framing) per chunk, and the
# instructions of the runtime's threads (everything but start-up: body,
# HTTP/2, timers, I/O) per chunk, and the whole process's instructions per
# chunk (start-up included, e.g. loading the tokenizer).
#
#   benches/callgrind.sh LABEL PORT SERVER-COMMAND...
# e.g.
#   benches/callgrind.sh agentstream 50081 target/release/agentstream serve \
#       --listen 127.0.0.1:50081 --mock-token-delay 0 --data-dir /tmp/asb
#   benches/callgrind.sh baseline 50082 target/release/agentstream-bench \
#       baseline --listen 127.0.0.1:50082
#
# TTFT=1 measures 2,020 one-token calls (figures are then per chunk, two
# chunks a call). PACED=1 measures the paced path instead (start the server with a 100 ms
# token delay): 200 streams x 50 tokens at 10 tokens/s, where every chunk
# is a timer wake-up of its own.
set -euo pipefail
label=$1 port=$2
shift 2
bench=${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/agentstream-bench}
out=/tmp/callgrind.$label.$$.out
taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >"/tmp/callgrind.$label.log" 2>&1 &
server=$!
for _ in $(seq 1 240); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.5
done
if [[ ${TTFT:-} == 1 ]]; then
  taskset -c 1 "$bench" run ttft --label "$label" --addr "127.0.0.1:$port" --calls 2000 >/dev/null
  chunks=$((2020 * 2)) # 20 warm-up and 2,000 measured calls of 2 chunks
elif [[ ${PACED:-} == 1 ]]; then
  taskset -c 1 "$bench" run fanout --label "$label" --addr "127.0.0.1:$port" --streams 200 \
    --rate 10 --duration 5s --ramp 1s --connections 2 >/dev/null
  chunks=$((200 * 51))
else
  taskset -c 1 "$bench" run single --label "$label" --addr "127.0.0.1:$port" --tokens 100000 --repeat 1 >/dev/null
  chunks=110002 # 10,000 + 1 warm-up and 100,000 + 1 measured messages
fi
kill -TERM "$server"
wait "$server" || true
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
annotated=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null)
first() { awk -v pattern="$1" '$0 ~ pattern {gsub(",", "", $1); if (!n++) print $1}' <<<"$annotated"; }
# tonic's EncodeBody is inlined into its boxed Body in some builds.
body=$(first 'EncodeBody<T,U> as http_body::Body>::poll_frame \\[')
body=${body:-$(first 'tonic::body::Body as http_body::Body>::poll_frame \\[')}
threads=$(first 'pthread_create.c:start_thread')
# The async workers alone: what serving costs, without blocking-pool work
# such as the tokenizer's one-time load.
workers=$(first 'multi_thread::worker::run \\[')
echo "$label: body Ir/chunk $((${body:-0} / chunks)), async workers Ir/chunk $((${workers:-0} / chunks)), runtime threads Ir/chunk $((threads / chunks)), process Ir/chunk $((total / chunks)) ($out)"
