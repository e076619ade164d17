#!/usr/bin/env bash
# Many clients on several hub nodes on one machine (docs/benchmarks.md,
# "Scale"): NODES `duplex serve --reuse-port` processes on one port, sharing
# one Redis; SHARDS `duplex bench scale` processes hold CLIENTS subscribed
# clients between them (each under the 20,000-file limit), from source
# addresses 127.0.0.2 … (28,000 ephemeral ports each).
#
#   benches/run-scale.sh                              # 100,000 clients, 6 nodes
#   CLIENTS=6000 NODES=3 SHARDS=2 benches/run-scale.sh
#   (CONNECT_WAIT, default 300: seconds the shards may take to subscribe)
#
# Phases, each with the clients connected throughout:
#   1. connect: time until every client is subscribed (shards report it);
#      RSS per node, /proc/net/sockstat before and after, node CPU at idle
#      (IDLE seconds, from /proc/PID/stat).
#   2. fan-out: one publish a second to scale:all (every client) and to
#      scale:room (ROOM clients) for FANOUT seconds; latency per channel.
#   3. kill: SIGKILL the first node; its clients reconnect (backoff with
#      full jitter) to the others; time until all are back, the accept-rate
#      peak (per 100 ms), silent losses (must be 0).
#   4. rolling restart: every node in turn gets SIGTERM (the drain spreads
#      its clients' reconnections over DRAIN seconds) and is started again,
#      under publishes to scale:all at RATE per second.
# Output: OUT (default target/bench-scale/TIMESTAMP)/: each shard's JSON,
# node logs, and summary.txt (the table docs/benchmarks.md shows).
#
# sysctl: the script checks and, when run as root, raises
# net.ipv4.ip_local_port_range (1024 65000), net.core.somaxconn (65535),
# net.ipv4.tcp_max_syn_backlog (65535), and prints fs.file-max and
# nf_conntrack_max (conntrack is not loaded on loopback-only runs here).
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-100000}
NODES=${NODES:-6}
SHARDS=${SHARDS:-6}
ROOM=${ROOM:-10000}
PORT=${PORT:-9800}
REDIS_PORT=${REDIS_PORT:-6392}
IDLE=${IDLE:-10}
FANOUT=${FANOUT:-10}
RATE=${RATE:-5}
DRAIN=${DRAIN:-5}
SETTLE=${SETTLE:-20}
CONNECT_WAIT=${CONNECT_WAIT:-300}
OUT=${OUT:-target/bench-scale/$(date -u +%Y%m%dT%H%M%SZ)}

per_shard=$(( (CLIENTS + SHARDS - 1) / SHARDS ))
[ "$per_shard" -le 18000 ] || { echo "run-scale: $per_shard clients per shard is over 18,000: raise SHARDS" >&2; exit 1; }
[ $(( CLIENTS / NODES )) -le 18000 ] || { echo "run-scale: over 18,000 clients per node: raise NODES" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "run-scale: redis-server missing (cargo xtask setup redis)" >&2; exit 1; }

echo "sysctl:"
for key in net.ipv4.ip_local_port_range net.core.somaxconn net.ipv4.tcp_max_syn_backlog fs.file-max; do
    echo "  $key = $(sysctl -n $key | tr '\t' ' ')"
done
sysctl -n net.netfilter.nf_conntrack_max 2>/dev/null | sed 's/^/  net.netfilter.nf_conntrack_max = /' || echo "  conntrack not loaded"
if [ "$(id -u)" = 0 ]; then
    sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 || true
fi
echo "  open files: $(ulimit -n) (hard $(ulimit -Hn))"

cargo build --release -p duplex-cli
BIN=${CARGO_TARGET_DIR:-target}/release/duplex
mkdir -p "$OUT"
CONFIG=$OUT/hub.toml
cat > "$CONFIG" <<EOF
reuse_port = true
drain_spread = $DRAIN
shutdown_grace = 10

[limits]
max_connections = 19000
max_connections_per_ip = 100000
messages_per_second = 100000
burst = 100000

[namespaces.scale]
join_leave = false
history_size = 1000
EOF

PIDS=()
NODE_PIDS=()
cleanup() {
    for pid in "${PIDS[@]}" "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --save "" --appendonly no --bind 127.0.0.1 >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
sleep 0.5

start_node() { # INDEX
    "$BIN" serve --config "$CONFIG" --listen "127.0.0.1:$PORT" --redis "redis://127.0.0.1:$REDIS_PORT" \
        >>"$OUT/node$1.log" 2>&1 &
    NODE_PIDS[$1]=$!
}
ready() {
    for _ in $(seq 1 400); do
        curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    return 1
}
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss() { awk '/VmRSS/ {print $2*1024}' "/proc/$1/status"; }

for i in $(seq 0 $((NODES - 1))); do start_node "$i"; done
ready
sleep 1
cat /proc/net/sockstat > "$OUT/sockstat-before.txt"
uptime > "$OUT/load.txt"

# The shards: each runs through every phase, then reports.
TOTAL=$(( IDLE + FANOUT + 30 + NODES * (DRAIN + 10) + SETTLE ))
url="ws://127.0.0.1:$PORT/ws"
start=$(date +%s.%N)
for s in $(seq 0 $((SHARDS - 1))); do
    first=$(( s * per_shard ))
    n=$(( CLIENTS - first < per_shard ? CLIENTS - first : per_shard ))
    # 2 source addresses per shard (28,000 ports each): 127.0.0.(2+2s), +1.
    ips="127.0.0.$((2 + 2 * s)),127.0.0.$((3 + 2 * s))"
    "$BIN" bench scale --url "$url" --clients "$n" --first "$first" --room-size "$ROOM" \
        --source-ips "$ips" --duration "$TOTAL" >"$OUT/shard$s.json" 2>"$OUT/shard$s.log" &
    PIDS+=($!)
done
SHARD_PIDS=("${PIDS[@]:1}")

# 1. connect: wait until every shard said it is subscribed (at most
# CONNECT_WAIT seconds: a shard that never gets there ends the run).
waited=0
while [ "$(grep -l "subscriptions in" "$OUT"/shard*.log 2>/dev/null | wc -l)" -lt "$SHARDS" ]; do
    if [ "$waited" -ge $(( CONNECT_WAIT * 2 )) ]; then
        echo "run-scale: not every shard subscribed within ${CONNECT_WAIT} s; see $OUT/shard*.log" >&2
        exit 1
    fi
    sleep 0.5
    waited=$(( waited + 1 ))
done
connected=$(date +%s.%N)
cat "$OUT"/shard*.log
cat /proc/net/sockstat > "$OUT/sockstat-after.txt"
: > "$OUT/nodes.txt"
before=(); for i in "${!NODE_PIDS[@]}"; do before[$i]=$(cpu "${NODE_PIDS[$i]}"); done
sleep "$IDLE"
for i in "${!NODE_PIDS[@]}"; do
    pid=${NODE_PIDS[$i]}
    conns=$(curl -fs "http://127.0.0.1:$PORT/metrics" >/dev/null; grep -c ESTAB <(ss -Htn state established "( sport = :$PORT )" 2>/dev/null) || true)
    echo "node$i pid $pid rss $(rss "$pid") idle_cpu_ticks_per_${IDLE}s $(( $(cpu "$pid") - ${before[$i]} ))" >> "$OUT/nodes.txt"
done
echo "established on :$PORT: $(ss -Htn state established "( sport = :$PORT )" | wc -l)" >> "$OUT/nodes.txt"

# 2. fan-out, then (3) kill a node and (4) roll, all under publishes.
"$BIN" bench scale --url "$url" --publish scale:room --rate 1 --duration "$FANOUT" >"$OUT/pub-room.json" 2>>"$OUT/pub.log" &
"$BIN" bench scale --url "$url" --publish scale:all --rate "$RATE" \
    --duration $(( TOTAL - IDLE - SETTLE )) >"$OUT/pub-all.json" 2>>"$OUT/pub.log" &
PUB=$!
sleep "$FANOUT"
kill -9 "${NODE_PIDS[0]}"; echo "killed node0 at $(date +%s.%N)" >> "$OUT/events.txt"
sleep 30
start_node 0; ready
for i in $(seq 0 $((NODES - 1))); do
    kill -TERM "${NODE_PIDS[$i]}"; echo "drained node$i at $(date +%s.%N)" >> "$OUT/events.txt"
    wait "${NODE_PIDS[$i]}" 2>/dev/null || true
    start_node "$i"; ready
    sleep 5
done
wait "$PUB" || true
for pid in "${SHARD_PIDS[@]}"; do wait "$pid" || true; done

python3 - "$OUT" "$start" "$connected" <<'PY'
import json, sys, glob
out, start, connected = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
shards = [json.load(open(f)) for f in sorted(glob.glob(out + "/shard*.json"))]
def merged(channel):
    b = {}
    for s in shards:
        for v, c in s["channels"].get(channel, {}).get("buckets_us", []):
            b[v] = b.get(v, 0) + c
    total = sum(b.values()); acc = 0; p = {}
    for v in sorted(b):
        acc += b[v]
        for q in (0.5, 0.99):
            if q not in p and acc >= q * total: p[q] = v / 1000
    return total, p.get(0.5), p.get(0.99), (max(b) / 1000 if b else None)
curve = {}
for s in shards:
    for i, n in enumerate(s["resubscribed_per_100ms"]):
        curve[i] = curve.get(i, 0) + n
lines = [
    f"clients: {sum(s['clients'] for s in shards)}; subscriptions {sum(s['subscriptions'] for s in shards)}/{sum(s['subscriptions_wanted'] for s in shards)}",
    f"connect all: {connected - start:.1f} s (slowest shard {max(s['connect_secs'] for s in shards):.1f} s)",
    f"generator RSS per client: {sum(s['rss_bytes'] for s in shards) / max(1, sum(s['clients'] for s in shards)):.0f} B",
]
for ch in ("scale:room", "scale:all"):
    total, p50, p99, mx = merged(ch)
    lines.append(f"{ch}: {total} deliveries, p50 {p50} ms, p99 {p99} ms, max {mx} ms")
lines.append(f"disconnects {sum(s['disconnects'] for s in shards)}, gaps {sum(s['gaps'] for s in shards)}, silent losses {sum(s['silent_lost'] for s in shards)}")
if curve:
    peak = max(curve.values())
    lines.append(f"resubscriptions: peak {peak} per 100 ms ({peak * 10}/s)")
    lines.append("curve (per 100 ms, from the shards' start): " + " ".join(f"{i/10:.1f}s:{curve[i]}" for i in sorted(curve) if curve[i]))
open(out + "/summary.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
cat "$OUT/nodes.txt" "$OUT/sockstat-before.txt" "$OUT/sockstat-after.txt" "$OUT/load.txt"
