/**
 * The hub over plain HTTP, for networks that break WebSockets: a
 * {@link WebSocketLike} whose frames come down one `text/event-stream`
 * response (`GET /session`, read with `fetch`) and go up as `POST`s
 * (`docs/protocol.md`, "HTTP transports").
 *
 * Invariants:
 * - One stream and at most one `POST` in flight per socket (HTTP/1.1 allows
 *   six connections per origin): commands sent meanwhile go in the next
 *   `POST`, in order, one JSON text per line.
 * - Every numbered event's id is remembered; a stream that ends without a
 *   `close` event is resumed from it (`Last-Event-ID`), a few times, so a
 *   proxy's cut loses nothing. A refused resume (4009), or none possible,
 *   closes the socket as a dropped WebSocket would (1006): the client then
 *   reconnects and recovers its channels from their offsets.
 * - The hub's close (`close` event) is passed on with its code and reason.
 */

import type { WebSocketLike } from "./client.js";

/** The `fetch` the transport uses (the global one by default). */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** How many times a cut stream is resumed before the socket counts as dropped. */
const RESUMES = 3;

/** `ws://host/ws` → `http://host/session` (and `wss` → `https`). */
export function sessionUrl(wsUrl: string): string {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = url.pathname.replace(/\/ws$/, "") + "/session";
  url.search = "";
  return url.toString();
}

interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

/** A hub session over `GET /session` + `POST /session`, shaped as a WebSocket. */
export class HttpSocket implements WebSocketLike {
  binaryType = "arraybuffer";
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  private session: string | null = null;
  private last = 0;
  private resumes = 0;
  private readonly outbox: (string | ArrayBuffer)[] = [];
  private posting = false;
  private abort: AbortController | null = null;

  constructor(
    private readonly url: string,
    private readonly fetchImpl: FetchLike,
  ) {
    void this.stream();
  }

  send(data: string | ArrayBuffer): void {
    if (this.readyState !== 1) throw new Error("not open");
    this.outbox.push(data);
    void this.flush();
  }

  close(): void {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    this.abort?.abort();
    // Tell the hub at once (else the session waits for a resume).
    if (this.session) {
      this.fetchImpl(this.target(), { method: "DELETE", keepalive: true }).catch(() => {});
    }
  }

  private target(): string {
    return `${this.url}?session=${encodeURIComponent(this.session ?? "")}`;
  }

  /** Opens (or resumes) the stream and reads it until it ends. */
  private async stream(): Promise<void> {
    const abort = new AbortController();
    this.abort = abort;
    const headers: Record<string, string> = { Accept: "text/event-stream" };
    let url = this.url;
    if (this.session) {
      url = this.target();
      headers["Last-Event-ID"] = String(this.last);
    }
    let closed = false;
    try {
      const response = await this.fetchImpl(url, { headers, cache: "no-store", credentials: "same-origin", signal: abort.signal });
      if (!response.ok || !response.body) {
        return this.finish(1006, `HTTP ${response.status}`);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let text = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let end: number;
        while ((end = text.indexOf("\n\n")) >= 0) {
          const block = text.slice(0, end);
          text = text.slice(end + 2);
          const event = parse(block);
          if (event && this.dispatch(event)) closed = true;
        }
        if (closed) {
          abort.abort();
          return;
        }
      }
    } catch (error) {
      if (this.readyState >= 2) return;
      this.onerror?.(error);
    }
    if (this.readyState >= 2 || closed) return;
    // Cut without a close: resume from the last event, a few times.
    if (this.session && this.readyState === 1 && this.resumes < RESUMES) {
      this.resumes += 1;
      await new Promise((resolve) => setTimeout(resolve, 100 * this.resumes));
      if (this.readyState === 1) return this.stream();
      return;
    }
    this.finish(1006, "the event stream was cut");
  }

  /** Acts on one event; true when it ends the socket. */
  private dispatch(event: SseEvent): boolean {
    if (event.id !== undefined) {
      const id = Number(event.id);
      if (Number.isSafeInteger(id)) {
        if (id <= this.last) return false; // already seen (a resumed stream)
        this.last = id;
      }
    }
    switch (event.event) {
      case "open": {
        const data = JSON.parse(event.data) as { session?: string };
        this.resumes = 0;
        if (this.session === null && typeof data.session === "string") {
          this.session = data.session;
          this.readyState = 1;
          this.onopen?.({});
        }
        return false;
      }
      case "close": {
        const data = JSON.parse(event.data) as { code?: number; reason?: string };
        const code = typeof data.code === "number" ? data.code : 1006;
        // 4009: the session cannot be resumed here: a drop like any other.
        this.finish(code === 4009 ? 1006 : code, data.reason ?? "");
        return true;
      }
      case "binary": {
        const raw = atob(event.data);
        const bytes = new Uint8Array(raw.length);
        for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
        this.onmessage?.({ data: bytes.buffer });
        return false;
      }
      case undefined:
        this.onmessage?.({ data: event.data });
        return false;
      default:
        return false;
    }
  }

  /** POSTs what waits, one request at a time, in order. */
  private async flush(): Promise<void> {
    if (this.posting || this.outbox.length === 0 || this.readyState !== 1) return;
    this.posting = true;
    let body: string | ArrayBuffer;
    let type = "text/plain;charset=UTF-8";
    if (typeof this.outbox[0] !== "string") {
      body = this.outbox.shift() as ArrayBuffer;
      type = "application/octet-stream";
    } else {
      const lines: string[] = [];
      while (typeof this.outbox[0] === "string") lines.push(this.outbox.shift() as string);
      body = lines.join("\n");
    }
    try {
      const response = await this.fetchImpl(this.target(), { method: "POST", body, headers: { "Content-Type": type }, cache: "no-store" });
      if (!response.ok) {
        this.finish(1006, `POST: HTTP ${response.status}`);
        return;
      }
    } catch {
      this.finish(1006, "POST failed");
      return;
    } finally {
      this.posting = false;
    }
    void this.flush();
  }

  private finish(code: number, reason: string): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.abort?.abort();
    this.onclose?.({ code, reason });
  }
}

/** One SSE event block; undefined for a comment or an empty block. */
function parse(block: string): SseEvent | undefined {
  const event: SseEvent = { data: "" };
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line === "" || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "id") event.id = value;
    else if (field === "event") event.event = value;
  }
  if (data.length === 0) return undefined;
  event.data = data.join("\n");
  return event;
}
