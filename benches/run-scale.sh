#!/usr/bin/env bash
# Many clients on several hub nodes on one machine (docs/benchmarks.md,
# "Scale: 100,000 clients on one machine"): NODES `duplex serve
# --reuse-port` processes on one port, sharing one Redis; SHARDS `duplex
# bench scale` processes hold CLIENTS subscribed clients between them (each
# under the 20,000-file limit), from source addresses 127.0.0.2 … (28,000
# ephemeral ports each). Then the Redis throughput comparison
# (benches/run-redis-throughput.sh: one Redis beside a Redis Cluster) unless
# THROUGHPUT=0.
#
#   benches/run-scale.sh                              # 100,000 clients, 7 nodes
#   CLIENTS=6000 NODES=3 SHARDS=2 THROUGHPUT=0 benches/run-scale.sh
#   DOCS=1 benches/run-scale.sh     # also puts the table in docs/benchmarks.md
#
# Every client subscribes to its own channel scale:u:<id> and to scale:all;
# the first ROOM also to scale:room. Phases, with the clients connected
# throughout:
#   1. connect: time until every client is subscribed (the shards report
#      it); RSS per node (over its RSS before any client), kernel memory
#      (/proc/slabinfo socket caches and /proc/net/sockstat buffer pages),
#      node CPU at idle over IDLE seconds (/proc/PID/stat).
#   2. fan-out: one publish to scale:all (every client) each FANOUT_EVERY
#      seconds for FANOUT seconds: latency from publish to every delivery.
#   3. room: ROOM_RATE publishes a second to scale:room (ROOM clients)
#      for ROOM_SECS seconds while the rest idle.
#   4. kill: under the churn publishes (scale:room at CHURN_RATE a second,
#      scale:all each CHURN_ALL_EVERY seconds), SIGKILL the first node; its
#      clients reconnect (backoff with full jitter from 1 s) to the others and
#      recover; after KILL_WAIT seconds it is started again.
#   5. rolling restart: under the same publishes, every node in turn gets
#      SIGTERM (the drain tells its clients to come back over DRAIN seconds)
#      and is started again once it has exited.
#   Losses: a client that skipped an offset with no gap announced (silent),
#   or that ended behind the channel's last offset with no gap announced
#   after its last message (missing at the end). Both must be 0.
# Output: OUT (default target/bench-scale/TIMESTAMP)/: each shard's JSON,
# node logs, events.txt, nodes.txt, summary.md (the table docs/benchmarks.md
# shows; benches/scale_summary.py makes it).
#
# sysctl: the script checks and, when run as root, raises
# net.ipv4.ip_local_port_range (1024 65000), net.core.somaxconn (65535),
# net.ipv4.tcp_max_syn_backlog (65535), and prints fs.file-max and
# nf_conntrack_max, and raises the latter to 1048576 when conntrack is loaded.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=${CLIENTS:-100000}
NODES=${NODES:-7}
SHARDS=${SHARDS:-6}
ROOM=${ROOM:-10000}
PORT=${PORT:-9800}
REDIS_PORT=${REDIS_PORT:-6392}
IDLE=${IDLE:-10}
FANOUT=${FANOUT:-20}
FANOUT_EVERY=${FANOUT_EVERY:-5}
ROOM_SECS=${ROOM_SECS:-10}
ROOM_RATE=${ROOM_RATE:-1}
CHURN_RATE=${CHURN_RATE:-2}
CHURN_ALL_EVERY=${CHURN_ALL_EVERY:-10}
KILL_WAIT=${KILL_WAIT:-30}
DRAIN=${DRAIN:-5}
SETTLE=${SETTLE:-20}
CONNECT_WAIT=${CONNECT_WAIT:-300}
THROUGHPUT=${THROUGHPUT:-1}
DOCS=${DOCS:-0}
OUT=${OUT:-target/bench-scale/$(date -u +%Y%m%dT%H%M%SZ)}

per_shard=$(( (CLIENTS + SHARDS - 1) / SHARDS ))
[ "$per_shard" -le 18000 ] || { echo "run-scale: $per_shard clients per shard is over 18,000: raise SHARDS" >&2; exit 1; }
[ $(( CLIENTS / NODES )) -le 18000 ] || { echo "run-scale: over 18,000 clients per node: raise NODES" >&2; exit 1; }
# When a node dies the others take its clients: NODES - 1 nodes must hold
# them all under the 19,000-connection limit each (the file limit is 20,000).
[ $(( (NODES - 1) * 19000 )) -ge "$CLIENTS" ] || echo "run-scale: warning: $((NODES - 1)) nodes cannot hold $CLIENTS clients after the kill (19,000 each): the rest are refused (503) until the node is back" >&2
command -v redis-server >/dev/null || { echo "run-scale: redis-server missing (cargo xtask setup redis)" >&2; exit 1; }

echo "sysctl:"
for key in net.ipv4.ip_local_port_range net.core.somaxconn net.ipv4.tcp_max_syn_backlog fs.file-max; do
    echo "  $key = $(sysctl -n $key | tr '\t' ' ')"
done
sysctl -n net.netfilter.nf_conntrack_max 2>/dev/null | sed 's/^/  net.netfilter.nf_conntrack_max = /' || echo "  conntrack not loaded"
if [ "$(id -u)" = 0 ]; then
    sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535 || true
    # Reconnection storms leave connections in TIME_WAIT, which conntrack
    # (when loaded) keeps tracking: room for several times CLIENTS.
    sysctl -qw net.netfilter.nf_conntrack_max=1048576 2>/dev/null || true
fi
echo "  open files: $(ulimit -n) (hard $(ulimit -Hn))"

# The binary the nodes run and the example, in one build (with only
# `--example`, cargo builds the example alone and leaves the binary stale).
cargo build --release -p duplex-cli -p duplex-bench --bin duplex --example cluster_bench
BIN=${CARGO_TARGET_DIR:-target}/release/duplex
mkdir -p "$OUT"
: > "$OUT/events.txt"; : > "$OUT/spread.txt"
CONFIG=$OUT/hub.toml
cat > "$CONFIG" <<EOF
reuse_port = true
drain_spread = $DRAIN
shutdown_grace = 10

[limits]
max_connections = 19000
max_connections_per_ip = 100000
connection_rate_per_ip = 0
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

# A node is up once its own PID listens on the port (the port answers as
# soon as any node does), and the port is ready.
listening() { # PID
    for _ in $(seq 1 400); do
        ss -Hltnp "( sport = :$PORT )" 2>/dev/null | grep -q "pid=$1," && ready && return 0
        sleep 0.05
    done
    echo "run-scale: node $1 did not listen" >&2
    return 1
}
fds() { { ls "/proc/$1/fd" 2>/dev/null || true; } | wc -l; }
spread() { # LABEL: open files per node (connections + ~20)
    local line="$(date +%s.%N) $1:"
    for i in "${!NODE_PIDS[@]}"; do line+=" node$i=$(fds "${NODE_PIDS[$i]}")"; done
    echo "$line" >> "$OUT/spread.txt"
}
slab() { # bytes in the socket caches (TCP, inode, file, dentry, epoll entry)
    awk '$1 ~ /^(TCP|TCPv6|sock_inode_cache|filp|dentry|eventpoll_epi)$/ {s += $2 * $4} END {print s}' /proc/slabinfo
}

for i in $(seq 0 $((NODES - 1))); do start_node "$i"; done
for i in $(seq 0 $((NODES - 1))); do listening "${NODE_PIDS[$i]}"; done
sleep 1
cat /proc/net/sockstat > "$OUT/sockstat-before.txt"
slab > "$OUT/slab-before.txt"
uptime > "$OUT/load.txt"
: > "$OUT/nodes.txt"
for i in "${!NODE_PIDS[@]}"; do echo "node$i rss_before $(rss "${NODE_PIDS[$i]}")" >> "$OUT/nodes.txt"; done

# The shards: each holds its clients through every phase, then reports.
CHURN=$(( KILL_WAIT + NODES * (DRAIN + 45) ))
TOTAL=$(( IDLE + FANOUT + 5 + ROOM_SECS + 5 + CHURN + SETTLE ))
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
slab > "$OUT/slab-after.txt"
spread connected
before=(); for i in "${!NODE_PIDS[@]}"; do before[$i]=$(cpu "${NODE_PIDS[$i]}"); done
sleep "$IDLE"
for i in "${!NODE_PIDS[@]}"; do
    pid=${NODE_PIDS[$i]}
    echo "node$i pid $pid rss $(rss "$pid") fds $(fds "$pid") idle_cpu_ticks_per_${IDLE}s $(( $(cpu "$pid") - ${before[$i]} ))" >> "$OUT/nodes.txt"
done
echo "established on :$PORT: $(ss -Htn state established "( sport = :$PORT )" | wc -l)" >> "$OUT/nodes.txt"

publisher() { # CHANNEL PHASE RATE DURATION
    "$BIN" bench scale --url "$url" --publish "$1" --phase "$2" --rate "$3" --duration "$4" \
        >"$OUT/pub-$2-${1#scale:}.json" 2>>"$OUT/pub.log" &
}
event() { echo "$1 $(date +%s.%N)" >> "$OUT/events.txt"; }

# 2. fan-out to everyone, then (3) to the room alone.
event fanout
publisher scale:all fanout "$(python3 -c "print(1 / $FANOUT_EVERY)")" "$FANOUT"
sleep $(( FANOUT + 5 ))
event room
publisher scale:room room "$ROOM_RATE" "$ROOM_SECS"
sleep $(( ROOM_SECS + 5 ))

# 4. kill a node, then (5) roll every node, under the churn publishes.
event churn
publisher scale:room churn "$CHURN_RATE" "$CHURN"
publisher scale:all churn "$(python3 -c "print(1 / $CHURN_ALL_EVERY)")" "$CHURN"
sleep 2
kill -9 "${NODE_PIDS[0]}"; event kill
sleep "$KILL_WAIT"
spread after-kill
start_node 0; listening "${NODE_PIDS[0]}"
for i in $(seq 0 $((NODES - 1))); do
    kill -TERM "${NODE_PIDS[$i]}"; event "drain$i"
    wait "${NODE_PIDS[$i]}" 2>/dev/null || true
    start_node "$i"; listening "${NODE_PIDS[$i]}"
    spread "after-drain$i"
    sleep 5
done
event rolled
for pid in "${SHARD_PIDS[@]}"; do wait "$pid" || true; done
spread end

python3 benches/scale_summary.py "$OUT" "$start" "$connected" "$IDLE"
cat "$OUT/nodes.txt" "$OUT/spread.txt"
if [ "$DOCS" = 1 ]; then
    python3 benches/scale_summary.py --docs "$OUT" docs/benchmarks.md
fi
if [ "$THROUGHPUT" = 1 ]; then
    cleanup; trap - EXIT
    OUT=$OUT/throughput benches/run-redis-throughput.sh
fi
