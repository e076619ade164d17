"""Python `websockets` beside duplex-proto on the `deflate_ratio` messages.

Reads the chat JSON messages written by

    cargo run --release -p duplex-benches --example deflate_ratio -- --dump /tmp/chat.jsonl

(one message per line) and sends every one of them through websockets'
permessage-deflate as a server would: `PerMessageDeflate.encode` on a TEXT
frame, then `Frame.serialize(mask=False)` (server frames are unmasked). Every
message is compressed (websockets has no threshold). For windows of 15 and 10
bits, with and without context takeover, it prints, as a Markdown table:

- wire bytes: compressed payload plus frame header, counted as the Rust
  example counts the bytes a server `Connection` transmits (2 bytes up to a
  125-byte payload, 4 up to 65,535, 10 beyond; no mask); checked against
  the length of the serialized frame;
- payload ÷ wire: uncompressed JSON bytes over wire bytes, the Rust example's
  "payload ÷ wire" column;
- send-only speed: messages/s and µs/message for compressing and framing,
  measured like the `deflate` criterion benchmark's `send_only/*`: batches of
  the first 256 messages through one persistent extension object (warm state
  with context takeover), thread CPU time, fastest sample (mean of samples);
  beside it the same for bare `zlib` compress + sync flush, without
  websockets' per-frame Python work.

Compression settings: level 6 (zlib's default, which websockets uses) and, by
default, memLevel 5, what `websockets.asyncio.server.serve` configures
(`compress_settings={"memLevel": 5}`). `--mem-level duplex` uses duplex's
choice instead (window bits - 7: 8 for w15, 3 for w10); `--mem-level N` any
value. Note that websockets' server default window is 12 bits, not 15 or 10.

Run with `.tools/py3/bin/python benches/deflate_ratio_websockets.py /tmp/chat.jsonl`.
"""

import argparse
import time
import zlib

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

# (window bits, context takeover), in the order the Rust example prints them.
SETUPS = [(15, True), (15, False), (10, True), (10, False)]
LEVEL = 6
BATCH = 256
SAMPLES = 20


def header_len(payload_len: int) -> int:
    """Bytes of an unmasked frame header for a payload of this length."""
    if payload_len <= 125:
        return 2
    if payload_len <= 0xFFFF:
        return 4
    return 10


def extension(window_bits: int, takeover: bool, mem_level: int) -> PerMessageDeflate:
    return PerMessageDeflate(
        remote_no_context_takeover=not takeover,
        local_no_context_takeover=not takeover,
        remote_max_window_bits=window_bits,
        local_max_window_bits=window_bits,
        compress_settings={"level": LEVEL, "memLevel": mem_level},
    )


def wire_bytes(messages: list[bytes], ext: PerMessageDeflate) -> int:
    wire = 0
    for data in messages:
        encoded = ext.encode(Frame(Opcode.TEXT, data))
        assert encoded.rsv1
        frame_len = len(encoded.data) + header_len(len(encoded.data))
        wire += frame_len
    return wire


def check_serialized(messages: list[bytes], window_bits: int, takeover: bool, mem_level: int, expected: int) -> None:
    """The same count from `Frame.serialize`, the bytes websockets writes."""
    ext = extension(window_bits, takeover, mem_level)
    total = sum(len(Frame(Opcode.TEXT, d).serialize(mask=False, extensions=[ext])) for d in messages)
    assert total == expected, (total, expected)


def samples(send_batch, batches_per_sample: int) -> tuple[float, float]:
    """Fastest and mean ns/message over SAMPLES samples, after a warm-up."""
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        send_batch()
    per_message = []
    for _ in range(SAMPLES):
        start = time.thread_time_ns()
        for _ in range(batches_per_sample):
            send_batch()
        elapsed = time.thread_time_ns() - start
        per_message.append(elapsed / (batches_per_sample * BATCH))
    return min(per_message), sum(per_message) / len(per_message)


def time_websockets(batch: list[bytes], window_bits: int, takeover: bool, mem_level: int) -> tuple[float, float]:
    ext = extension(window_bits, takeover, mem_level)
    extensions = [ext]

    def send_batch() -> None:
        for data in batch:
            Frame(Opcode.TEXT, data).serialize(mask=False, extensions=extensions)

    return samples(send_batch, 8)


def time_zlib(batch: list[bytes], window_bits: int, takeover: bool, mem_level: int) -> tuple[float, float]:
    def new():
        return zlib.compressobj(level=LEVEL, wbits=-window_bits, memLevel=mem_level)

    encoder = new()

    def send_batch() -> None:
        nonlocal encoder
        for data in batch:
            if not takeover:
                encoder = new()
            out = encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
            out = out[:-4]

    return samples(send_batch, 8)


def rate(ns: float) -> str:
    per_second = 1e9 / ns
    return f"{per_second / 1e3:,.1f} K" if per_second < 1e6 else f"{per_second / 1e6:,.2f} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("messages", help="file of messages, one per line (deflate_ratio --dump)")
    parser.add_argument("--mem-level", default="5", help="zlib memLevel: a number, or 'duplex' for window bits - 7 (default 5, websockets' server default)")
    parser.add_argument("--no-timing", action="store_true", help="print sizes only")
    args = parser.parse_args()

    with open(args.messages, "rb") as f:
        messages = [line.rstrip(b"\n") for line in f if line.strip()]
    count = len(messages)
    payload = sum(map(len, messages))
    plain_wire = sum(len(m) + header_len(len(m)) for m in messages)

    def mem_level_for(window_bits: int) -> int:
        if args.mem_level == "duplex":
            return min(max(window_bits - 7, 1), 8)
        return int(args.mem_level)

    import websockets

    print(
        f"{count} chat JSON messages, {payload} payload bytes ({payload / count:.0f} bytes/message average, "
        f"{min(map(len, messages))} to {max(map(len, messages))}), websockets {websockets.__version__}, "
        f"zlib {zlib.ZLIB_RUNTIME_VERSION}, every message compressed, level {LEVEL}, "
        f"memLevel {args.mem_level}\n"
    )
    header = "| setup | memLevel | wire bytes | bytes/message | payload ÷ wire | uncompressed wire ÷ wire |"
    rule = "|---|---:|---:|---:|---:|---:|"
    if not args.no_timing:
        header += " websockets send, msg/s | µs/msg | bare zlib, msg/s | µs/msg |"
        rule += "---:|---:|---:|---:|"
    print(header)
    print(rule)
    print(f"| no deflate | - | {plain_wire} | {plain_wire / count:.1f} | {payload / plain_wire:.2f}x | 1.00x |" + (" - | - | - | - |" if not args.no_timing else ""))
    batch = messages[:BATCH]
    for window_bits, takeover in SETUPS:
        mem_level = mem_level_for(window_bits)
        wire = wire_bytes(messages, extension(window_bits, takeover, mem_level))
        check_serialized(messages, window_bits, takeover, mem_level, wire)
        label = f"w{window_bits}-{'takeover' if takeover else 'no-takeover'}"
        row = f"| {label} | {mem_level} | {wire} | {wire / count:.1f} | {payload / wire:.2f}x | {plain_wire / wire:.2f}x |"
        if not args.no_timing:
            ws_best, ws_mean = time_websockets(batch, window_bits, takeover, mem_level)
            z_best, z_mean = time_zlib(batch, window_bits, takeover, mem_level)
            row += (
                f" {rate(ws_best)} ({rate(ws_mean)}) | {ws_best / 1e3:.1f} ({ws_mean / 1e3:.1f}) |"
                f" {rate(z_best)} ({rate(z_mean)}) | {z_best / 1e3:.1f} ({z_mean / 1e3:.1f}) |"
            )
        print(row, flush=True)


if __name__ == "__main__":
    main()
