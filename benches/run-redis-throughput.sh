#!/usr/bin/env bash
# Publishes per second through one Redis beside a Redis Cluster of PRIMARIES
# primaries, same hub nodes, same load, alternating rounds with fresh
# processes (docs/benchmarks.md, "Scale: one Redis beside Redis Cluster";
# benches/run-scale.sh runs it after its own phases).
#
#   benches/run-redis-throughput.sh           # NODES=2 PRIMARIES=3 PUBS=8 CHANNELS=48
#   ROUNDS=3 DUR=10 SUBS=2 benches/run-redis-throughput.sh
#
# Load (crates/bench/examples/cluster_bench.rs): PUBS publisher connections
# and SUBS subscribers round-robin over NODES `duplex serve` nodes; message
# SEQ goes to channel bench:t:(SEQ mod CHANNELS) (the channels spread over
# the cluster's slots), every subscriber subscribes to all of them, 64
# messages in flight, 100-byte payloads. Few subscribers, so that the
# publish path (one EVALSHA per publish on the channel's primary) is what
# is measured, not the fan-out. Besides publishes/s, the script reads the
# CPU time of every Redis process (/proc/PID/stat) over the window and
# reports Redis CPU per publish: the ceiling of one Redis process is about
# 1 s ÷ that figure, a cluster's that times its primaries.
#
# Starts its own processes on loopback (one Redis on REDIS_PORT, default
# 6591; the cluster on REDIS_PORT+1 …; nodes on PORT_BASE, default 9891 …),
# no persistence, no replicas (the same for both: replication would cost
# the cluster's primaries alone), and stops them by PID. Output: OUT
# (default target/bench-redis-throughput/TIMESTAMP)/results.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-2}
PRIMARIES=${PRIMARIES:-3}
PUBS=${PUBS:-8}
SUBS=${SUBS:-2}
CHANNELS=${CHANNELS:-48}
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-2}
REDIS_PORT=${REDIS_PORT:-6591}
PORT_BASE=${PORT_BASE:-9891}
OUT=${OUT:-target/bench-redis-throughput/$(date -u +%Y%m%dT%H%M%SZ)}

command -v redis-server >/dev/null || { echo "run-redis-throughput: redis-server missing (cargo xtask setup redis)" >&2; exit 1; }
# The binary the nodes run and the example, in one build (with only
# `--example`, cargo builds the example alone and leaves the binary stale).
cargo build --release -p duplex-cli -p duplex-bench --bin duplex --example cluster_bench
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
cat > "$OUT/hub.toml" <<'T'
[limits]
max_connections_per_ip = 100000
connection_rate_per_ip = 0
messages_per_second = 1000000
burst = 1000000

[namespaces.bench]
join_leave = false
T

PIDS=()
stop() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap stop EXIT
ticks() { local t=0; for p in "$@"; do t=$(( t + $(awk '{print $14+$15}' "/proc/$p/stat") )); done; echo "$t"; }
wait_ready() { for _ in $(seq 1 400); do curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "run-redis-throughput: node on $1 not ready" >&2; return 1; }

run() { # LABEL REDIS_URL STATS_URLS REDIS_PIDS...
    local label=$1 url=$2 stats=$3; shift 3
    local urls=() n=()
    for i in $(seq 0 $((NODES - 1))); do
        "$BIN/duplex" serve --config "$OUT/hub.toml" --listen "127.0.0.1:$((PORT_BASE + i))" --redis "$url" \
            >"$OUT/node-$label-$i.log" 2>&1 & n+=($!)
        urls+=(--url "ws://127.0.0.1:$((PORT_BASE + i))/ws")
    done
    for i in $(seq 0 $((NODES - 1))); do wait_ready $((PORT_BASE + i)); done
    local redis_args=()
    for u in $stats; do redis_args+=(--redis "$u"); done
    # The bench opens its window 1 s after its clients are up; Redis CPU is
    # read over the same DUR seconds, from 2 s after the start (setup is
    # done by then at these counts).
    "$BIN/examples/cluster_bench" "${urls[@]}" "${redis_args[@]}" --subscribers "$SUBS" \
        --publishers "$PUBS" --channels "$CHANNELS" --in-flight 64 --size 100 --duration "$DUR" \
        --channel bench:t --label "$label" >"$OUT/bench-$label.txt" 2>&1 &
    local bench=$!
    sleep 2
    local t0; t0=$(ticks "$@")
    local n0; n0=$(ticks "${n[@]}")
    sleep "$DUR"
    local t1; t1=$(ticks "$@")
    local n1; n1=$(ticks "${n[@]}")
    wait "$bench" || { echo "run-redis-throughput: bench failed, see $OUT/bench-$label.txt" >&2; cat "$OUT/bench-$label.txt" >&2; }
    kill "${n[@]}"; wait "${n[@]}" 2>/dev/null || true
    local rate; rate=$(awk '/^publishes\/s/ {print $2}' "$OUT/bench-$label.txt")
    grep -v "^publish error" "$OUT/bench-$label.txt" | tail -5 >> "$OUT/results.txt"
    python3 - "$label" "$rate" "$((t1 - t0))" "$((n1 - n0))" "$DUR" "$#" >> "$OUT/results.txt" <<'PY'
import os, sys
label, rate, redis_ticks, node_ticks, dur, procs = sys.argv[1], float(sys.argv[2] or 0), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
hz = os.sysconf("SC_CLK_TCK")
redis_cpu, node_cpu = redis_ticks / hz / dur, node_ticks / hz / dur
per = redis_cpu / rate * 1e6 if rate else float("nan")
print(f"[{label}] publishes/s {rate:.0f}; Redis CPU {redis_cpu:.2f} cores over {procs} process(es), "
      f"{per:.1f} µs per publish (one Redis core: ~{1e6 / per if per else 0:,.0f} publishes/s); "
      f"hub nodes {node_cpu:.2f} cores, {node_cpu / rate * 1e6 if rate else 0:.1f} µs per publish")
PY
    tail -1 "$OUT/results.txt"
}

one_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$OUT/redis.log" 2>&1 & PIDS+=($!)
    local pid=$!
    for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
    run "one-redis" "redis://127.0.0.1:$REDIS_PORT" "redis://127.0.0.1:$REDIS_PORT" "$pid"
    stop
}

cluster() {
    local ports=() pids=() hosts=() urls=""
    for i in $(seq 1 "$PRIMARIES"); do
        local port=$((REDIS_PORT + i))
        rm -f "$OUT/nodes-$port.conf"
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$OUT" \
            --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --cluster-node-timeout 2000 \
            >"$OUT/redis-$port.log" 2>&1 & PIDS+=($!)
        pids+=($!); ports+=("$port"); hosts+=("127.0.0.1:$port"); urls+=" redis://127.0.0.1:$port"
    done
    for port in "${ports[@]}"; do
        for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    done
    redis-cli --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes >"$OUT/cluster-create.log" 2>&1
    for _ in $(seq 1 200); do
        redis-cli -p "${ports[0]}" cluster info | grep -q "cluster_state:ok" && break
        sleep 0.05
    done
    run "cluster-$PRIMARIES" "redis+cluster://$(IFS=,; echo "${hosts[*]}")" "$urls" "${pids[@]}"
    stop
}

echo "nodes $NODES, publishers $PUBS, subscribers $SUBS, channels $CHANNELS, $DUR s, $ROUNDS rounds" | tee "$OUT/results.txt"
for r in $(seq 1 "$ROUNDS"); do
    one_redis
    cluster
done
echo "results: $OUT/results.txt"
