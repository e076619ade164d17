#!/usr/bin/env bash
# Hub fan-out through the Redis backplane (2 nodes) beside one node with the
# in-memory broker, same load, same run (docs/benchmarks.md, "Redis
# backplane").
#
#   benches/run-cluster.sh                     # 1,000 subscribers, 3 rounds
#   SUBS=1000 DUR=10 ROUNDS=3 IN_FLIGHT=64 SIZE=100 PUBLISHERS="1 4" benches/run-cluster.sh
#
# PUBLISHERS: publisher connections (round-robin over the nodes, like the
# subscribers), one run per value. Servers (Redis and the nodes) run on
# SERVER_CPU (default 0), the load generator on CLIENT_CPU (default 1), with
# taskset: the cluster's two nodes and Redis share the one core the single
# node has (set both to "" to run unpinned).
#
# Starts its own redis-server (no persistence) on REDIS_PORT (default 6391)
# and `duplex serve` nodes on PORT_BASE.. (default 9701), all on loopback;
# the load generator is crates/bench/examples/cluster_bench.rs (one publisher
# on the first node, subscribers round-robin over the nodes, a message in
# flight until every subscriber has it). Each round runs the single node
# first, then the cluster, with fresh processes. Everything it started is
# stopped by PID at the end. Output: OUT (default
# target/bench-cluster/TIMESTAMP)/results.txt.
#
# The nodes run with limits raised for one machine's load generator (all
# connections come from 127.0.0.1; the publisher sends thousands of
# commands per second) and with join/leave off in the `bench` namespace
# (N subscribers joining would cost N²/2 join pushes before the first
# publish).
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=${SUBS:-1000}
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-3}
IN_FLIGHT=${IN_FLIGHT:-64}
SIZE=${SIZE:-100}
PUBLISHERS=${PUBLISHERS:-"1 4"}
SERVER_CPU=${SERVER_CPU-0}
CLIENT_CPU=${CLIENT_CPU-1}
REDIS_PORT=${REDIS_PORT:-6391}
PORT_BASE=${PORT_BASE:-9701}
OUT=${OUT:-target/bench-cluster/$(date -u +%Y%m%dT%H%M%SZ)}

command -v redis-server >/dev/null || { echo "run-cluster: redis-server missing (cargo xtask setup redis)" >&2; exit 1; }
# The binary the nodes run and the example, in one build (with only
# `--example`, cargo builds the example alone and leaves the binary stale).
cargo build --release -p duplex-cli -p duplex-bench --bin duplex --example cluster_bench
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT"
CONFIG=$OUT/hub.toml
cat > "$CONFIG" <<'EOF'
[limits]
max_connections_per_ip = 100000
connection_rate_per_ip = 0
messages_per_second = 1000000
burst = 1000000

[namespaces.bench]
join_leave = false
EOF

# taskset execs the command: $! is the server's own PID.
SRV=(); [ -n "$SERVER_CPU" ] && SRV=(taskset -c "$SERVER_CPU")
CLI=(); [ -n "$CLIENT_CPU" ] && CLI=(taskset -c "$CLIENT_CPU")

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap cleanup EXIT

wait_ready() { # PORT
    for _ in $(seq 1 200); do
        if curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "run-cluster: node on $1 not ready" >&2
    return 1
}

start_redis() {
    "${SRV[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        >"$OUT/redis.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "run-cluster: redis did not start" >&2
    return 1
}

start_node() { # PORT [REDIS_URL]
    local args=(serve --config "$CONFIG" --listen "127.0.0.1:$1")
    [ $# -gt 1 ] && args+=(--redis "$2")
    "${SRV[@]}" "$BIN/duplex" "${args[@]}" >"$OUT/node-$1.log" 2>&1 &
    PIDS+=($!)
    wait_ready "$1"
}

bench() { # LABEL PUBLISHERS URL...
    local label=$1 publishers=$2; shift 2
    local urls=()
    for url in "$@"; do urls+=(--url "$url"); done
    local redis=()
    [ "$label" = cluster ] && redis=(--redis "redis://127.0.0.1:$REDIS_PORT")
    "${CLI[@]}" "$BIN/examples/cluster_bench" "${urls[@]}" "${redis[@]}" --label "$label" \
        --publishers "$publishers" \
        --subscribers "$SUBS" --in-flight "$IN_FLIGHT" --size "$SIZE" --duration "$DUR" \
        --channel bench:fanout | tee -a "$OUT/results.txt"
}

for round in $(seq 1 "$ROUNDS"); do
    for publishers in $PUBLISHERS; do
        echo "== round $round, $publishers publisher(s)" | tee -a "$OUT/results.txt"
        start_node "$PORT_BASE"
        bench single "$publishers" "ws://127.0.0.1:$PORT_BASE/ws"
        cleanup
        start_redis
        start_node "$PORT_BASE" "redis://127.0.0.1:$REDIS_PORT"
        start_node "$((PORT_BASE + 1))" "redis://127.0.0.1:$REDIS_PORT"
        bench cluster "$publishers" "ws://127.0.0.1:$PORT_BASE/ws" "ws://127.0.0.1:$((PORT_BASE + 1))/ws"
        cleanup
    done
done
echo "results: $OUT/results.txt"
