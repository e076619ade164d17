"""Python `websockets` peer for Duplex's interop tests (tests/interop/tests/python.rs).

Run with the project's venv: `.tools/py3/bin/python tests/interop/python/peer.py ...`
(`cargo xtask setup python-websockets` makes it). Node's `tests/interop/node/peer.js`
speaks exactly the same command line, wire commands and report lines, so the Rust tests
drive both the same way.

    peer.py server [DEFLATE] [--fragment N]
        Echo server on 127.0.0.1, port chosen by the OS (first line tells it).
    peer.py client URL [DEFLATE] [--fragment N] --sizes N,N,...
                   [--close CODE:REASON | --ask-close CODE:REASON]
        Sends a text and a binary message of each size, checks each echo byte for
        byte, pings the server and waits for the pong, asks the server to ping it
        (and checks the ping arrived), then closes (--close) or asks the server to
        close (--ask-close). Exits 0 only if every check held.

    DEFLATE: --compression off|deflate  --server-max-window-bits N
             --client-max-window-bits N  --server-no-context-takeover
             --client-no-context-takeover
    --fragment N: send each data message longer than N in fragments of N
        bytes (binary) or N characters (text: websockets fragments `str` by
        characters; Node's peer splits text at N bytes, inside characters).
    --incompressible: binary messages are random bytes throughout, which
        deflate cannot shrink (the compressed frame is larger).

Reports are JSON lines on stdout, one per thing seen, each with an "event":
listening {port} · open {conn, request_extensions, response_extensions} ·
message {conn, kind, len, sha1, frames} (server: each data message received, and
in how many frames) · echo {kind, len, sha1, ok, frames} (client: each round trip;
frames of the echo) · ping {conn, payload} (a ping
received) · pong {conn, payload} (the answer to our ping) · closed {conn, code, reason}
(the close frame the other side sent; 1006 when none) · done {ok} (client) ·
error {message}.

Wire commands are text messages that begin with NUL ("\\x00cmd:"), answered with
"\\x00ack:...": `ping:TEXT` (the server pings with TEXT and answers `ack:ping:TEXT`;
the peer scripts wait for the pong first), `pings` (answers `ack:pings:` + a JSON list
of the ping payloads received so far), `close:CODE:REASON` (the server closes with
CODE and REASON). The in-test Duplex server implements `ping` and `close` the same way.
"""

import argparse
import asyncio
import collections
import hashlib
import json
import random
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode

CMD = "\x00cmd:"
ACK = "\x00ack:"
# Large enough for the 16 MiB messages, and a bound all the same.
MAX_SIZE = 32 << 20
TIMEOUT = 90


def report(event, **fields):
    fields = {"event": event, **fields}
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def sha1(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha1(data).hexdigest()


class PingLog:
    """Records the payload of every ping received (the library answers it), and
    how many frames each data message came in."""

    def init_pings(self):
        self.pings = []
        self.ping_seen = asyncio.Event()
        self.frames = collections.deque()
        self.frames_so_far = 0

    def process_event(self, event):
        if isinstance(event, Frame):
            if event.opcode is Opcode.PING:
                self.pings.append(bytes(event.data).decode(errors="replace"))
                self.ping_seen.set()
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self.frames_so_far += 1
                if event.fin:
                    self.frames.append(self.frames_so_far)
                    self.frames_so_far = 0
        super().process_event(event)

    def frames_of_last_message(self):
        """Frames of the message recv() just returned (messages arrive in order)."""
        return self.frames.popleft() if self.frames else None


class LoggingServerConnection(PingLog, ServerConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_pings()


class LoggingClientConnection(PingLog, ClientConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.init_pings()


def deflate_options(args, server):
    """`compression` and `extensions` arguments for serve()/connect()."""
    if args.compression == "off":
        return {"compression": None}
    plain = (
        args.server_max_window_bits is None
        and args.client_max_window_bits is None
        and not args.server_no_context_takeover
        and not args.client_no_context_takeover
    )
    if plain:
        # The library's own defaults.
        return {"compression": "deflate"}
    if server:
        factory = ServerPerMessageDeflateFactory(
            server_no_context_takeover=args.server_no_context_takeover,
            client_no_context_takeover=args.client_no_context_takeover,
            server_max_window_bits=args.server_max_window_bits,
            client_max_window_bits=args.client_max_window_bits,
        )
    else:
        factory = ClientPerMessageDeflateFactory(
            server_no_context_takeover=args.server_no_context_takeover,
            client_no_context_takeover=args.client_no_context_takeover,
            server_max_window_bits=args.server_max_window_bits,
            client_max_window_bits=args.client_max_window_bits or True,
        )
    return {"compression": None, "extensions": [factory]}


def fragments(message, size):
    """`message` whole, or as a list of fragments of `size` (for send())."""
    if not size or len(message) <= size:
        return message
    return [message[i : i + size] for i in range(0, len(message), size)]


def parse_close(text):
    code, _, reason = text.partition(":")
    return int(code), reason


async def handle_command(ws, conn, command):
    name, _, arg = command.partition(":")
    if name == "ping":
        waiter = await ws.ping(arg.encode())
        await asyncio.wait_for(waiter, TIMEOUT)
        report("pong", conn=conn, payload=arg)
        await ws.send(ACK + "ping:" + arg)
    elif name == "pings":
        await ws.send(ACK + "pings:" + json.dumps(ws.pings))
    elif name == "close":
        code, reason = parse_close(arg)
        await ws.close(code, reason)
    else:
        report("error", conn=conn, message=f"unknown command {command!r}")


async def run_server(args):
    counter = 0

    async def handler(ws):
        nonlocal counter
        counter += 1
        conn = counter
        report(
            "open",
            conn=conn,
            request_extensions=ws.request.headers.get("Sec-WebSocket-Extensions"),
            response_extensions=ws.response.headers.get("Sec-WebSocket-Extensions"),
        )
        try:
            async for message in ws:
                frames = ws.frames_of_last_message()
                if isinstance(message, str) and message.startswith(CMD):
                    await handle_command(ws, conn, message[len(CMD) :])
                    continue
                kind = "text" if isinstance(message, str) else "binary"
                size = len(message.encode()) if kind == "text" else len(message)
                report("message", conn=conn, kind=kind, len=size, sha1=sha1(message), frames=frames)
                await ws.send(fragments(message, args.fragment))
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        report("closed", conn=conn, code=ws.close_code, reason=ws.close_reason)

    async with serve(
        handler,
        "127.0.0.1",
        0,
        max_size=MAX_SIZE,
        ping_interval=None,
        create_connection=LoggingServerConnection,
        **deflate_options(args, server=True),
    ) as server:
        port = server.sockets[0].getsockname()[1]
        report("listening", port=port)
        await server.serve_forever()


WORDS = ["duplex ", "héllo ", "wörld ", "€uro ", "日本語 ", "🦀 ", "websocket ", "ping "]


def make_text(size, rng):
    """Valid UTF-8 of exactly `size` bytes, with 2-, 3- and 4-byte characters."""
    chunk = bytearray()
    target = min(size, 1 << 16)
    while True:
        word = rng.choice(WORDS).encode()
        if len(chunk) + len(word) > target:
            break
        chunk += word
    out = bytearray()
    while len(out) + len(chunk) <= size and chunk:
        out += chunk
    out += b"x" * (size - len(out))
    return out.decode()


def make_binary(size, rng, incompressible=False):
    """`size` bytes: 64 random bytes, then the same 64 again, and so on; all
    random with `incompressible`."""
    if incompressible:
        return rng.randbytes(size)
    out = bytearray()
    while len(out) < size:
        block = rng.randbytes(64)
        out += block + block
    return bytes(out[:size])


async def run_client(args):
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rng = random.Random(1234)
    ok = True
    async with connect(
        args.url,
        max_size=MAX_SIZE,
        ping_interval=None,
        open_timeout=TIMEOUT,
        create_connection=LoggingClientConnection,
        **deflate_options(args, server=False),
    ) as ws:
        report(
            "open",
            conn=1,
            request_extensions=ws.request.headers.get("Sec-WebSocket-Extensions"),
            response_extensions=ws.response.headers.get("Sec-WebSocket-Extensions"),
        )
        for size in sizes:
            for kind in ("text", "binary"):
                sent = (
                    make_text(size, rng)
                    if kind == "text"
                    else make_binary(size, rng, args.incompressible)
                )
                await ws.send(fragments(sent, args.fragment))
                echo = await asyncio.wait_for(ws.recv(), TIMEOUT)
                frames = ws.frames_of_last_message()
                same = type(echo) is type(sent) and echo == sent
                ok &= same
                report("echo", kind=kind, len=size, sha1=sha1(sent), ok=same, frames=frames)

        # We ping; the server answers.
        waiter = await ws.ping(b"ping from websockets")
        await asyncio.wait_for(waiter, TIMEOUT)
        report("pong", conn=1, payload="ping from websockets")

        # The server pings; the library answers; we saw it.
        await ws.send(CMD + "ping:ping from the server")
        ack = await asyncio.wait_for(ws.recv(), TIMEOUT)
        got = ack == ACK + "ping:ping from the server"
        await asyncio.wait_for(ws.ping_seen.wait(), TIMEOUT)
        for payload in ws.pings:
            report("ping", conn=1, payload=payload)
        ok &= got and "ping from the server" in ws.pings

        if args.ask_close:
            await ws.send(CMD + "close:" + args.ask_close)
            try:
                extra = await asyncio.wait_for(ws.recv(), TIMEOUT)
                report("error", message=f"message after asking to close: {extra!r}")
                ok = False
            except ConnectionClosed:
                pass
        else:
            code, reason = parse_close(args.close or "1000:")
            await ws.close(code, reason)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        report("closed", conn=1, code=ws.close_code, reason=ws.close_reason)
    report("done", ok=ok)
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("url", nargs="?")
    parser.add_argument("--compression", choices=["off", "deflate"], default="deflate")
    parser.add_argument("--server-max-window-bits", type=int)
    parser.add_argument("--client-max-window-bits", type=int)
    parser.add_argument("--server-no-context-takeover", action="store_true")
    parser.add_argument("--client-no-context-takeover", action="store_true")
    parser.add_argument("--fragment", type=int)
    parser.add_argument("--incompressible", action="store_true")
    parser.add_argument("--sizes", default="0,125,126")
    parser.add_argument("--close", help="CODE:REASON the client closes with")
    parser.add_argument("--ask-close", help="CODE:REASON the server is asked to close with")
    args = parser.parse_args()
    try:
        if args.role == "server":
            asyncio.run(run_server(args))
            return 0
        if not args.url:
            parser.error("client needs a URL")
        return asyncio.run(run_client(args))
    except Exception as error:  # report, then fail
        report("error", message=f"{type(error).__name__}: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
