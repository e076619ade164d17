//! The Lua scripts of the Redis registry: a shared prelude
//! (`registry.lua`: the queueing and the occupancy rules) and one body per
//! change. Each returns `{status, queued types, dropped types}` (the types
//! comma-separated), so the node counts what the script queued or dropped.
//!
//! # Keys (`B` = `{P}:ev`, one hash slot; `P` the broker's prefix)
//!
//! | key | type | what |
//! |---|---|---|
//! | `B:conns` | hash | client → `{"n":node,"u":user}` |
//! | `B:node:N` | set | node `N`'s clients |
//! | `B:subs:C` | set | client `C`'s channels (channel events on) |
//! | `B:users` / `B:chans` | hash | user / channel → connections / subscribers in the cluster |
//! | `B:offline` / `B:vacant` | zset | user / channel at 0 → when its grace ends (ms) |
//! | `B:alive` | zset | node → its last heartbeat (Redis time, ms) |
//! | `B:dead:N` | string | node `N` was declared dead (a day) |
//! | `B:q` | stream | events waiting (field `e`: the event's JSON) |
//! | `B:dropped` | hash | type → events dropped for a full queue |

use redis::Script;

const PRELUDE: &str = include_str!("registry.lua");

/// `connect`: ARGV[7] client, [8] user, [9] the per-user limit (0: none).
/// Status 0: refused (the limit), 1: registered.
const CONNECT: &str = r"
local client, user, limit = ARGV[7], ARGV[8], tonumber(ARGV[9])
if user ~= '' and limit > 0 then
  local c = tonumber(redis.call('HGET', base .. ':users', user) or '0')
  if c >= limit then return reply(0) end
end
if redis.call('HSETNX', base .. ':conns', client, cjson.encode({n = node, u = user})) == 0 then
  return reply(1)
end
redis.call('SADD', base .. ':node:' .. node, client)
redis.call('ZADD', base .. ':alive', 'NX', now, node)
local ev = {type = 'connected', client = client}
if user ~= '' then ev.user = user end
emit(ev)
if user ~= '' and up(':users', ':offline', user) then
  emit({type = 'user_online', user = user})
end
return reply(1)
";

/// `subscribe`: ARGV[7] client, [8] channel.
const SUBSCRIBE: &str = r"
local client, ch = ARGV[7], ARGV[8]
local rec = redis.call('HGET', base .. ':conns', client)
if not rec then return reply(1) end
if redis.call('SADD', base .. ':subs:' .. client, ch) == 0 then return reply(1) end
local r = cjson.decode(rec)
local ev = {type = 'subscribed', client = client, channel = ch}
if r.u ~= '' then ev.user = r.u end
emit(ev)
if up(':chans', ':vacant', ch) then emit({type = 'channel_occupied', channel = ch}) end
return reply(1)
";

/// `unsubscribe`: ARGV[7] client, [8] channel, [9] reason (or empty).
const UNSUBSCRIBE: &str = r"
local client, ch, why = ARGV[7], ARGV[8], ARGV[9]
local rec = redis.call('HGET', base .. ':conns', client)
if not rec then return reply(1) end
if redis.call('SREM', base .. ':subs:' .. client, ch) == 0 then return reply(1) end
local r = cjson.decode(rec)
local ev = {type = 'unsubscribed', client = client, channel = ch}
if r.u ~= '' then ev.user = r.u end
if why ~= '' then ev.reason = why end
emit(ev)
if down(':chans', ':vacant', ch, vgrace) then emit({type = 'channel_vacated', channel = ch}) end
return reply(1)
";

/// `disconnect`: ARGV[7] client, [8] close code.
const DISCONNECT: &str = r"
disconnect(ARGV[7], tonumber(ARGV[8]), nil)
return reply(1)
";

/// The node's heartbeat. Status 2: the node had been declared dead (its
/// connections are gone from the registry).
const HEARTBEAT: &str = r"
redis.call('ZADD', base .. ':alive', now, node)
if redis.call('DEL', base .. ':dead:' .. node) == 1 then return reply(2) end
return reply(1)
";

/// Declares dead nodes' connections: ARGV[7] expiry ms, [8] the most
/// connections this call, [9] the consumer group. Status: how many
/// connections it declared (the caller calls again while it is [8]).
/// A dead node with no connection left and no event pending under its
/// name is forgotten.
const REAP: &str = r"
local expiry, budget, group = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local done = 0
local dead = redis.call('ZRANGEBYSCORE', base .. ':alive', '-inf', now - expiry - 1, 'LIMIT', 0, 16)
for _, dn in ipairs(dead) do
  if dn ~= node and done < budget then
    local set = base .. ':node:' .. dn
    local clients = redis.call('SRANDMEMBER', set, budget - done)
    if #clients > 0 then
      redis.call('SET', base .. ':dead:' .. dn, '1', 'PX', 86400000)
      table.sort(clients)
      for _, c in ipairs(clients) do
        disconnect(c, 1006, 'node_died')
        done = done + 1
      end
    end
    if redis.call('SCARD', set) == 0 then
      local pending = redis.pcall('XPENDING', base .. ':q', group, '-', '+', 1, dn)
      if type(pending) ~= 'table' or pending.err or #pending == 0 then
        redis.call('ZREM', base .. ':alive', dn)
        redis.pcall('XGROUP', 'DELCONSUMER', base .. ':q', group, dn)
      end
    end
  end
end
return reply(done)
";

/// Ends the graces due: ARGV[7] the most of each kind this call.
const DUE: &str = r"
local budget = tonumber(ARGV[7])
for _, ch in ipairs(redis.call('ZRANGEBYSCORE', base .. ':vacant', '-inf', now, 'LIMIT', 0, budget)) do
  redis.call('ZREM', base .. ':vacant', ch)
  if redis.call('HEXISTS', base .. ':chans', ch) == 0 then
    emit({type = 'channel_vacated', channel = ch})
  end
end
for _, u in ipairs(redis.call('ZRANGEBYSCORE', base .. ':offline', '-inf', now, 'LIMIT', 0, budget)) do
  redis.call('ZREM', base .. ':offline', u)
  if redis.call('HEXISTS', base .. ':users', u) == 0 then
    emit({type = 'user_offline', user = u})
  end
end
return reply(1)
";

/// The registry's scripts.
pub(super) struct Scripts {
    pub(super) connect: Script,
    pub(super) subscribe: Script,
    pub(super) unsubscribe: Script,
    pub(super) disconnect: Script,
    pub(super) heartbeat: Script,
    pub(super) reap: Script,
    pub(super) due: Script,
}

impl Scripts {
    /// Every script, prelude and body.
    pub(super) fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Self {
            connect: script(CONNECT),
            subscribe: script(SUBSCRIBE),
            unsubscribe: script(UNSUBSCRIBE),
            disconnect: script(DISCONNECT),
            heartbeat: script(HEARTBEAT),
            reap: script(REAP),
            due: script(DUE),
        }
    }
}
