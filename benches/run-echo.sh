#!/usr/bin/env bash
# End-to-end echo benchmark: duplex beside peer WebSocket servers and plain
# TCP, all in one run, so that ratios compare like with like on a noisy box.
#
# Every server runs pinned to core 0 (`taskset -c 0`), the load generator
# (`duplex bench`, the duplex client) to core 1. Each server runs on its own
# port for the whole echo and connect part; for every test the servers are
# measured one after the other, so a burst of noise hits one row rather than
# one implementation. Idle memory uses a fresh server per measurement.
#
#   benches/run-echo.sh                  # everything, about 10 minutes
#   DUR=3 IMPLS="raw duplex" benches/run-echo.sh
#
# Environment: DUR (seconds per pipelined echo and connect run, default 5),
# ROUNDS (rounds of those, default 2; the tables take each implementation's
# best round), PP_DUR (seconds per ping-pong run, default 3), IMPLS (default
# all six; `uws` is uWebSockets through Node.js, benches/uws/echo.js, installed
# here with `npm ci`),
# IDLE (connection counts for duplex, default "10000 18000"), PEER_IDLE
# (connection count for the peers, empty to skip, default 10000), HOLD
# (seconds the idle connections are held before the last memory reading,
# default 8: `duplex echo` parks connections quiet for 5 s, and its
# allocator gives freed pages back after 1 s), OUT (result
# directory, default target/bench-echo/TIMESTAMP), SERVER_CPU / CLIENT_CPU
# (cores, default 0 and 1), OLD_DUPLEX (a `duplex` binary of an earlier
# commit: with `duplex-old` in IMPLS it runs beside the new one, measured the
# same way, e.g. IMPLS="raw duplex-old duplex" OLD_DUPLEX=/tmp/perf-old/duplex). Results: OUT/results.jsonl (one JSON object per
# run, from `duplex bench --json`), OUT/results.md (tables and ratios),
# OUT/*.log (servers' and generator's standard error).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${DUR:-5}
PP_DUR=${PP_DUR:-3}
ROUNDS=${ROUNDS:-2}
IMPLS=${IMPLS:-"raw uws tungstenite fastwebsockets tokio-websockets duplex"}
IDLE=${IDLE:-"10000 18000"}
PEER_IDLE=${PEER_IDLE-10000}
HOLD=${HOLD:-8}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-target/bench-echo/$(date -u +%Y%m%dT%H%M%SZ)}
SOURCES=127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4

cargo build --release -p duplex-cli -p duplex-bench-peers
if [[ " $IMPLS " == *" uws "* ]]; then
    command -v node >/dev/null || { echo "run-echo: node not found (needed for uws)" >&2; exit 1; }
    [[ -d benches/uws/node_modules/uwebsockets ]] || (cd benches/uws && npm ci --no-audit --no-fund)
fi
BIN=${CARGO_TARGET_DIR:-target}/release
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

declare -A PORT=([raw]=9100 [tungstenite]=9101 [fastwebsockets]=9102 [tokio-websockets]=9103 [duplex]=9104 [duplex-lib]=9105 [uws]=9106 [duplex-old]=9107)
declare -A PID=()

stop_all() {
    for impl in "${!PID[@]}"; do
        kill "${PID[$impl]}" 2>/dev/null || true
        wait "${PID[$impl]}" 2>/dev/null || true
        unset "PID[$impl]"
    done
}
trap stop_all EXIT

# start IMPL: starts IMPL's echo server on its port, pinned to SERVER_CPU.
start() {
    local impl=$1 port=${PORT[$1]}
    if [[ $impl == duplex-lib ]]; then
        taskset -c "$SERVER_CPU" "$BIN/peer-echo" --impl duplex --listen "127.0.0.1:$port" \
            >>"$OUT/server-$impl.log" 2>&1 &
    elif [[ $impl == uws ]]; then
        taskset -c "$SERVER_CPU" node benches/uws/echo.js --listen "127.0.0.1:$port" \
            >>"$OUT/server-$impl.log" 2>&1 &
    elif [[ $impl == duplex-old ]]; then
        taskset -c "$SERVER_CPU" "${OLD_DUPLEX:?duplex-old needs OLD_DUPLEX}" echo --listen "127.0.0.1:$port" --no-compress \
            >>"$OUT/server-$impl.log" 2>&1 &
    elif [[ $impl == duplex ]]; then
        taskset -c "$SERVER_CPU" "$BIN/duplex" echo --listen "127.0.0.1:$port" --no-compress \
            >>"$OUT/server-$impl.log" 2>&1 &
    else
        taskset -c "$SERVER_CPU" "$BIN/peer-echo" --impl "$impl" --listen "127.0.0.1:$port" \
            >>"$OUT/server-$impl.log" 2>&1 &
    fi
    PID[$impl]=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "run-echo: $impl did not start listening on $port" >&2
    exit 1
}

url() {
    if [[ $1 == raw ]]; then echo "tcp://127.0.0.1:${PORT[$1]}"; else echo "ws://127.0.0.1:${PORT[$1]}/"; fi
}

# bench IMPL SUBCOMMAND ARGS...: one `duplex bench` run against IMPL, pinned
# to CLIENT_CPU, its JSON line appended to the results.
bench() {
    local impl=$1 sub=$2
    shift 2
    echo "== $sub $impl $*" >&2
    echo "== $sub $impl $*" >>"$OUT/generator.log"
    taskset -c "$CLIENT_CPU" "$BIN/duplex" bench "$sub" --url "$(url "$impl")" \
        --server-pid "${PID[$impl]}" --label "$impl" --json "$@" \
        2>>"$OUT/generator.log" | tee -a "$RESULTS" >&2 ||
        echo "run-echo: $sub $impl $* failed (see $OUT/generator.log)" >&2
    sleep 0.5
}

echo "run-echo: results in $OUT" >&2
for impl in $IMPLS; do start "$impl"; done

for round in $(seq "$ROUNDS"); do
    # Pipelined echo: 100 connections × 16 in flight; 1 MiB with 4 × 2.
    for size in 20 1024 16384 1048576; do
        if [[ $size == 1048576 ]]; then load=(--connections 4 --in-flight 2); else load=(--connections 100 --in-flight 16); fi
        for impl in $IMPLS; do bench "$impl" echo "${load[@]}" --size "$size" --duration "$DUR"; done
    done
    # Connection rate: 16 under way at once.
    for impl in $IMPLS; do
        bench "$impl" connect --concurrency 16 --duration "$DUR" --source-ips "$SOURCES"
    done
done
# Ping-pong: one connection, one message in flight.
for size in 20 1024 16384 1048576; do
    for impl in $IMPLS; do
        bench "$impl" echo --connections 1 --in-flight 1 --size "$size" --duration "$PP_DUR"
    done
done
stop_all

# Idle memory: a fresh server for every measurement. `duplex-lib` is the
# library alone (peer-echo's plain `accept_with` + feed loop) beside the
# `duplex echo` command, whose task also carries the TLS path.
for impl in $IMPLS duplex-lib; do
    [[ $impl == raw ]] && continue
    [[ $impl == duplex-lib && " $IMPLS " != *" duplex "* ]] && continue
    counts=$PEER_IDLE
    [[ $impl == duplex || $impl == duplex-old ]] && counts=$IDLE
    for n in $counts; do
        start "$impl"
        sleep 0.5
        bench "$impl" idle --connections "$n" --hold "$HOLD" --source-ips "$SOURCES"
        stop_all
        sleep 1
    done
done

python3 - "$RESULTS" >"$OUT/results.md" <<'PY'
"""Tables and ratios from results.jsonl."""
import json
import sys

runs = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
impls = []
for r in runs:
    if r["bench"] != "idle" and r["label"] not in impls:
        impls.append(r["label"])
peers = [i for i in impls if i not in ("raw", "duplex", "duplex-old")]
sizes = {20: "20 B", 1024: "1 KiB", 16384: "16 KiB", 1048576: "1 MiB"}


def find(bench, label, **kw):
    """The best of the rounds of one test: most messages or connections per
    second (noise on a shared machine only ever slows a run down)."""
    matches = [r for r in runs if r["bench"] == bench and r["label"] == label
               and all(r.get(k) == v for k, v in kw.items()) and not r.get("first_error")]
    key = lambda r: r.get("messages_per_s") or r.get("connections_per_s") or 0
    return max(matches, key=key, default=None)


def num(x, digits=0):
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "–"


targets = []
out = []
out.append("### Pipelined echo: messages per second (higher is better)\n")
out.append("| payload | load | " + " | ".join(impls) + " | duplex / raw | duplex / best peer |")
out.append("|---|---|" + "---:|" * (len(impls) + 2))
cpu_rows = []
lat_rows = []
for size, name in sizes.items():
    pipelined = [r for r in runs if r["bench"] == "echo" and r["size"] == size and r["in_flight"] > 1]
    if not pipelined:
        continue
    load = f'{pipelined[0]["connections"]} × {pipelined[0]["in_flight"]}'
    get = lambda label: find("echo", label, size=size, connections=pipelined[0]["connections"], in_flight=pipelined[0]["in_flight"])
    rate = {i: (get(i) or {}).get("messages_per_s") for i in impls}
    cpu = {i: (get(i) or {}).get("server_cpu_us_per_msg") for i in impls}
    lat = {i: (get(i) or {}).get("latency", {}) for i in impls}
    best_peer = max((rate[p] for p in peers if rate[p]), default=None)
    best_cpu = min((cpu[p] for p in peers if cpu[p]), default=None)
    out.append(f"| {name} | {load} | " + " | ".join(num(rate[i]) for i in impls)
               + f' | {ratio(rate.get("duplex"), rate.get("raw"))} | {ratio(rate.get("duplex"), best_peer)} |')
    cpu_rows.append(f"| {name} | {load} | " + " | ".join(num(cpu[i], 2) for i in impls)
                    + f' | {ratio(cpu.get("duplex"), cpu.get("raw"))} | {ratio(cpu.get("duplex"), best_cpu)} |')
    lat_rows.append(f"| {name} | {load} | " + " | ".join(
        f'{num(lat[i].get("p50_us"))} / {num(lat[i].get("p99_us"))} / {num(lat[i].get("p99_9_us"))}' if lat[i] else "–"
        for i in impls) + " |")
    d, raw = rate.get("duplex"), rate.get("raw")
    if d and raw and size in (20, 1024):
        targets.append((f"echo {name} ≥ 0.9x raw (msg/s)", d / raw >= 0.9, f"{d / raw:.2f}x"))
    if d and raw and size == 16384:
        targets.append((f"echo {name} ≥ 0.8x raw (msg/s)", d / raw >= 0.8, f"{d / raw:.2f}x"))
    if d and best_peer and size == 1048576:
        targets.append((f"echo {name} ≥ best peer (msg/s)", d >= best_peer, f"{d / best_peer:.2f}x"))

out.append("\n### Pipelined echo: server CPU per message, µs (lower is better)\n")
out.append("| payload | load | " + " | ".join(impls) + " | duplex / raw | duplex / best peer |")
out.append("|---|---|" + "---:|" * (len(impls) + 2))
out += cpu_rows
out.append("\n### Pipelined echo: round trip p50 / p99 / p99.9, µs\n")
out.append("| payload | load | " + " | ".join(impls) + " |")
out.append("|---|---|" + "---:|" * len(impls))
out += lat_rows

out.append("\n### Ping-pong (1 connection, 1 in flight): round trip p50 / p99, µs, and server CPU per message, µs\n")
out.append("| payload | " + " | ".join(impls) + " | duplex p50 / best peer p50 |")
out.append("|---|" + "---:|" * (len(impls) + 1))
for size, name in sizes.items():
    row = {i: find("echo", i, size=size, connections=1, in_flight=1) for i in impls}
    if not any(row.values()):
        continue
    cells = []
    for i in impls:
        r = row[i]
        cells.append(f'{num(r["latency"]["p50_us"], 1)} / {num(r["latency"]["p99_us"], 1)} ({num(r["server_cpu_us_per_msg"], 1)})' if r else "–")
    p50 = {i: row[i]["latency"]["p50_us"] for i in impls if row[i]}
    best = min((p50[p] for p in peers if p in p50), default=None)
    out.append(f"| {name} | " + " | ".join(cells) + f' | {ratio(p50.get("duplex"), best)} |')
    if "duplex" in p50 and best:
        targets.append((f"ping-pong {name} p50 ≤ best peer", p50["duplex"] <= best, f'{p50["duplex"]:.1f} vs {best:.1f} µs'))

out.append("\n### Connection rate (16 at once; connect, handshake, close handshake)\n")
out.append("| | " + " | ".join(impls) + " | duplex / best peer |")
out.append("|---|" + "---:|" * (len(impls) + 1))
conn = {i: find("connect", i) for i in impls}
rate = {i: conn[i]["connections_per_s"] for i in impls if conn[i]}
best = max((rate[p] for p in peers if p in rate), default=None)
out.append("| connections/s | " + " | ".join(num(rate.get(i)) for i in impls) + f' | {ratio(rate.get("duplex"), best)} |')
out.append("| latency p50 / p99, µs | " + " | ".join(
    f'{num(conn[i]["latency"]["p50_us"])} / {num(conn[i]["latency"]["p99_us"])}' if conn[i] else "–" for i in impls) + " | |")
out.append("| server CPU per connection, µs | " + " | ".join(
    num(conn[i]["server_cpu_us_per_conn"], 1) if conn[i] else "–" for i in impls) + " | |")
if "duplex" in rate and best:
    targets.append(("connection rate ≥ best peer", rate["duplex"] >= best, f'{rate["duplex"] / best:.2f}x'))

idle = [r for r in runs if r["bench"] == "idle"]
if idle:
    out.append("\n### Idle connections: server memory per connection\n")
    out.append("Per connection: the growth of the server's anonymous memory (`RssAnon`: heap, stacks); "
               "the growth of its whole RSS beside it also counts the program's code paged in meanwhile, "
               "a fixed cost.\n")
    out.append("| server | connections | RSS before | RSS after | per connection | RSS per connection | generator (duplex client) per connection |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in idle:
        mib = lambda b: f"{b / 2**20:,.1f} MiB" if b is not None else "–"
        out.append(f'| {r["label"]} | {r["connections"]:,} | {mib(r["server_rss_before"])} | {mib(r["server_rss_after"])} '
                   f'| {r["server_bytes_per_conn"]:,.0f} B | {r["server_rss_bytes_per_conn"]:,.0f} B '
                   f'| {r["client_bytes_per_conn"]:,.0f} B |')
        if r["label"] == "duplex":
            targets.append((f'idle memory at {r["connections"]:,} ≤ 0.5 KiB per connection',
                            r["server_bytes_per_conn"] <= 512, f'{r["server_bytes_per_conn"]:,.0f} B'))

failed = [r for r in runs if r.get("first_error")]
if failed:
    out.append("\nRuns with errors: " + "; ".join(f'{r["bench"]} {r["label"]}: {r["first_error"]}' for r in failed))
out.append("\n### Targets\n")
out.append("| target | result | measured |")
out.append("|---|---|---:|")
for name, ok, measured in targets:
    out.append(f"| {name} | {'met' if ok else '**missed**'} | {measured} |")
print("\n".join(out))
PY
cat "$OUT/results.md"
