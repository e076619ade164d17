"""A flood of history against a running `duplex serve` (docs/operations.md,
"How memory is bounded"): CONNS anonymous
connections publish EACH binary messages of SIZE bytes, each to a channel of
its own, at PACE publishes per second per connection (inside the hub's
rates); on `rate_limited` a connection waits 2.5 s and retries. Prints the
server's VmRSS (from /proc/PID/status) before and after, and its
duplex_history_bytes. Stdlib only (a minimal WebSocket client).

    python3 benches/flood-history.py PORT SERVER_PID PACE
"""
import json, os, socket, struct, sys, threading, time, base64, urllib.request

PORT, PID, PACE = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
CONNS, EACH, SIZE = 5, 700, 60_000

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def send(sock, opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126: head += bytes([0x80 | n])
    elif n < 65536: head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
        (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
    sock.sendall(head + mask + masked)

def recv_exact(f, n):
    data = f.read(n)
    if len(data) != n: raise EOFError
    return data

def recv(f):
    while True:
        b1, b2 = recv_exact(f, 2)
        n = b2 & 0x7F
        if n == 126: n = struct.unpack(">H", recv_exact(f, 2))[0]
        elif n == 127: n = struct.unpack(">Q", recv_exact(f, 8))[0]
        payload = recv_exact(f, n)
        if b1 & 0x0F == 8: raise EOFError(payload)
        if b1 & 0x0F in (1, 2): return payload

def client(n, stats):
    sock = socket.create_connection(("127.0.0.1", PORT))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Protocol: duplex.v1\r\n\r\n").encode())
    f = sock.makefile("rb")
    while f.readline() not in (b"\r\n", b""): pass
    send(sock, 1, json.dumps({"op": "connect", "id": 1}).encode()); recv(f)
    data = b"x" * SIZE
    i = 0
    t0 = time.time()
    while i < EACH:
        wait = t0 + i / PACE - time.time()
        if wait > 0: time.sleep(wait)
        header = json.dumps({"op": "publish", "id": i + 2, "channel": f"flood:{n}:{i}"}).encode()
        send(sock, 2, struct.pack(">I", len(header)) + header + data)
        reply = json.loads(recv(f))
        if reply.get("op") == "published": i += 1; stats["ok"] += 1
        elif reply.get("code") == "rate_limited": stats["limited"] += 1; time.sleep(2.5)
        else: stats["other"] = reply; break

before = rss(PID)
stats = {"ok": 0, "limited": 0}
start = time.time()
threads = [threading.Thread(target=client, args=(n, stats)) for n in range(CONNS)]
for t in threads: t.start()
for t in threads: t.join()
after = rss(PID)
metrics = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics").read().decode()
kept = [l for l in metrics.splitlines() if l.startswith("duplex_history_bytes ")]
print(f"{stats} in {time.time() - start:.1f} s; VmRSS {before} KiB -> {after} KiB "
      f"(+{(after - before) / 1024:.0f} MiB); {kept[0] if kept else 'no duplex_history_bytes'}")
