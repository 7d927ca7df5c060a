#!/usr/bin/env bash
# Task event throughput and WatchTask latency with tasks in memory and in
# Redis, side by side (BENCHMARKS.md, "Tasks on Redis"). Starts its own
# redis-server on a free loopback port (temp dir, no persistence), one
# server keeping tasks in memory and two replicas on that Redis (tasks are
# started on the first and watched through the second), then runs
# `agentstream-bench task-store` with the targets interleaved round by round.
#
#   cargo build --release --bins
#   benches/task-store.sh                 # 5 rounds
#   ROUNDS=9 TASKS=8 STEPS=10000 benches/task-store.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
ROUNDS=${ROUNDS:-5}
TASKS=${TASKS:-4}
STEPS=${STEPS:-5000}
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ ${KEEP:-} ]]; then echo "logs: $DIR" >&2; else rm -rf "$DIR"; fi
}
trap cleanup EXIT

# N distinct free ports (held together while chosen, so they differ).
free_ports() { python3 -c '
import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' "$1"; }
wait_port() { # PORT
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on $1" >&2
  return 1
}

read -r REDIS_PORT MEMORY REDIS_A REDIS_B <<<"$(free_ports 4)"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --dir "$DIR" >"$DIR/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT"

serve() { # NAME PORT ARGS...
  local name=$1 port=$2
  shift 2
  mkdir -p "$DIR/$name"
  RUST_LOG=${RUST_LOG:-info} "$T/agentstream" serve --listen "127.0.0.1:$port" --http-listen off \
    --data-dir "$DIR/$name" "$@" >"$DIR/$name.log" 2>&1 &
  PIDS+=($!)
}
serve memory "$MEMORY"
serve redis-a "$REDIS_A" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
serve redis-b "$REDIS_B" --redis-url "redis://127.0.0.1:$REDIS_PORT/"
for port in "$MEMORY" "$REDIS_A" "$REDIS_B"; do wait_port "$port"; done

"$T/agentstream-bench" task-store --rounds "$ROUNDS" --tasks "$TASKS" --steps "$STEPS" \
  --target "memory=127.0.0.1:$MEMORY" \
  --target "redis=127.0.0.1:$REDIS_A,127.0.0.1:$REDIS_B"
