/**
 * The reconnect schedule: exponential backoff with full jitter. Attempt `n`
 * (0-based) waits a uniformly random time in [0, min(cap, base × 2^n)), so
 * that clients dropped together do not come back together.
 */

/** Milliseconds to wait before attempt `attempt` (0-based); `random` in [0, 1). */
export function backoffDelay(attempt: number, base: number, cap: number, random: () => number = Math.random): number {
  const ceiling = Math.min(cap, base * 2 ** Math.min(Math.max(attempt, 0), 30));
  return random() * ceiling;
}
