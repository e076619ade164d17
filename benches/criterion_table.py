#!/usr/bin/env python3
"""Prints the duplex-benches criterion results as the Markdown tables of
docs/benchmarks.md.

Run after `cargo bench -p duplex-benches -- ...` from the workspace root:

    python3 benches/criterion_table.py [target/criterion]

Reads each benchmark's `new/sample.json` (the samples), `new/estimates.json`
(the mean time per iteration) and `new/benchmark.json` (the throughput per
iteration). Each cell is "fastest (mean)": the throughput of the fastest
sample, then of criterion's mean. On a shared, busy machine the mean swings
by tens of percent between runs as other processes come and go, while the
fastest sample (one sample is tens of iterations in a row) stays close to
what the code does on a quiet core; ratios use the fastest samples.
"""

import json
import os
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
GIB = float(1 << 30)


def load(group, function, value):
    base = os.path.join(ROOT, group, function, str(value), "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            est = json.load(f)["mean"]
        with open(os.path.join(base, "benchmark.json")) as f:
            bench = json.load(f)
        with open(os.path.join(base, "sample.json")) as f:
            sample = json.load(f)
    except FileNotFoundError:
        return None
    mean = est["point_estimate"]
    fastest = min(t / i for t, i in zip(sample["times"], sample["iters"]))
    tp = bench.get("throughput") or {}
    per_iter = tp.get("Bytes") or tp.get("Elements") or 1
    return {
        "per_sec": per_iter / (fastest * 1e-9),
        "mean_per_sec": per_iter / (mean * 1e-9),
    }


def fmt_size(n):
    n = int(n)
    if n >= 1 << 20:
        return f"{n >> 20} MiB"
    if n >= 1 << 10:
        return f"{n >> 10} KiB"
    return f"{n} B"


def cell(r, scale, digits):
    if r is None:
        return "-"
    return f"{r['per_sec'] / scale:.{digits}f} ({r['mean_per_sec'] / scale:.{digits}f})"


def ratio(a, b):
    if a is None or b is None:
        return "-"
    return f"{a['per_sec'] / b['per_sec']:.2f}x"


def bytes_table(group, functions, ratios):
    sizes = [20, 1024, 16384, 1048576]
    head = ["payload"] + [f"{f} GiB/s" for f in functions] + [f"{a} ÷ {b}" for a, b in ratios]
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for size in sizes:
        rows = {f: load(group, f, size) for f in functions}
        cells = [fmt_size(size)] + [cell(rows[f], GIB, 2) for f in functions]
        cells += [ratio(rows[a], rows[b]) for a, b in ratios]
        print("| " + " | ".join(cells) + " |")
    print()


def header_len(payload):
    return (2 if payload <= 125 else 4 if payload <= 0xFFFF else 10) + 4


def parse_table():
    peers = ["duplex", "tungstenite", "tokio_tungstenite", "tokio_websockets", "fastwebsockets"]
    head = ["payload"] + [f"{p} msg/s" for p in peers]
    head += [f"duplex ÷ {p}" for p in peers[1:]] + ["duplex wire GiB/s"]
    print("| " + " | ".join(head) + " |")
    print("|---" + "|---:" * (len(head) - 1) + "|")
    for payload in [20, 1024, 16384]:
        rows = {p: load("parse", p, payload) for p in peers}
        cells = [fmt_size(payload)]
        for p in peers:
            r = rows[p]
            if r is None:
                cells.append("-")
            elif r["per_sec"] >= 1e6:
                cells.append(f"{r['per_sec'] / 1e6:.2f} M ({r['mean_per_sec'] / 1e6:.2f} M)")
            else:
                cells.append(f"{r['per_sec'] / 1e3:.0f} K ({r['mean_per_sec'] / 1e3:.0f} K)")
        cells += [ratio(rows["duplex"], rows[p]) for p in peers[1:]]
        d = rows["duplex"]
        wire = "-" if d is None else f"{d['per_sec'] * (payload + header_len(payload)) / GIB:.2f}"
        cells.append(wire)
        print("| " + " | ".join(cells) + " |")
    print()


def deflate_table():
    cases = ["uncompressed", "w15-takeover", "w15-no-takeover", "w10-takeover", "w10-no-takeover"]
    print("| setup | round trip msg/s | µs/msg (fastest) | send only (compress + frame) msg/s | µs/msg (fastest) |")
    print("|---|---:|---:|---:|---:|")
    for case in cases:
        rt = load("deflate", "round_trip", case)
        so = load("deflate", "send_only", case)
        cells = [case]
        for r in (rt, so):
            if r is None:
                cells += ["-", "-"]
            else:
                cells += [
                    f"{r['per_sec'] / 1e3:.1f} K ({r['mean_per_sec'] / 1e3:.1f} K)",
                    f"{1e6 / r['per_sec']:.1f}",
                ]
        print("| " + " | ".join(cells) + " |")
    print()


print("### mask\n")
bytes_table(
    "mask",
    ["duplex_apply_mask", "memcpy", "xor_bytewise", "xor_chunks4", "fastwebsockets_unmask"],
    [("duplex_apply_mask", "memcpy"), ("duplex_apply_mask", "xor_chunks4"),
     ("duplex_apply_mask", "fastwebsockets_unmask")],
)
print("### utf8\n")
bytes_table(
    "utf8",
    ["duplex_validator", "simdutf8_basic", "std_from_utf8", "memcpy"],
    [("duplex_validator", "memcpy"), ("duplex_validator", "simdutf8_basic"),
     ("duplex_validator", "std_from_utf8")],
)
print("### parse\n")
parse_table()
print("### deflate (time)\n")
deflate_table()
