#!/usr/bin/env bash
# Hub fan-out benchmark: `duplex serve` (the hub) beside plain broadcast
# servers of peer libraries, all in one run, so that ratios compare like with
# like on a noisy box.
#
# Servers run pinned to core 0 (`taskset -c 0`), the load generator
# (`duplex bench fanout`, the duplex client) to core 1. Every measurement gets
# a fresh server (so its memory per subscriber starts from an empty process),
# and for each test the implementations are measured one after the other, so
# a burst of noise hits one row rather than one implementation.
#
#   benches/run-fanout.sh                       # everything, ~18 minutes (6 servers)
#   DUR=5 ROUNDS=1 IMPLS="hub node-ws" benches/run-fanout.sh
#
# Servers (IMPLS, default all six):
#   hub          target/release/duplex serve, limits raised, join/leave off in
#                the benchmark's namespace (see below); protocol duplex.v1
#   hub-bin      the same server, the clients speaking the binary envelope
#                (duplex.v1.bin: a 100-byte message is a 127-byte frame
#                instead of ~221)
#   hub-old      OLD_DUPLEX (a `duplex` binary of an earlier build) serve, as
#                hub: the old build beside the new in the same run
#   tungstenite  peer-broadcast --impl tungstenite (tokio-tungstenite, a
#                channel per client, each client frames every message)
#   tungstenite-bcast
#                peer-broadcast --impl tungstenite-broadcast (tokio-tungstenite
#                fed from one tokio::sync::broadcast channel: each writer
#                drains its receiver in batches, one flush each; a client more
#                than 16,384 messages behind is closed, 1008 "lagged")
#   uws          node benches/uws/broadcast.js (uWebSockets' own C++ pub/sub:
#                subscribe on open, app.publish of every message; installed
#                with `npm ci` in benches/uws when missing)
#   node-ws      node benches/node/broadcast.js (ws, wss.clients.forEach send)
#   duplex-lib   peer-broadcast --impl duplex (the duplex library's broadcast
#                idiom, one prepared frame for all, a channel per client as
#                `tungstenite`; a reference, not a peer)
#   duplex-bcast peer-broadcast --impl duplex-broadcast (the duplex library
#                fed from one tokio::sync::broadcast channel of prepared
#                frames, as `tungstenite-bcast`; a reference, not a peer)
#
# Tests: SUBS subscribers (default "1000 10000") × IN_FLIGHT (64) messages of
# SIZE (100) bytes in flight for DUR (10) seconds, ROUNDS (2) rounds, each
# cell the implementation's best round by deliveries per second; then a
# paced run at PACED_DELIVERIES (50000) deliveries per second (publishes/s =
# PACED_DELIVERIES / subscribers) for PACED_DUR (10) seconds, for latency.
# OUT (default target/bench-fanout/TIMESTAMP): results.jsonl (one JSON object
# per run, from `duplex bench fanout --json`), results.md (tables, ratios),
# *.log. SERVER_CPU / CLIENT_CPU: cores (default 0 and 1). PORT_BASE: the
# servers listen on PORT_BASE .. PORT_BASE+8 (default 9610). Every run
# reports the server's memory per subscriber (the growth of its anonymous
# memory, RssAnon, once all are subscribed and 2 s have passed after the
# warm-up with nothing published — `duplex bench fanout --settle` — over
# before the first; of its whole RSS beside it; and the growth at the
# warm-up's end, with its backlog's freed pages still held) and its RSS at the
# end; results.md also gives hub ÷ each peer.
#
# QUIET (seconds, default 0: none): first, one run per server and size that
# holds every subscriber quiet that long after the warm-up before it reads
# the server's memory again (`--quiet`): what a quiet subscribed client
# costs (the hub parks connections quiet for `[heartbeat] park_after`, 10 s
# by default: QUIET=13 leaves the allocator a second or two to give the
# pages back). These runs go in their own table, not in the others.
#
# The hub runs with the namespace `bench` configured `join_leave = false`
# (the default today, pinned so that a change of default does not change
# this benchmark): with join/leave on, N subscribers joining one channel cost
# N²/2 `join` pushes (50 million at 10,000) before the first publish, which
# would measure presence, not fan-out; the broadcast peers have no such
# feature. The per-address connection rate limit is off in hub.toml (the
# generator opens 10,000 connections from 4 addresses in a few seconds).
# Open files: 10,000 subscribers need ~10,000 descriptors on each
# side; the limit here is 20,000 per process.
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${DUR:-10}
PACED_DUR=${PACED_DUR:-10}
ROUNDS=${ROUNDS:-2}
SUBS=${SUBS:-"1000 10000"}
IN_FLIGHT=${IN_FLIGHT:-64}
SIZE=${SIZE:-100}
PACED_DELIVERIES=${PACED_DELIVERIES:-50000}
QUIET=${QUIET:-0}
IMPLS=${IMPLS:-"hub tungstenite tungstenite-bcast uws node-ws duplex-lib"}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-target/bench-fanout/$(date -u +%Y%m%dT%H%M%SZ)}
PORT_BASE=${PORT_BASE:-9610}
SOURCES=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4

cargo build --release -p duplex-cli -p duplex-bench-peers
BIN=${CARGO_TARGET_DIR:-target}/release
command -v node >/dev/null || { echo "run-fanout: node not found" >&2; exit 1; }
if [[ " $IMPLS " == *" uws "* ]]; then
    [[ -d benches/uws/node_modules/uwebsockets ]] || (cd benches/uws && npm ci --no-audit --no-fund)
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
cat >"$OUT/hub.toml" <<'EOF'
# duplex serve for benches/run-fanout.sh: the benchmark's channel is
# bench:fanout; no join/leave pushes there (see the script's header). No
# limit on new connections per second per address: the generator opens
# thousands a second from 4 addresses (the default, 100/s with a burst of
# 1,000, refuses most of 10,000 subscribers with 429).
[limits]
connection_rate_per_ip = 0
[namespaces.bench]
join_leave = false
EOF

declare -A PORT=([hub]=$PORT_BASE [tungstenite]=$((PORT_BASE + 1)) [node-ws]=$((PORT_BASE + 2))
    [duplex-lib]=$((PORT_BASE + 3)) [tungstenite-bcast]=$((PORT_BASE + 4)) [uws]=$((PORT_BASE + 5))
    [hub-bin]=$((PORT_BASE + 6)) [hub-old]=$((PORT_BASE + 7)) [duplex-bcast]=$((PORT_BASE + 8)))
if [[ " $IMPLS " == *" hub-old "* && ! -x ${OLD_DUPLEX:-} ]]; then
    echo "run-fanout: hub-old needs OLD_DUPLEX, the path of an earlier duplex binary" >&2
    exit 1
fi
SERVER=

stop() {
    if [[ -n $SERVER ]]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=
    fi
}
trap stop EXIT

# start IMPL: starts a fresh IMPL server on its port, pinned to SERVER_CPU.
start() {
    local impl=$1 port=${PORT[$1]}
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run-fanout: port $port is taken by another process (set PORT_BASE)" >&2
        exit 1
    fi
    case $impl in
    hub | hub-bin | hub-old)
        local exe=$BIN/duplex
        if [[ $impl == hub-old ]]; then exe=$OLD_DUPLEX; fi
        taskset -c "$SERVER_CPU" "$exe" serve --listen "127.0.0.1:$port" \
            --config "$OUT/hub.toml" --max-connections-per-ip 100000 --rate 1000000 \
            >>"$OUT/server-$impl.log" 2>&1 &
        ;;
    tungstenite | duplex-lib)
        taskset -c "$SERVER_CPU" "$BIN/peer-broadcast" --impl "${impl%-lib}" \
            --listen "127.0.0.1:$port" >>"$OUT/server-$impl.log" 2>&1 &
        ;;
    tungstenite-bcast | duplex-bcast)
        taskset -c "$SERVER_CPU" "$BIN/peer-broadcast" --impl "${impl%-bcast}-broadcast" \
            --listen "127.0.0.1:$port" >>"$OUT/server-$impl.log" 2>&1 &
        ;;
    node-ws)
        taskset -c "$SERVER_CPU" node benches/node/broadcast.js --listen "127.0.0.1:$port" \
            >>"$OUT/server-$impl.log" 2>&1 &
        ;;
    uws)
        taskset -c "$SERVER_CPU" node benches/uws/broadcast.js --listen "127.0.0.1:$port" \
            >>"$OUT/server-$impl.log" 2>&1 &
        ;;
    *)
        echo "run-fanout: unknown implementation $impl" >&2
        exit 1
        ;;
    esac
    SERVER=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            sleep 0.3
            return 0
        fi
        sleep 0.1
    done
    echo "run-fanout: $impl did not start listening on $port" >&2
    exit 1
}

# bench IMPL ARGS...: a fresh IMPL server, one `duplex bench fanout` run
# against it pinned to CLIENT_CPU (its JSON line appended to the results),
# and the server stopped.
bench() {
    local impl=$1
    shift
    local url=ws://127.0.0.1:${PORT[$impl]}/ protocol=broadcast
    local extra=()
    if [[ $impl == hub* ]]; then url=${url}ws protocol=hub; fi
    if [[ $impl == hub-bin ]]; then extra=(--encoding binary); fi
    start "$impl"
    echo "== fanout $impl $*" >&2
    echo "== fanout $impl $*" >>"$OUT/generator.log"
    taskset -c "$CLIENT_CPU" "$BIN/duplex" bench fanout --url "$url" --protocol "$protocol" \
        --channel bench:fanout --server-pid "$SERVER" --label "$impl" --json \
        --source-ips "$SOURCES" "${extra[@]}" "$@" 2>>"$OUT/generator.log" | tee -a "$RESULTS" >&2 ||
        echo "run-fanout: $impl $* failed (see $OUT/generator.log)" >&2
    stop
    sleep 1
}

echo "run-fanout: results in $OUT" >&2
if [[ $QUIET != 0 ]]; then
    for n in $SUBS; do
        for impl in $IMPLS; do
            bench "$impl" --subscribers "$n" --in-flight "$IN_FLIGHT" --size "$SIZE" --duration 2 \
                --quiet "$QUIET"
        done
    done
fi
for round in $(seq "$ROUNDS"); do
    for n in $SUBS; do
        for impl in $IMPLS; do
            bench "$impl" --subscribers "$n" --in-flight "$IN_FLIGHT" --size "$SIZE" --duration "$DUR"
        done
    done
done
for n in $SUBS; do
    rate=$((PACED_DELIVERIES / n))
    for impl in $IMPLS; do
        bench "$impl" --subscribers "$n" --rate "$rate" --size "$SIZE" --duration "$PACED_DUR"
    done
done

python3 - "$RESULTS" >"$OUT/results.md" <<'PY'
"""Tables and ratios from results.jsonl."""
import json
import sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
quiet_runs = [r for r in runs if r.get("quiet_s")]
runs = [r for r in runs if not r.get("quiet_s")]
impls = []
for r in runs:
    if r["label"] not in impls:
        impls.append(r["label"])
peers = [i for i in impls if i in ("tungstenite", "tungstenite-bcast", "uws", "node-ws")]
subs = sorted({r["subscribers"] for r in runs})


def find(label, n, paced):
    """The best round of one test (most deliveries per second: noise on a
    shared machine only ever slows a run down)."""
    matches = [r for r in runs if r["label"] == label and r["subscribers"] == n
               and (r["window"] == "paced") == paced]
    return max(matches, key=lambda r: r["deliveries_per_s"], default=None)


def num(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


def ms(us):
    return "–" if us is None else f"{us / 1e3:,.1f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "–"


out = []
header = "| | " + " | ".join(impls) + " | hub / best peer |"
rule = "|---|" + "---:|" * (len(impls) + 1)
for paced in (False, True):
    for n in subs:
        row = {i: find(i, n, paced) for i in impls}
        if not any(row.values()):
            continue
        any_run = next(r for r in row.values() if r)
        if paced:
            out.append(f"\n### {n:,} subscribers, paced: {any_run['rate']:g} publishes/s "
                       f"({any_run['rate'] * n:,.0f} deliveries/s), {any_run['size']} B, "
                       f"{any_run['duration_s']:g} s\n")
        else:
            out.append(f"\n### {n:,} subscribers, {any_run['in_flight']} in flight, "
                       f"{any_run['size']} B, {any_run['duration_s']:g} s\n")
        out.append(header)
        out.append(rule)

        def line(name, get, best, digits=0, fmt=None):
            vals = {i: (get(row[i]) if row[i] else None) for i in impls}
            peer_vals = [vals[p] for p in peers if vals.get(p) is not None]
            b = (max if best == "max" else min)(peer_vals) if peer_vals and best else None
            cells = [(fmt or (lambda v: num(v, digits)))(vals[i]) for i in impls]
            out.append(f"| {name} | " + " | ".join(cells)
                       + f" | {ratio(vals.get('hub'), b) if best else ''} |")

        line("deliveries/s", lambda r: r["deliveries_per_s"], "max")
        line("publishes/s", lambda r: r["publishes_per_s"], "max")
        line("server CPU per delivery, µs", lambda r: r["server_cpu_us_per_delivery"], "min", 3)
        line("server CPU used, % of a core",
             lambda r: r["server_cpu_s"] and 100 * r["server_cpu_s"] / r["duration_s"], None, 0)
        line("server / client waited for a core, s", lambda r: r,
             None, fmt=lambda r: "–" if r is None else
             f'{num(r.get("server_runqueue_wait_s"), 2)} / {num(r.get("client_runqueue_wait_s"), 2)}')
        line("client CPU per delivery, µs", lambda r: r["client_cpu_us_per_delivery"], None, 3)
        line("latency at last subscriber p50, ms", lambda r: r["latency_last"]["p50_us"], "min", fmt=ms)
        line("… p90, ms", lambda r: r["latency_last"]["p90_us"], "min", fmt=ms)
        line("… p99, ms", lambda r: r["latency_last"]["p99_us"], "min", fmt=ms)
        line("… max, ms", lambda r: r["latency_last"]["max_us"], "min", fmt=ms)
        line("latency, all deliveries p50 / p99, ms", lambda r: r["latency_all"],
             None, fmt=lambda v: "–" if v is None else f"{ms(v['p50_us'])} / {ms(v['p99_us'])}")
        if paced:
            line("publisher behind schedule, max ms", lambda r: r.get("publisher_max_lag_us"), None, fmt=ms)
        line("server memory (anonymous) per subscriber, KiB",
             lambda r: r["server_bytes_per_subscriber"] and r["server_bytes_per_subscriber"] / 1024, "min", 2)
        line("… its RSS per subscriber, KiB",
             lambda r: r.get("server_rss_bytes_per_subscriber") and r["server_rss_bytes_per_subscriber"] / 1024, None, 2)
        line("… anonymous at the warm-up's end, KiB",
             lambda r: r.get("server_bytes_per_subscriber_warm") and r["server_bytes_per_subscriber_warm"] / 1024, None, 2)
        line("server RSS at the end, MiB", lambda r: r["server_rss_end"] and r["server_rss_end"] / 2**20, None, 1)
        line("bytes per delivered message", lambda r: r["delivered_bytes_avg"], None)

# hub ÷ each peer (and ÷ duplex-lib), per test: below 1 is better for the hub
# on every column but deliveries/s.
others = [i for i in impls if i != "hub"]
if "hub" in impls and others:
    out.append("\n### hub ÷ each server\n")
    out.append("| test | ÷ | deliveries/s | server CPU per delivery | memory per subscriber "
               "| last subscriber p50 | … p99 |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for paced in (False, True):
        for n in subs:
            hub = find("hub", n, paced)
            if not hub:
                continue
            test = f"{n:,}, {'paced' if paced else str(hub['in_flight']) + ' in flight'}"
            for other in others:
                o = find(other, n, paced)
                if not o:
                    continue
                out.append(f"| {test} | {other} | "
                           + " | ".join(ratio(get(hub), get(o)) for get in (
                               lambda r: r["deliveries_per_s"],
                               lambda r: r["server_cpu_us_per_delivery"],
                               lambda r: r["server_bytes_per_subscriber"],
                               lambda r: r["latency_last"]["p50_us"],
                               lambda r: r["latency_last"]["p99_us"])) + " |")

if quiet_runs:
    labels = [i for i in dict.fromkeys(r["label"] for r in quiet_runs)]
    out.append(f"\n### Memory per subscriber, subscribed and after {quiet_runs[0]['quiet_s']:g} s quiet\n")
    out.append("The growth of the server's anonymous memory (`RssAnon`) per subscriber; in parentheses, "
               "of its whole RSS after the quiet spell (which also counts the program's code paged in "
               "meanwhile, a fixed cost).\n")
    out.append("| subscribers | " + " | ".join(labels) + " |")
    out.append("|---|" + "---:|" * len(labels))
    for n in sorted({r["subscribers"] for r in quiet_runs}):
        def cell(label):
            r = next((r for r in quiet_runs if r["label"] == label and r["subscribers"] == n), None)
            if not r or r["server_bytes_per_subscriber"] is None:
                return "–"
            quiet = r.get("server_bytes_per_quiet_subscriber")
            quiet_rss = r.get("server_rss_bytes_per_quiet_subscriber")
            return (f'{r["server_bytes_per_subscriber"]:,.0f} B → '
                    + ("–" if quiet is None else f"**{quiet:,.0f} B**")
                    + ("" if quiet_rss is None else f" ({quiet_rss:,.0f} B)"))
        out.append(f"| {n:,} | " + " | ".join(cell(l) for l in labels) + " |")

bad = [r for r in runs + quiet_runs
       if r.get("first_error") or r.get("lost") or r.get("failed_subscribers")]
if bad:
    out.append("\nRuns with errors or losses: " + "; ".join(
        f'{r["label"]} {r["subscribers"]} ({r["window"]}): {r.get("first_error")}, lost {r.get("lost")}'
        for r in bad))
print("\n".join(out))
PY
cat "$OUT/results.md"
