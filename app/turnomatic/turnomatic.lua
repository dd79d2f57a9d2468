#!lua name=turnomatic
-- turnomatic's Redis Function library: the one source of the increment's code.
-- The redis role loads it with its admin user (FUNCTION LOAD REPLACE when the code
-- changed); the app loads it itself only where its own user may (a default-user
-- Redis on loopback). Functions persist in the AOF and replicate, unlike EVAL's
-- script cache.
--
-- A function runs its commands with the calling user's ACL rights, so the app user
-- needs GET, PERSIST and INCR on turno:* besides FCALL. The increment therefore never
-- undoes anything (no DECR, which a leaked credential could use to hand out a number
-- twice): every check comes before the one write that counts, and INCR is the last
-- command, so an error reply from turno_next always means no increment ran.

-- turno_next(KEYS[1] = turno:<id>, ARGV[1] = the largest number to hand out):
-- the counter after adding one, or {counter, 1} when a TTL had to be removed first.
-- Errors: "EXHAUSTED ..." (left as it was), "CORRUPT ..." (not a counter; left as it
-- was), or Redis's own refusal (permission...), all before anything was written.
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
  if value then
    if string.match(value, '^%-[1-9]%d*$') then
      return redis.error_reply('CORRUPT counter is negative')
    end
    if value ~= '0' and not string.match(value, '^[1-9]%d*$') then
      return redis.error_reply('CORRUPT value is not an integer')
    end
    -- Lua numbers are doubles: every integer up to 2^53-1 is exact and every larger
    -- one compares above the limit, so both comparisons are exact.
    local current = tonumber(value)
    if current == maximum then
      return redis.error_reply('EXHAUSTED counter is at its maximum ' .. args[1])
    end
    if current > maximum then
      return redis.error_reply('EXHAUSTED counter is beyond the maximum ' .. args[1])
    end
  end
  -- A key with a TTL would keep it after INCR and restart at 1 when it expires (a
  -- duplicate): the TTL goes in the same atomic step. PERSIST on a key without one
  -- writes nothing (no AOF entry).
  local ttl_removed = redis.call('PERSIST', key)
  local number = redis.call('INCR', key)
  if ttl_removed == 1 then
    return {number, 1}
  end
  return number
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
  return 'ready'
end

redis.register_function('turno_next', next_turno)
redis.register_function('turno_ready', ready)
