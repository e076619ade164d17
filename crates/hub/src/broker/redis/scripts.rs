//! The Lua scripts the Redis broker runs (with `EVALSHA`; redis-rs loads a
//! script with `SCRIPT LOAD` the first time Redis answers `NOSCRIPT`, for
//! example after a restart).
//!
//! Each script is one round trip and runs atomically in Redis: nothing else
//! happens between its commands. That is what makes a publish's idempotency
//! check, offset, history append and `PUBLISH` one step, so that the order
//! of messages on a channel's pub/sub topic is their offset order.
//!
//! Invariants kept by every script:
//! - A channel's `meta` hash (`epoch`, `last`, `run`) is created together
//!   with an empty history: when it is missing, the history and keys are
//!   deleted and a new epoch (drawn by the caller, `fresh`) starts at
//!   offset 0.
//! - **No offset is given out twice.** `run` is the `run_id` of the Redis
//!   process that last wrote the channel (the caller passes the one it read
//!   from `INFO server` on connecting). Another one means Redis restarted or
//!   failed over since, and may have come back with older data (an older
//!   snapshot, an AOF without its tail, a lagging replica): the channel
//!   starts a new epoch as if `meta` were missing. A `meta` without `run`
//!   (written before `run` existed) adopts the caller's. And a caller that
//!   saw the channel reach `check` of the current epoch while it is behind
//!   it (Redis lost writes without a restart, e.g. `DEBUG RELOAD`) gets a
//!   new epoch too: `duplex_hub_proto::log::behind` is the rule.
//! - The history list holds consecutive offsets `last - LLEN + 1 ..= last`,
//!   oldest first: entries are appended at the tail and only ever dropped
//!   from the head (size, bytes and age bounds), or all at once (key expiry,
//!   or eviction under Redis's `maxmemory`).
//! - The `meta` hash's `bytes` is the length of the history's entries
//!   together (absent: 0), and never more than the publish's byte bound
//!   once it returns. Whoever drops an entry subtracts it; a history found
//!   empty (expired or evicted whole) sets it back to 0.
//! - The idempotency hash holds exactly the keys of the entries in the
//!   history (a key leaves with its entry).
//! - Times compared with entry times are Redis's own clock (`TIME`).
//!
//! Entry and envelope layouts are in [`super::envelope`].

use redis::Script;

/// Shared Lua helpers, prepended to the scripts that touch history.
const HELPERS: &str = r"
-- The run_id of this Redis process: the caller's (one Redis: read once per
-- connection), or '' to read it here (Redis Cluster: each shard has its own).
local function run_of(given)
  if given ~= '' then return given end
  return string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Forgets the idempotency key of a history entry that leaves the history.
local function drop_key(keys, entry)
  local kl, pos = string.match(entry, '^%d+ %d+ (%d+) ()')
  kl = tonumber(kl)
  if kl and kl > 0 then
    redis.call('HDEL', keys, string.sub(entry, pos, pos + kl - 1))
  end
end
-- Drops the oldest entry of the history, its key and its bytes.
local function pop(meta, hist, keys)
  local head = redis.call('LPOP', hist)
  if head then
    drop_key(keys, head)
    redis.call('HINCRBY', meta, 'bytes', -#head)
  end
  return head
end
-- Drops entries older than ttl ms from the head of the history; an empty
-- history (expired or evicted whole) counts no bytes.
local function prune(meta, hist, keys, ttl)
  local now = now_ms()
  while true do
    local head = redis.call('LINDEX', hist, 0)
    if not head then
      if redis.call('HGET', meta, 'bytes') then redis.call('HDEL', meta, 'bytes') end
      return
    end
    local time = tonumber(string.match(head, '^%d+ (%d+) '))
    if time and time + ttl >= now then return end
    pop(meta, hist, keys)
  end
end
-- Starts the channel anew in epoch `fresh`, written by Redis `run`.
local function restart(meta, hist, keys, fresh, run)
  redis.call('DEL', hist, keys)
  redis.call('HDEL', meta, 'bytes')
  redis.call('HSET', meta, 'epoch', fresh, 'last', 0, 'run', run)
  return fresh, 0
end
-- The channel's epoch and last offset, and why it starts a new epoch ('':
-- it does not, or it is new; 'restart': written by another Redis process,
-- which may have had more). `run` is this Redis process's run_id.
local function meta_of(meta, hist, keys, fresh, run)
  local m = redis.call('HMGET', meta, 'epoch', 'last', 'run')
  if not m[1] then
    local epoch, last = restart(meta, hist, keys, fresh, run)
    return epoch, last, ''
  end
  if not m[3] then
    redis.call('HSET', meta, 'run', run)
  elseif m[3] ~= run then
    local epoch, last = restart(meta, hist, keys, fresh, run)
    return epoch, last, 'restart'
  end
  return m[1], tonumber(m[2] or 0), ''
end
-- A caller saw the channel reach offset `co` of epoch `ce` ('': nothing
-- seen): if it is behind that in the same epoch, Redis lost writes, and a
-- new epoch starts (duplex_hub_proto::log::behind).
local function guard(meta, hist, keys, epoch, last, why, fresh, run, ce, co)
  if ce ~= '' and ce == epoch and tonumber(co) > last then
    local e, l = restart(meta, hist, keys, fresh, run)
    return e, l, 'behind'
  end
  return epoch, last, why
end
";

/// Publish: `KEYS` = meta, hist, keys; `ARGV` = topic, idempotency key (or
/// ""), time (ms), body, history size, history ttl (ms), meta ttl (ms), fresh
/// epoch, run (Redis's `run_id`), check epoch (or ""), check offset (the
/// position the publishing node saw the channel reach), history bytes (at
/// most, entries counted by their length). Returns `{epoch, offset,
/// duplicate (0/1), why a new epoch started ("", "restart", "behind")}`.
const PUBLISH: &str = r"
local meta, hist, keys = KEYS[1], KEYS[2], KEYS[3]
local key, size, ttl = ARGV[2], tonumber(ARGV[5]), tonumber(ARGV[6])
local max_bytes = tonumber(ARGV[12])
local run = run_of(ARGV[9])
local epoch, last, why = meta_of(meta, hist, keys, ARGV[8], run)
epoch, last, why = guard(meta, hist, keys, epoch, last, why, ARGV[8], run, ARGV[10], ARGV[11])
prune(meta, hist, keys, ttl)
if key ~= '' then
  local seen = redis.call('HGET', keys, key)
  if seen then
    redis.call('PEXPIRE', meta, ARGV[7])
    return {epoch, tonumber(seen), 1, why}
  end
end
local offset = redis.call('HINCRBY', meta, 'last', 1)
local entry = string.format('%d', offset) .. ' ' .. ARGV[3] .. ' ' .. #key .. ' ' .. key .. ARGV[4]
if size > 0 then
  local len = redis.call('RPUSH', hist, entry)
  if key ~= '' then redis.call('HSET', keys, key, offset) end
  local bytes = redis.call('HINCRBY', meta, 'bytes', #entry)
  while len > 0 and (len > size or bytes > max_bytes) do
    bytes = bytes - #pop(meta, hist, keys)
    len = len - 1
  end
  redis.call('PEXPIRE', hist, ttl)
  redis.call('PEXPIRE', keys, ttl)
end
redis.call('PEXPIRE', meta, ARGV[7])
redis.call('PUBLISH', ARGV[1], 'm' .. epoch .. ' ' .. entry)
return {epoch, offset, 0, why}
";

/// Read the history (subscribe, or a node catching up after a reconnect),
/// and optionally enter presence and announce the join.
///
/// `KEYS` = meta, hist, keys, pres, node's pres; `ARGV` = fresh epoch, meta
/// ttl (ms), history ttl (ms), since epoch (or ""), since offset, recent,
/// catching up (or "": a node's catch-up read after a reconnect), client
/// (or "": no presence), node, user, channel, topic (or "": no join event),
/// run (Redis's `run_id`), check epoch (or ""), check offset (the position
/// the reading node saw the channel reach; if the channel is behind it in
/// that epoch, Redis lost writes, so a new epoch starts).
///
/// Returns `{epoch, last, first, entries, why a new epoch started ("",
/// "restart", "behind")}` where `entries` are the kept entries from the
/// oldest either plan may replay (after `since`, or the last `recent`) to
/// `last`; when catching up, every kept entry when the history cannot
/// continue from `since`.
const READ: &str = r"
local meta, hist, keys = KEYS[1], KEYS[2], KEYS[3]
local run = run_of(ARGV[13])
local epoch, last, why = meta_of(meta, hist, keys, ARGV[1], run)
epoch, last, why = guard(meta, hist, keys, epoch, last, why, ARGV[1], run, ARGV[14], ARGV[15])
local since = tonumber(ARGV[5])
redis.call('PEXPIRE', meta, ARGV[2])
prune(meta, hist, keys, tonumber(ARGV[3]))
local first = last - redis.call('LLEN', hist) + 1
local from = last - tonumber(ARGV[6]) + 1
if ARGV[4] == epoch and since < last and since + 1 < from then from = since + 1 end
if ARGV[7] ~= '' and not (ARGV[4] == epoch and since + 1 >= first) then from = first end
if from < first then from = first end
local entries = {}
if from <= last then entries = redis.call('LRANGE', hist, from - first, -1) end
if ARGV[8] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[8], ARGV[9] .. ' ' .. ARGV[10])
  if KEYS[5] then redis.call('HSET', KEYS[5], ARGV[8] .. ' ' .. ARGV[11], ARGV[10]) end
  if ARGV[12] ~= '' then
    redis.call('PUBLISH', ARGV[12], 'j' .. ARGV[8] .. ' ' .. ARGV[10])
  end
end
return {epoch, last, first, entries, why}
";

/// Leave presence: `KEYS` = pres, node's pres; `ARGV` = client, channel,
/// topic (or "": no leave event), user. Returns 1 if the client was present.
const LEAVE: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
if KEYS[2] then redis.call('HDEL', KEYS[2], ARGV[1] .. ' ' .. ARGV[2]) end
if removed == 1 and ARGV[3] ~= '' then
  redis.call('PUBLISH', ARGV[3], 'l' .. ARGV[1] .. ' ' .. ARGV[4])
end
return removed
";

/// (Re-)enter presence after a reconnect: `KEYS` = pres, node's pres;
/// `ARGV` = node, channel, topic (or "": no join events), then client, user
/// pairs. A join is announced only for clients that were not present.
/// Returns how many were added.
const ENTER: &str = r"
local added = 0
for i = 4, #ARGV, 2 do
  local client, user = ARGV[i], ARGV[i + 1]
  if redis.call('HSET', KEYS[1], client, ARGV[1] .. ' ' .. user) == 1 then
    added = added + 1
    if ARGV[3] ~= '' then
      redis.call('PUBLISH', ARGV[3], 'j' .. client .. ' ' .. user)
    end
  end
  if KEYS[2] then redis.call('HSET', KEYS[2], client .. ' ' .. ARGV[2], user) end
end
return added
";

/// Heartbeat and dead-node cleanup: `KEYS` = nodes; `ARGV` = node, expiry
/// (ms), key prefix, leaving (1: this node leaves the cluster: remove its
/// presence now). A node whose heartbeat is older than the expiry loses its
/// presence entries (each announced with a leave event) and its registration.
/// Returns `{registered anew (0/1), nodes purged}`.
const HEARTBEAT: &str = r"
local nodes, node, prefix = KEYS[1], ARGV[1], ARGV[3]
local function purge(dead)
  local np = prefix .. ':node:' .. dead .. ':pres'
  local all = redis.call('HGETALL', np)
  for i = 1, #all, 2 do
    local client, channel = string.match(all[i], '^(%S+) (.+)$')
    if client then
      if redis.call('HDEL', prefix .. ':{' .. channel .. '}:pres', client) == 1 then
        redis.call('PUBLISH', prefix .. ':m:' .. channel, 'l' .. client .. ' ' .. all[i + 1])
      end
    end
  end
  redis.call('DEL', np)
  redis.call('ZREM', nodes, dead)
end
if ARGV[4] == '1' then
  purge(node)
  return {0, 1}
end
local now = now_ms()
local added = redis.call('ZADD', nodes, now, node)
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', now - tonumber(ARGV[2]))
local purged = 0
for _, d in ipairs(dead) do
  if d ~= node then
    purge(d)
    purged = purged + 1
  end
end
return {added, purged}
";

/// Remove a channel's history (the server API's `history_remove`): `KEYS`
/// = meta, hist, keys. The history and its keys go and `bytes` is 0; the
/// epoch and `last` stay, so offsets go on and a recovery from before is a
/// gap. A channel without `meta` is left alone (it starts a new epoch at
/// its next use anyway). Returns 1 if it existed.
const REMOVE_HISTORY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'bytes', 0)
return 1
";

/// Heartbeat on Redis Cluster: `KEYS` = nodes; `ARGV` = node, expiry (ms).
/// Returns `{registered anew (0/1), the silent nodes}`: their cleanup
/// crosses slots, so the node does it with [`PURGE`], one client at a time,
/// and then forgets each dead node (`DEL` of its presence list, `ZREM`).
const CLUSTER_HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now, ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local out = {}
for _, d in ipairs(dead) do
  if d ~= ARGV[1] then table.insert(out, d) end
end
return {added, out}
";

/// Removes one presence entry of a dead node (Redis Cluster): `KEYS` = the
/// channel's pres; `ARGV` = client, node, topic, user. The entry goes (and
/// a leave is announced) only if it is still that node's. Returns 1 if it
/// went.
const PURGE: &str = r"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, #ARGV[2] + 1) == ARGV[2] .. ' ' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[3], 'l' .. ARGV[1] .. ' ' .. ARGV[4])
  return 1
end
return 0
";

/// The broker's scripts, hashed once.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// See [`REMOVE_HISTORY`].
    pub(crate) remove_history: Script,
    /// See [`PUBLISH`].
    pub(crate) publish: Script,
    /// See [`READ`].
    pub(crate) read: Script,
    /// See [`LEAVE`].
    pub(crate) leave: Script,
    /// See [`ENTER`].
    pub(crate) enter: Script,
    /// See [`HEARTBEAT`] (one Redis), [`CLUSTER_HEARTBEAT`] (Redis Cluster).
    pub(crate) heartbeat: Script,
    /// See [`PURGE`] (Redis Cluster only).
    pub(crate) purge: Script,
}

impl Scripts {
    /// Every script, with its helpers. On Redis Cluster (`cluster`), the
    /// scripts announce with `SPUBLISH` (sharded pub/sub: the topic,
    /// `P:m:{C}`, is in the channel's slot, where the script runs), and the
    /// heartbeat only names the dead nodes.
    pub(crate) fn new(cluster: bool) -> Self {
        let script = |body: String| {
            if cluster {
                Script::new(&body.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'"))
            } else {
                Script::new(&body)
            }
        };
        let with_helpers = |body: &str| script(format!("{HELPERS}{body}"));
        Self {
            publish: with_helpers(PUBLISH),
            read: with_helpers(READ),
            leave: script(LEAVE.to_owned()),
            enter: script(ENTER.to_owned()),
            heartbeat: if cluster {
                script(CLUSTER_HEARTBEAT.to_owned())
            } else {
                with_helpers(HEARTBEAT)
            },
            purge: script(PURGE.to_owned()),
            remove_history: script(REMOVE_HISTORY.to_owned()),
        }
    }
}
