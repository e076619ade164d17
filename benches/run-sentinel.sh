#!/usr/bin/env bash
# Two hub nodes on one Redis (redis://) beside the same two nodes finding
# that Redis as the primary through Sentinel (redis+sentinel://), same load,
# alternating rounds with fresh nodes (docs/deploy.md, "One Redis, Sentinel
# or Cluster").
#
#   benches/run-sentinel.sh                       # SUBS=200 PUBS=4 DUR=10 ROUNDS=2
#
# Starts its own primary (port 6491, no persistence), one replica (6492) and
# three sentinels (26491-26493), and `duplex serve` nodes on 9791 and 9792,
# all on loopback; the load generator is
# crates/bench/examples/cluster_bench.rs. Everything it started is stopped
# by PID at the end. Files go to OUT (default target/bench-sentinel).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "run-sentinel: redis-server missing (cargo xtask setup redis)" >&2; exit 1; }
# One build, so both share one set of features (two builds with different
# package selections rebuild each other's dependencies).
cargo build --release -p duplex-cli -p duplex-bench --bin duplex --example cluster_bench
BIN=${CARGO_TARGET_DIR:-target}/release
D=${OUT:-target/bench-sentinel}; rm -rf "$D"; mkdir -p "$D"; D=$(cd "$D" && pwd)
SUBS=${SUBS:-200}; PUBS=${PUBS:-4}; DUR=${DUR:-10}; ROUNDS=${ROUNDS:-2}
cat > "$D"/hub.toml <<'T'
[limits]
max_connections_per_ip = 100000
connection_rate_per_ip = 0
messages_per_second = 1000000
burst = 1000000

[namespaces.bench]
join_leave = false
T
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap cleanup EXIT
redis-server --port 6491 --bind 127.0.0.1 --save "" --appendonly no --dir "$D" --repl-diskless-sync-delay 0 >/dev/null & PIDS+=($!)
sleep 0.3
redis-server --port 6492 --bind 127.0.0.1 --save "" --appendonly no --dir "$D" --replicaof 127.0.0.1 6491 >/dev/null & PIDS+=($!)
for i in 1 2 3; do
  printf 'port 2649%s\nbind 127.0.0.1\nsentinel monitor m 127.0.0.1 6491 2\nsentinel down-after-milliseconds m 500\n' $i > "$D"/s$i.conf
  redis-server "$D"/s$i.conf --sentinel >/dev/null & PIDS+=($!)
done
# The sentinels meet through the primary (every 2 s).
sleep 4
wait_ready() { for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "run-sentinel: node on $1 not ready" >&2; return 1; }
run() { # LABEL URL
  local n=()
  $BIN/duplex serve --config "$D"/hub.toml --listen 127.0.0.1:9791 --redis "$2" >"$D"/n1.log 2>&1 & n+=($!)
  $BIN/duplex serve --config "$D"/hub.toml --listen 127.0.0.1:9792 --redis "$2" >"$D"/n2.log 2>&1 & n+=($!)
  wait_ready 9791; wait_ready 9792
  $BIN/examples/cluster_bench --url ws://127.0.0.1:9791/ws --url ws://127.0.0.1:9792/ws \
    --subscribers $SUBS --publishers $PUBS --in-flight 64 --size 100 --duration $DUR \
    --channel bench:x --label "$1" --redis redis://127.0.0.1:6491 2>&1 | grep -v "^publish error" | tail -6
  kill "${n[@]}"; wait "${n[@]}" 2>/dev/null || true
}
for r in $(seq 1 $ROUNDS); do
  run "one redis, round $r" redis://127.0.0.1:6491
  run "sentinel, round $r" "redis+sentinel://127.0.0.1:26491,127.0.0.1:26492,127.0.0.1:26493/m"
done
