/**
 * The SDK's errors. Every error it rejects a promise with, throws, or hands to
 * an `error` event is a {@link DuplexError} with a stable `code`; the
 * original failure, when there is one, is its `cause`.
 */

/** The base class of the SDK's errors: `code` says which failure it is. */
export class DuplexError extends Error {
  /** A stable code: the hub's error code, or one of the SDK's own (`closed`, `queue_full`, `token`, `timeout`, `no_websocket`, `bad_request`, `unknown_op`, `already_subscribed`). */
  readonly code: string;

  /** An error of `code` saying `message` (and what caused it). */
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "DuplexError";
    this.code = code;
  }
}

/** The hub answered a command with an `error` reply (`forbidden`, `unauthorized`, `rate_limited`, …). */
export class HubError extends DuplexError {
  /** The channel the refused command named, if any. */
  readonly channel: string | undefined;

  /** The hub's error `code` and `message`, for a command on `channel`. */
  constructor(code: string, message: string, channel?: string) {
    super(code, message || code);
    this.name = "HubError";
    this.channel = channel;
  }
}

/** The connection closed before the command was answered, or the client closed for good. */
export class ClosedError extends DuplexError {
  /** The WebSocket close code (1006 when the connection was lost without one). */
  readonly closeCode: number;
  /** The close reason the hub gave, or what the SDK saw. */
  readonly reason: string;

  /** A close with `closeCode` and `reason`. */
  constructor(closeCode: number, reason: string) {
    super("closed", `connection closed (${closeCode}${reason ? `: ${reason}` : ""})`);
    this.name = "ClosedError";
    this.closeCode = closeCode;
    this.reason = reason;
  }
}

/** `getToken` failed (threw, rejected, or returned something that is not a string). */
export class TokenError extends DuplexError {
  /** A token error caused by `cause`. */
  constructor(message: string, cause: unknown) {
    super("token", message, { cause });
    this.name = "TokenError";
  }
}
