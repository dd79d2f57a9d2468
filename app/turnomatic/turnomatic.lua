#!lua name=turnomatic
-- turnomatic's Redis Function library: the one source of the increment's code.
-- The redis role loads it with its admin user (FUNCTION LOAD REPLACE when the code
-- changed); the app loads it itself only where its own user may (a default-user
-- Redis on loopback). Functions persist in the AOF and replicate, unlike EVAL's
-- script cache.
--
-- A function runs its commands with the calling user's ACL rights, so the app user
-- needs GET, PERSIST and INCR on turno:* besides FCALL, and INFO for the failover fence. The increment therefore never
-- undoes anything (no DECR, which a leaked credential could use to hand out a number
-- twice): every check comes before the one write that counts, and INCR is the last
-- command, so an error reply from turno_next always means no increment ran.

-- The failover fence (docs/architecture.md, "No number handed out twice"). Off
-- until an operator stores K, the numbers per id a promoted replica can lack, in
-- turno::fence_skip (turno_fence_setup). Then every number is the counter plus
-- turno::failovers x K, and the first increment on a node whose replication id has
-- not been fenced yet (a promoted replica, a restarted or restored primary) adds 2 to
-- turno::failovers: each id's next number moves past up to 2K numbers that node may
-- lack (K for its own lag, K more for a fence of its predecessor it may have lost
-- with that lag). Only INCR writes the fence's keys, so the app user's rights stay
-- "raise only": a leaked password cannot lower a number, and cannot pre-mark a future
-- replication id (40 random hex digits).
local FENCE_SKIP_KEY = 'turno::fence_skip'
local FAILOVERS_KEY = 'turno::failovers'

local function replication_id()
  local info = redis.call('INFO', 'replication')
  return string.match(info, 'master_replid:(%x+)')
end

-- The offset added to every counter, and 1 when this call applied a fence.
local function fence_offset()
  local skip = redis.call('GET', FENCE_SKIP_KEY)
  if not skip then
    return 0, 0
  end
  local marker = 'turno::fenced:' .. replication_id()
  local fenced = 0
  if not redis.call('GET', marker) then
    redis.call('INCR', FAILOVERS_KEY)
    redis.call('INCR', FAILOVERS_KEY)
    redis.call('INCR', marker)
    fenced = 1
  end
  return tonumber(redis.call('GET', FAILOVERS_KEY) or '0') * tonumber(skip), fenced
end

-- turno_next(KEYS[1] = turno:<id>, ARGV[1] = the largest number to hand out):
-- the number handed out, or {number, ttl_removed, fenced} when a TTL had to be
-- removed first (1) or this call applied the failover fence (1).
-- Errors: "EXHAUSTED ..." (left as it was), "CORRUPT ..." (not a counter; left as it
-- was), or Redis's own refusal (permission...), all before the counter was written.
local function next_turno(keys, args)
  local key = keys[1]
  local maximum = tonumber(args[1])
  if not maximum then
    -- Without it there would be no ceiling: refuse before anything is read or written.
    return redis.error_reply('ERR turno_next needs the largest number to hand out as its argument')
  end
  local value = redis.pcall('GET', key)
  if type(value) == 'table' then
    if string.sub(value.err, 1, 9) == 'WRONGTYPE' then
      return redis.error_reply('CORRUPT ' .. value.err)
    end
    return value
  end
  local current = 0
  if value then
    if string.match(value, '^%-[1-9]%d*$') then
      return redis.error_reply('CORRUPT counter is negative')
    end
    if value ~= '0' and not string.match(value, '^[1-9]%d*$') then
      return redis.error_reply('CORRUPT value is not an integer')
    end
    -- Lua numbers are doubles: every integer up to 2^53-1 is exact and every larger
    -- one compares above the limit, so both comparisons are exact.
    current = tonumber(value)
  end
  -- A fence applied here stays applied even when the counter is exhausted: it only
  -- ever raises numbers.
  local offset, fenced = fence_offset()
  if current + offset == maximum then
    return redis.error_reply('EXHAUSTED counter is at its maximum ' .. args[1])
  end
  if current + offset > maximum then
    return redis.error_reply('EXHAUSTED counter is beyond the maximum ' .. args[1])
  end
  -- A key with a TTL would keep it after INCR and restart at 1 when it expires (a
  -- duplicate): the TTL goes in the same atomic step. PERSIST on a key without one
  -- writes nothing (no AOF entry).
  local ttl_removed = redis.call('PERSIST', key)
  local number = redis.call('INCR', key) + offset
  if ttl_removed == 1 or fenced == 1 then
    return {number, ttl_removed, fenced}
  end
  return number
end

-- turno_fence_setup(KEYS[1] = turno::fence_skip, ARGV[1] = K), for an operator (the
-- redis role's admin user; the app user may not SET): turns the fence on with skip K
-- (or changes K) and marks the node it runs on as fenced, so that switching it on
-- moves no number. Returns the current offset.
local function fence_setup(keys, args)
  local skip = tonumber(args[1])
  if keys[1] ~= FENCE_SKIP_KEY or not skip or skip < 1 or skip ~= math.floor(skip) then
    return redis.error_reply('ERR turno_fence_setup needs key ' .. FENCE_SKIP_KEY .. ' and a skip of at least 1')
  end
  redis.call('SET', FENCE_SKIP_KEY, args[1])
  local marker = 'turno::fenced:' .. replication_id()
  if not redis.call('GET', marker) then
    redis.call('INCR', marker)
  end
  return tonumber(redis.call('GET', FAILOVERS_KEY) or '0') * skip
end

-- turno_ready(KEYS[1] = a key under turno: that no id can name, e.g. turno::ready):
-- "ready" when this user could run turno_next. FCALL of a function without the
-- no-writes flag is refused before it runs wherever a write would be (OOM at
-- maxmemory under noeviction, READONLY on a replica, MISCONF after a failed
-- persistence write); the ACL check covers the commands turno_next runs. It writes
-- nothing.
local function ready(keys, args)
  for _, command in ipairs({'GET', 'PERSIST', 'INCR'}) do
    if not redis.acl_check_cmd(command, keys[1]) then
      return redis.error_reply('NOPERM this user may not run ' .. command .. ' on ' .. keys[1])
    end
  end
  if not redis.acl_check_cmd('INFO', 'replication') then
    return redis.error_reply('NOPERM this user may not run INFO (the failover fence reads the replication id)')
  end
  return 'ready'
end

redis.register_function('turno_next', next_turno)
redis.register_function('turno_ready', ready)
redis.register_function('turno_fence_setup', fence_setup)
