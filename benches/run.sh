#!/usr/bin/env bash
# The side-by-side run of BENCHMARKS.md: every scenario against the minimal
# tonic baseline, agentstream (over gRPC, and over SSE on its HTTP port) and
# the two Python peers, interleaved round by
# round (the machine is shared and noisy), server pinned to CPU 0 and the
# load generator to CPU 1. Results go to $OUT (JSON lines), then the report.
#
#   cargo build --release --bins && benches/peers/setup.sh
#   benches/run.sh                      # everything, 3 rounds
#   SCENARIOS="single ttft" ROUNDS=5 SERVERS="baseline agentstream" benches/run.sh
#   SERVERS="agentstream agentstream-sse fastapi-sse" benches/run.sh   # the SSE comparison
#   AGENTSTREAM_B=/tmp/agentstream-before SERVERS="agentstream agentstream-b" benches/run.sh   # A/B
#   SCENARIOS=fanout SERVERS="baseline baseline-b agentstream" benches/run.sh   # with the noise floor
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
PEERS=benches/peers
PY=$PEERS/.venv/bin/python
ROUNDS=${ROUNDS:-3}
SCENARIOS=${SCENARIOS:-single ttft fanout cancel}
SERVERS=${SERVERS:-baseline agentstream agentstream-sse grpc-aio fastapi-sse}
STREAMS=${STREAMS:-10000}
RATE=${RATE:-10}
DURATION=${DURATION:-10s}
RAMP=${RAMP:-2s}
OUT=${OUT:-/tmp/agentstream-bench-$(date +%Y%m%d-%H%M%S).jsonl}
DATA=$(mktemp -d)
DELAY_MS=$(awk "BEGIN {print 1000 / $RATE}")

# server NAME DELAY_MS -> "PORT PROTOCOL COMMAND"
server() {
  local delay=$2
  case $1 in
    baseline) echo "50061 grpc $T/agentstream-bench baseline --listen 127.0.0.1:50061 --token-delay ${delay}ms" ;;
    # The baseline again, as a second server: its ratios to the first are
    # the noise floor of a run (an A/A comparison).
    baseline-b) echo "50062 grpc $T/agentstream-bench baseline --listen 127.0.0.1:50062 --token-delay ${delay}ms" ;;
    # The HTTP port is on (as by default) but idle in the gRPC runs.
    agentstream) echo "50071 grpc $T/agentstream serve --listen 127.0.0.1:50071 --http-listen 127.0.0.1:50072 --metrics-listen 127.0.0.1:50079 --mock-token-delay ${delay}ms --data-dir $DATA" ;;
    # A/B: another agentstream binary (AGENTSTREAM_B=path), e.g. the
    # commit before a change, on its own ports, with the same flags.
    agentstream-b) echo "50073 grpc ${AGENTSTREAM_B:?set AGENTSTREAM_B to a binary} serve --listen 127.0.0.1:50073 --http-listen 127.0.0.1:50074 --metrics-listen 127.0.0.1:50078 --mock-token-delay ${delay}ms --data-dir $DATA" ;;
    agentstream-sse) echo "50072 sse $T/agentstream serve --listen 127.0.0.1:50071 --http-listen 127.0.0.1:50072 --metrics-listen 127.0.0.1:50079 --mock-token-delay ${delay}ms --data-dir $DATA" ;;
    grpc-aio) echo "50091 grpc $PY $PEERS/grpc_aio_server.py --port 50091 --token-delay-ms $delay" ;;
    fastapi-sse) echo "50092 sse $PY $PEERS/sse_server.py --port 50092 --token-delay-ms $delay" ;;
  esac
}

run() { # SCENARIO SERVER DELAY_MS ARGS...
  local scenario=$1 name=$2 delay=$3
  shift 3
  read -r port protocol command <<<"$(server "$name" "$delay")"
  echo "== round $round: $scenario / $name" >&2
  taskset -c 1 "$T/agentstream-bench" run "$scenario" --label "$name" \
    --addr "127.0.0.1:$port" --protocol "$protocol" --server-cpus 0 \
    --spawn "$command" --server-log "/tmp/agentstream-bench-$name.log" \
    --json "$OUT" "$@" || echo "!! $scenario / $name failed" >&2
}

python_peer() { [[ $1 == grpc-aio || $1 == fastapi-sse ]]; }

# 10,000 SSE streams are 10,000 connections (plus the server's side).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

for round in $(seq 1 "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    for name in $SERVERS; do
      case $scenario in
        single)
          # Python peers stream 20,000 tokens 3 times instead of 200,000 x 5
          # (same chunks/s, a tenth of the time).
          if python_peer "$name"; then
            run single "$name" 0 --tokens 20000 --repeat 3
          else
            run single "$name" 0 --tokens 200000 --repeat 5
          fi ;;
        ttft) run ttft "$name" 0 --calls 2000 ;;
        fanout)
          run fanout "$name" "$DELAY_MS" --streams "$STREAMS" --rate "$RATE" \
            --duration "$DURATION" --ramp "$RAMP" --connections 8 ;;
        cancel)
          # Needs the live-generation gauge: agentstream only.
          [[ $name == agentstream* ]] && run cancel "$name" "$DELAY_MS" \
            --streams "$STREAMS" --connections 8 --metrics 127.0.0.1:50079 ;;
      esac
    done
  done
done
rm -rf "$DATA"
echo "results: $OUT" >&2
"$T/agentstream-bench" report "$OUT"
# The SSE goals compare agentstream's SSE with FastAPI's and with its own gRPC.
if [[ " $SERVERS " == *" agentstream-sse "* ]]; then
  for base in fastapi-sse agentstream; do
    if [[ " $SERVERS " == *" $base "* ]]; then
      "$T/agentstream-bench" report --baseline "$base" "$OUT"
    fi
  done
fi
