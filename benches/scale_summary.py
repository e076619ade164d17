#!/usr/bin/env python3
"""The table of a benches/run-scale.sh run (docs/benchmarks.md, "Scale").

    scale_summary.py OUT START CONNECTED IDLE   # writes OUT/summary.md, prints it
    scale_summary.py --docs OUT DOCS.md         # puts OUT/summary.md into DOCS.md

Reads what the run left in OUT: shard*.json (one per `duplex bench scale`
shard), pub-*.json (the publishers), nodes.txt, events.txt, spread.txt,
slab-*.txt, sockstat-*.txt. Every figure in the table is computed here from
those files; a figure that cannot be computed is printed as "n/a", never
guessed. In DOCS.md the table replaces what stands between the lines
`<!-- scale:begin -->` and `<!-- scale:end -->`.
"""

import glob
import json
import sys


def load(out):
    shards = [json.load(open(f)) for f in sorted(glob.glob(out + "/shard*.json"))]
    pubs = {}
    for f in glob.glob(out + "/pub-*.json"):
        text = open(f).read().strip()
        if text:
            pubs[f.rsplit("/", 1)[1][4:-5]] = json.loads(text.splitlines()[-1])
    events = {}
    for line in open(out + "/events.txt"):
        name, at = line.split()
        events[name] = float(at)
    return shards, pubs, events


def merged(shards, key):
    """Latency buckets of `channel/phase` over all shards: total, p50, p99, max (ms)."""
    buckets = {}
    received = 0
    for s in shards:
        phase = s["phases"].get(key)
        if not phase:
            continue
        received += phase["received"]
        for value, count in phase["buckets_us"]:
            buckets[value] = buckets.get(value, 0) + count
    total = sum(buckets.values())
    if not total:
        return received, None, None, None
    acc, points = 0, {}
    for value in sorted(buckets):
        acc += buckets[value]
        for q in (0.5, 0.99):
            if q not in points and acc >= q * total:
                points[q] = value / 1000
    return received, points[0.5], points[0.99], max(buckets) / 1000


def curve(shards, name):
    points = {}
    for s in shards:
        for at, n in s[name]:
            points[at] = points.get(at, 0) + n
    return points


def window(points, start, end):
    """Points (tenths of seconds since the Unix epoch) in [start, end) seconds."""
    return {t: n for t, n in points.items() if int(start * 10) <= t < end * 10}


def back(down, up, start, end):
    """Clients down in [start, end), how many came back, when the last did
    (seconds from start), the peak per second over any 1 s."""
    d, u = window(down, start, end), window(up, start, end)
    if not d:
        return 0, 0, None, 0
    last = max(u) / 10 - start if u else None
    peak = max(sum(u.get(t + k, 0) for k in range(10)) for t in u) if u else 0
    return sum(d.values()), sum(u.values()), last, peak


def missing_at_end(shards, pubs, channel):
    """Messages that clients ended without, with no gap announced after
    their last one; the channel's last offset over shards and publishers."""
    highest = max([s["ends"][channel]["highest"] for s in shards]
                  + [p.get("last_offset", 0) for k, p in pubs.items() if k.endswith(channel[6:])])
    missing = 0
    behind = 0
    for s in shards:
        for offset, clients in s["ends"][channel]["clients_at_offset"]:
            if offset < highest:
                missing += (highest - offset) * clients
                behind += clients
    gap_last = sum(s["ends"][channel]["gap_last"] for s in shards)
    away = sum(s["ends"][channel].get("away", 0) for s in shards)
    return highest, missing, behind, gap_last, away


def fmt(value, unit="", digits=0):
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def summary(out, start, connected, idle):
    shards, pubs, events = load(out)
    nodes = {}
    for line in open(out + "/nodes.txt"):
        words = line.split()
        if words[0].startswith("node") and len(words) >= 3:
            node = nodes.setdefault(words[0], {})
            for key, value in zip(words[1::2], words[2::2]):
                node[key] = int(value) if value.isdigit() else value
    clients = sum(s["clients"] for s in shards)
    subs = sum(s["subscriptions"] for s in shards)
    wanted = sum(s["subscriptions_wanted"] for s in shards)
    lines = ["| measure | value |", "|---|---|"]
    row = lambda k, v: lines.append(f"| {k} | {v} |")
    row("clients held (subscriptions confirmed / wanted)", f"{clients:,} ({subs:,} / {wanted:,})")
    row("time to connect and subscribe all", f"{connected - start:.1f} s (slowest shard {max(s['connect_secs'] for s in shards):.1f} s)")
    per_client = []
    for name, node in sorted(nodes.items()):
        if "rss" in node and "rss_before" in node and node.get("fds", 0) > 20:
            per_client.append(((node["rss"] - node["rss_before"]) / (node["fds"] - 20), node["rss"], node["fds"] - 20))
    if per_client:
        row("node RSS per client over the node's own (min–max over nodes)",
            f"{min(p[0] for p in per_client):,.0f}–{max(p[0] for p in per_client):,.0f} B "
            f"(nodes {min(p[1] for p in per_client) / 2**20:.0f}–{max(p[1] for p in per_client) / 2**20:.0f} MiB "
            f"for {min(p[2] for p in per_client):,}–{max(p[2] for p in per_client):,} clients)")
    try:
        slab = (int(open(out + "/slab-after.txt").read()) - int(open(out + "/slab-before.txt").read())) / (2 * clients)
        row("kernel slab per socket (both ends are on this machine: ÷ 2N)", f"{slab:,.0f} B")
    except (OSError, ValueError, ZeroDivisionError):
        row("kernel slab per socket", "n/a")
    def sockstat(name):
        for line in open(out + f"/sockstat-{name}.txt"):
            if line.startswith("TCP:"):
                words = line.split()
                return dict(zip(words[1::2], map(int, words[2::2])))
        return {}
    b, a = sockstat("before"), sockstat("after")
    row("kernel TCP buffer pages, all sockets (sockstat mem, before → after)", f"{b.get('mem', 0):,} → {a.get('mem', 0):,} pages")
    ticks = [n.get(f"idle_cpu_ticks_per_{idle}s") for n in nodes.values() if f"idle_cpu_ticks_per_{idle}s" in n]
    if ticks:
        row(f"node CPU at idle (per node, over {idle} s)", f"{min(ticks) * 10 / idle:.1f}–{max(ticks) * 10 / idle:.1f} ms/s")
    gen = sum(s["rss_bytes"] for s in shards) / max(1, clients)
    row("load generator RSS per client", f"{gen:,.0f} B")
    for channel, phase, what in (
        ("scale:all", "fanout", "fan-out, one publish to every client"),
        ("scale:room", "room", "fan-out to the room while the rest idle"),
        ("scale:room", "churn", "room messages during the kill and the roll"),
        ("scale:all", "churn", "messages to all during the kill and the roll"),
    ):
        got, p50, p99, mx = merged(shards, f"{channel}/{phase}")
        pub = pubs.get(f"{phase}-{channel[6:]}", {})
        audience = clients if channel == "scale:all" else sum(s["room_clients"] for s in shards)
        row(f"{what}: published (acked) → deliveries (of {pub.get('acked', 0):,} × {audience:,})",
            f"{pub.get('published', 0):,} ({pub.get('acked', 0):,}) → {got:,}")
        row(f"{what}: latency p50 / p99 / max", f"{fmt(p50, ' ms', 1)} / {fmt(p99, ' ms', 1)} / {fmt(mx, ' ms', 1)}")
    down, up = curve(shards, "disconnected_per_100ms"), curve(shards, "reconnected_per_100ms")
    if "kill" in events:
        end = events.get("drain0", events["kill"] + 60)
        d, u, last, peak = back(down, up, events["kill"], end)
        row("node killed: its clients disconnected → back", f"{d:,} → {u:,}, the last {fmt(last, ' s', 1)} after the kill")
        row("node killed: peak reconnections (any 1 s)", f"{peak:,}/s")
    drains = sorted((at, name) for name, at in events.items() if name.startswith("drain"))
    stops = drains[1:] + [(events.get("rolled", drains[-1][0] + 60) if drains else 0, "end")]
    if drains:
        spans, total_down, total_up, peaks = [], 0, 0, []
        for (at, _), (until, _) in zip(drains, stops):
            d, u, last, peak = back(down, up, at, until)
            total_down, total_up = total_down + d, total_up + u
            peaks.append(peak)
            if last is not None:
                spans.append(last)
        row("rolling restart: clients moved → back", f"{total_down:,} → {total_up:,}")
        row("rolling restart: per node, the last back after its SIGTERM", f"{fmt(min(spans) if spans else None, ' s', 1)}–{fmt(max(spans) if spans else None, ' s', 1)}; peak {max(peaks):,}/s")
    lost = sum(s["silent_lost"] for s in shards)
    gaps = sum(s["gaps"] for s in shards)
    row("disconnections seen by clients (all causes)", f"{sum(s['disconnects'] for s in shards):,}")
    causes = {}
    for s in shards:
        for cause, n in s.get("disconnect_causes", {}).items():
            causes[cause] = causes.get(cause, 0) + n
    if causes:
        top = sorted(causes.items(), key=lambda kv: -kv[1])
        row("what ended a connection that was up (close code and reason, once per time away)",
            "; ".join(f"{n:,}× {cause or '(none)'}" for cause, n in top[:8]))
    row("gaps announced", f"{gaps:,}")
    row("**silent losses** (offset skipped, no gap)", f"**{lost:,}**")
    for channel in ("scale:all", "scale:room"):
        highest, missing, behind, gap_last, away = missing_at_end(shards, pubs, channel)
        row(f"**missing at the end**, {channel}, clients connected at the end (last offset {highest:,}; "
            f"clients whose last news is a gap: {gap_last:,}; away at the end, not counted: {away:,})",
            f"**{missing:,}** messages ({behind:,} clients behind)")
    failed = sum(p.get("failed", 0) for p in pubs.values())
    row("publishes failed (not acked within 30 s)", f"{failed:,}")
    try:
        spread = open(out + "/spread.txt").read().strip().splitlines()
        lines.append("")
        lines.append("Open files per node (clients + ~20) after each step:")
        lines.append("")
        lines.append("```")
        lines.extend(" ".join(l.split()[1:]) for l in spread)
        lines.append("```")
    except OSError:
        pass
    text = "\n".join(lines) + "\n"
    open(out + "/summary.md", "w").write(text)
    print(text)


def docs(out, path):
    table = open(out + "/summary.md").read()
    text = open(path).read()
    begin, end = "<!-- scale:begin -->\n", "<!-- scale:end -->"
    a, b = text.index(begin) + len(begin), text.index(end)
    open(path, "w").write(text[:a] + table + text[b:])


if __name__ == "__main__":
    if sys.argv[1] == "--docs":
        docs(sys.argv[2], sys.argv[3])
    else:
        summary(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
