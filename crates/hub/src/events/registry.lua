-- The cluster's connection registry and event queue (crate::events::redis).
-- This prelude is shared by every script; each script's body follows it.
-- The rules are duplex_hub_proto::events's (Registry, Occupancy), kept
-- here atomically: a change and the events it decides are one step.
--
-- KEYS[1]: the base, `{P}:ev` (one hash slot on Redis Cluster; every key
-- below starts with it).
-- ARGV[1] node, ARGV[2] id prefix, ARGV[3] filter (",type,type,"),
-- ARGV[4] max queue, ARGV[5] offline grace ms, ARGV[6] vacated grace ms;
-- the script's own arguments from ARGV[7].
local base = KEYS[1]
local node, idp, filter = ARGV[1], ARGV[2], ARGV[3]
local maxq, ograce, vgrace = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local seq = 0
local queued, dropped = {}, {}

-- Queues an event the filter lets through, or counts it as dropped when
-- the queue is full.
local function emit(ev)
  if not string.find(filter, ',' .. ev.type .. ',', 1, true) then return end
  seq = seq + 1
  ev.id = idp .. '.' .. seq
  ev.time = now
  ev.node = node
  if redis.call('XLEN', base .. ':q') >= maxq then
    redis.call('HINCRBY', base .. ':dropped', ev.type, 1)
    table.insert(dropped, ev.type)
  else
    redis.call('XADD', base .. ':q', '*', 'e', cjson.encode(ev))
    table.insert(queued, ev.type)
  end
end

-- One more for `key`: true when it arrived (0 -> 1 outside a grace).
local function up(hash, zset, key)
  if redis.call('HINCRBY', base .. hash, key, 1) > 1 then return false end
  return redis.call('ZREM', base .. zset, key) == 0
end

-- One fewer for `key`: true when it left with no grace; with one, its
-- grace starts.
local function down(hash, zset, key, grace)
  local c = tonumber(redis.call('HGET', base .. hash, key) or '0')
  if c <= 0 then return false end
  if c > 1 then
    redis.call('HINCRBY', base .. hash, key, -1)
    return false
  end
  redis.call('HDEL', base .. hash, key)
  if grace <= 0 then return true end
  redis.call('ZADD', base .. zset, now + grace, key)
  return false
end

-- A connection ends: `disconnected`, then its channels and its user.
local function disconnect(client, code, reason)
  local rec = redis.call('HGET', base .. ':conns', client)
  if not rec then return false end
  local r = cjson.decode(rec)
  redis.call('HDEL', base .. ':conns', client)
  redis.call('SREM', base .. ':node:' .. r.n, client)
  local ev = {type = 'disconnected', client = client, code = code, reason = reason}
  if r.u ~= '' then ev.user = r.u end
  emit(ev)
  local subs = base .. ':subs:' .. client
  local channels = redis.call('SMEMBERS', subs)
  table.sort(channels)
  for _, ch in ipairs(channels) do
    if down(':chans', ':vacant', ch, vgrace) then
      emit({type = 'channel_vacated', channel = ch})
    end
  end
  redis.call('DEL', subs)
  if r.u ~= '' and down(':users', ':offline', r.u, ograce) then
    emit({type = 'user_offline', user = r.u})
  end
  return true
end

local function reply(status)
  return {status, table.concat(queued, ','), table.concat(dropped, ',')}
end
