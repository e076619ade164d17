/**
 * The recovery machine: the subscriptions across reconnections. A pure state
 * machine (no timer, no socket, no browser API), the TypeScript port of the
 * Rust client's `duplex_hub_proto::Subscriptions`, held to the shared vectors of
 * `crates/hub-proto/tests/vectors/` by `test/vectors.test.mjs`.
 *
 * Invariants, per channel: each offset of an epoch is delivered at most once
 * and in order; a `gap` event comes before the next message whenever
 * messages may have been missed (an offset jump is never silent: it is
 * answered by resubscribing from the last position, and the hub either
 * replays what was missed or says `gap: true`); after a `gap` push naming
 * another epoch, nothing of the channel is delivered until the hub's
 * `subscribed` says where the channel stands.
 *
 * The caller says which channels it wants ({@link Subscriptions.subscribe},
 * {@link Subscriptions.unsubscribe}), reports the connection
 * ({@link Subscriptions.onConnected}, {@link Subscriptions.onDisconnected}),
 * sends what {@link Subscriptions.takeTransmit} returns after every call,
 * and feeds every decoded hub message to {@link Subscriptions.handle}.
 * Messages of channels not wanted are dropped. Request ids come from
 * {@link Subscriptions.nextId}, which the caller uses for its own commands
 * too, so that no two commands share an id.
 */

import { type Command, ProtocolError, type ServerMessage, validChannel } from "./codec.js";

/** Where a channel stands: the last message delivered, in its epoch. */
export interface Position {
  /** The channel history's epoch. */
  epoch: string;
  /** The offset of the last message delivered (0: none yet). */
  offset: number;
}

/** What {@link Subscriptions.handle} hands back, in order. */
export type MachineEvent =
  | { type: "subscribed"; channel: string; recovered: boolean; resubscribed: boolean; reply: ServerMessage }
  | { type: "message"; message: ServerMessage }
  | { type: "gap"; channel: string; epoch: string; offset: number }
  | { type: "subscribe_failed"; channel: string; code: string; message: string }
  | { type: "unsubscribed"; channel: string; reason: string }
  | { type: "other"; message: ServerMessage };

/** Counters of what the machine did, for pages and tests. */
export interface MachineCounters {
  /** Messages dropped as already delivered. */
  duplicates: number;
  /** Offset jumps and gap pushes answered by resubscribing. */
  jumps: number;
  /** Gaps announced. */
  gaps: number;
  /** Resubscriptions answered with `recovered: true`. */
  recovered: number;
  /** Subscribes sent with `since`. */
  resubscribes: number;
}

type Phase = "idle" | "subscribing" | "subscribed" | "failed";

interface Channel {
  recent: number;
  phase: Phase;
  position: Position | null;
  replayUntil: number | null;
  pending: number | null;
  sentSince: Position | null;
  held: boolean;
}

/** The subscriptions' recovery state machine (see the module docs). */
export class Subscriptions {
  /** What the machine counted since it was made. */
  readonly counters: MachineCounters = { duplicates: 0, jumps: 0, gaps: 0, recovered: 0, resubscribes: 0 };
  private readonly chans = new Map<string, Channel>();
  private connected = false;
  private idSeq = 1;
  private readonly inFlight = new Map<number, "subscribe" | "unsubscribe">();
  private transmit: Command[] = [];

  /** A fresh request id (1, 2, 3 …), for this machine's requests and the caller's. */
  nextId(): number {
    return this.idSeq++;
  }

  /** Whether {@link onConnected} was called since the last disconnect. */
  isConnected(): boolean {
    return this.connected;
  }

  /**
   * Wants `channel`: `recent` messages of history on a fresh subscription,
   * `since` where to recover from on the first one. Queues the subscribe when
   * connected and not subscribed or subscribing; again on a wanted channel
   * updates `recent` and retries one the hub refused or revoked. Throws
   * {@link ProtocolError} on an invalid name (nothing is wanted then).
   */
  subscribe(channel: string, options: { recent?: number; since?: Position | null } = {}): void {
    if (!validChannel(channel)) {
      throw new ProtocolError("bad_request", `invalid channel name ${JSON.stringify(channel)}`);
    }
    let ch = this.chans.get(channel);
    if (!ch) {
      const since = options.since ? { epoch: options.since.epoch, offset: options.since.offset } : null;
      ch = { recent: 0, phase: "idle", position: since, replayUntil: null, pending: null, sentSince: null, held: false };
      this.chans.set(channel, ch);
    }
    ch.recent = options.recent || 0;
    if (this.connected && (ch.phase === "idle" || ch.phase === "failed")) this.sendSubscribe(channel);
  }

  /** No longer wants `channel` (its position is forgotten); returns whether it was wanted. */
  unsubscribe(channel: string): boolean {
    const ch = this.chans.get(channel);
    if (!ch) return false;
    this.chans.delete(channel);
    if (this.connected && (ch.phase === "subscribing" || ch.phase === "subscribed")) this.sendUnsubscribe(channel);
    return true;
  }

  /** The wanted channels, in name order. */
  channels(): string[] {
    return Array.from(this.chans.keys()).sort();
  }

  /** Whether `channel` is wanted. */
  wants(channel: string): boolean {
    return this.chans.has(channel);
  }

  /** Whether the hub confirmed `channel` on this connection. */
  isSubscribed(channel: string): boolean {
    return this.chans.get(channel)?.phase === "subscribed";
  }

  /** The last message delivered on `channel` (or where the hub said it was), or null. */
  position(channel: string): Position | null {
    const p = this.chans.get(channel)?.position;
    return p ? { epoch: p.epoch, offset: p.offset } : null;
  }

  /** A connection is up: returns the subscribes to send, in channel name order. */
  onConnected(): Command[] {
    this.onDisconnected();
    this.connected = true;
    for (const name of this.channels()) this.sendSubscribe(name);
    return this.takeTransmit();
  }

  /** The connection is gone: positions are kept for the next one. */
  onDisconnected(): void {
    this.connected = false;
    this.inFlight.clear();
    this.transmit = [];
    for (const ch of this.chans.values()) {
      ch.phase = "idle";
      ch.pending = null;
      ch.sentSince = null;
      ch.replayUntil = null;
      ch.held = false;
    }
  }

  /** The commands to send, in order (and forgets them). */
  takeTransmit(): Command[] {
    const out = this.transmit;
    this.transmit = [];
    return out;
  }

  /** Takes in one decoded hub message; returns the events, in order. */
  handle(msg: ServerMessage): MachineEvent[] {
    const events: MachineEvent[] = [];
    if (!this.connected) {
      // Leftovers of a connection already reported gone.
      if (msg.op !== "message" && msg.op !== "gap") events.push({ type: "other", message: msg });
      return events;
    }
    const id = typeof msg.id === "number" ? msg.id : null;
    const ours = id !== null && this.inFlight.has(id);
    switch (msg.op) {
      case "message":
        this.onMessage(msg, events);
        return events;
      case "gap":
        this.onGap(String(msg.channel), String(msg.epoch));
        return events;
      case "subscribed":
        if (id === null) {
          this.onServerSubscribed(msg, events);
          return events;
        }
        if (!ours) break;
        this.inFlight.delete(id);
        this.onSubscribed(id, msg, events);
        return events;
      case "unsubscribed": {
        if (ours) {
          this.inFlight.delete(id);
          return events;
        }
        const channel = String(msg.channel);
        if (id === null && this.isSubscribed(channel)) {
          const ch = this.chans.get(channel) as Channel;
          ch.phase = "failed";
          ch.replayUntil = null;
          ch.held = false;
          events.push({ type: "unsubscribed", channel, reason: typeof msg.reason === "string" ? msg.reason : "" });
          return events;
        }
        break;
      }
      case "error":
        if (!ours) break;
        if (this.inFlight.get(id) === "subscribe") {
          for (const [channel, ch] of this.chans) {
            if (ch.pending !== id) continue;
            ch.phase = "failed";
            ch.pending = null;
            ch.sentSince = null;
            events.push({ type: "subscribe_failed", channel, code: String(msg.code), message: String(msg.message ?? "") });
            break;
          }
        }
        this.inFlight.delete(id);
        return events;
      default:
        break;
    }
    events.push({ type: "other", message: msg });
    return events;
  }

  private sendSubscribe(channel: string): void {
    const ch = this.chans.get(channel);
    if (!ch) return;
    const id = this.nextId();
    ch.phase = "subscribing";
    ch.pending = id;
    ch.sentSince = ch.position ? { ...ch.position } : null;
    ch.replayUntil = null;
    this.inFlight.set(id, "subscribe");
    const command: Command = { op: "subscribe", id, channel };
    if (ch.position) {
      command.since = { epoch: ch.position.epoch, offset: ch.position.offset };
      this.counters.resubscribes++;
    }
    // `recent` is used by the hub only when it cannot recover from `since`.
    if (ch.recent) command.recent = ch.recent;
    this.transmit.push(command);
  }

  private sendUnsubscribe(channel: string): void {
    const id = this.nextId();
    this.inFlight.set(id, "unsubscribe");
    this.transmit.push({ op: "unsubscribe", id, channel });
  }

  /** Unsubscribes and subscribes again from the position: the hub replays what was missed. */
  private resubscribe(channel: string): void {
    this.sendUnsubscribe(channel);
    this.sendSubscribe(channel);
  }

  private onSubscribed(id: number, msg: ServerMessage, events: MachineEvent[]): void {
    const channel = String(msg.channel);
    const epoch = String(msg.epoch);
    const last = Number(msg.offset);
    const gap = msg.gap === true;
    const recovered = msg.recovered === true && !gap;
    const ch = this.chans.get(channel);
    // Not wanted any more, or the answer to a subscription replaced since.
    if (!ch || ch.pending !== id) return;
    ch.pending = null;
    ch.phase = "subscribed";
    ch.held = false;
    const resubscribed = ch.sentSince !== null;
    ch.sentSince = null;
    // Where the channel stands in the hub's current epoch, if known.
    const p = ch.position;
    const sameEpoch = p && p.epoch === epoch && p.offset <= last ? p.offset : null;
    if (recovered && sameEpoch !== null) {
      // The hub replays everything after `since`; what arrived since it was
      // sent is deduplicated against the position.
      ch.replayUntil = null;
      this.counters.recovered++;
      events.push({ type: "subscribed", channel, recovered: true, resubscribed, reply: msg });
      return;
    }
    const lost = gap || resubscribed;
    // The hub replays the last `recent` messages it keeps, at most.
    const base = Math.max(0, last - ch.recent);
    const offset = sameEpoch === null ? base : Math.max(sameEpoch, base);
    ch.replayUntil = offset < last ? last : null;
    ch.position = { epoch, offset };
    events.push({ type: "subscribed", channel, recovered: false, resubscribed, reply: msg });
    if (lost) {
      this.counters.gaps++;
      events.push({ type: "gap", channel, epoch, offset: last });
    }
  }

  /**
   * A `subscribed` push without id: the application's backend subscribed this
   * connection through the hub's server API. The channel becomes wanted, as if
   * subscribed with no `recent`, and is resubscribed on later connections. A
   * channel already wanted takes the push as its subscription (its own
   * `subscribe` in flight is then refused `already_subscribed`, no failure);
   * if the push does not continue its position, a gap follows.
   */
  private onServerSubscribed(msg: ServerMessage, events: MachineEvent[]): void {
    const channel = String(msg.channel);
    if (!validChannel(channel)) return;
    const epoch = String(msg.epoch);
    const last = Number(msg.offset);
    let ch = this.chans.get(channel);
    if (!ch) {
      ch = { recent: 0, phase: "idle", position: null, replayUntil: null, pending: null, sentSince: null, held: false };
      this.chans.set(channel, ch);
    }
    if (ch.phase === "subscribed") return;
    ch.pending = null;
    ch.sentSince = null;
    ch.phase = "subscribed";
    ch.replayUntil = null;
    ch.held = false;
    const p = ch.position;
    const lost = p !== null && (p.epoch !== epoch || p.offset < last);
    if (p === null || lost) ch.position = { epoch, offset: last };
    events.push({ type: "subscribed", channel, recovered: false, resubscribed: false, reply: msg });
    if (lost) {
      this.counters.gaps++;
      events.push({ type: "gap", channel, epoch, offset: last });
    }
  }

  private onGap(channel: string, epoch: string): void {
    const ch = this.chans.get(channel);
    if (!ch || (ch.phase !== "subscribing" && ch.phase !== "subscribed")) return;
    if (ch.position && ch.position.epoch !== epoch) {
      // The offsets that follow may be another epoch's: take nothing until
      // the hub's `subscribed` says where the channel stands. The position
      // stays, so that a channel still in our epoch repeats nothing.
      ch.held = true;
      ch.replayUntil = null;
    }
    if (ch.phase === "subscribed") {
      this.counters.jumps++;
      this.resubscribe(channel);
    }
    // Else the subscribe in flight answers for the loss.
  }

  private onMessage(msg: ServerMessage, events: MachineEvent[]): void {
    const channel = String(msg.channel);
    const ch = this.chans.get(channel);
    if (!ch || ch.phase === "idle" || ch.phase === "failed" || ch.held) return;
    const position = ch.position;
    if (!position) return; // No epoch known yet: the subscribed in flight will tell.
    const offset = Number(msg.offset);
    if (offset <= position.offset) {
      this.counters.duplicates++;
      return;
    }
    const inReplay = ch.replayUntil !== null && offset <= ch.replayUntil + 1;
    if (offset === position.offset + 1 || inReplay) {
      position.offset = offset;
      // The replay is contiguous: only its first message may skip.
      ch.replayUntil = null;
      events.push({ type: "message", message: msg });
    } else if (ch.phase === "subscribed") {
      // Messages were lost on the way: ask the hub for them again.
      this.counters.jumps++;
      this.resubscribe(channel);
    }
    // Else a subscribe is in flight, and its replay covers the jump.
  }
}
