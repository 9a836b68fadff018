-- Records one alert atomically: the Redis twin of `store::merge` (src/store/mod.rs).
-- KEYS[1]  the alert's hash
-- ARGV[1]  status ("firing" | "resolved")
-- ARGV[2]  now, ms since the epoch
-- ARGV[3]  starts_at, ms since the epoch, or "" when unknown
-- ARGV[4]  the alert document (JSON: labels, annotations, ...)
-- ARGV[5]  retention of a resolved alert, ms
-- Returns {outcome, count, previous status or "", explanation of a repeat or "",
--   for a repeat: when its status last changed (ms) or ""}.
local key, status, now, starts, doc = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local prev = redis.call('HMGET', key, 'status', 'starts_at_ms', 'explain', 'changed_at')
local prev_status, prev_starts = prev[1], prev[2]
local outcome, count
if not prev_status then
  redis.call('HSET', key, 'status', status, 'count', 1, 'total', 1, 'transitions', 0,
    'first_seen', now, 'last_seen', now, 'changed_at', now, 'starts_at_ms', starts, 'doc', doc)
  outcome, count = 'new', 1
elseif prev_status == status then
  count = redis.call('HINCRBY', key, 'count', 1)
  redis.call('HINCRBY', key, 'total', 1)
  redis.call('HSET', key, 'last_seen', now, 'starts_at_ms', starts, 'doc', doc)
  -- The previous explanation lets the caller skip repeats it processed recently.
  return {'duplicate', count, prev_status, prev[3] or '', prev[4] or ''}
elseif prev_status == 'resolved' and status == 'firing' and starts ~= '' and prev_starts
    and prev_starts ~= '' and tonumber(starts) <= tonumber(prev_starts) then
  return {'stale', 0, prev_status, '', ''}
else
  redis.call('HINCRBY', key, 'total', 1)
  redis.call('HINCRBY', key, 'transitions', 1)
  redis.call('HSET', key, 'status', status, 'count', 1, 'last_seen', now, 'changed_at', now,
    'starts_at_ms', starts, 'doc', doc)
  outcome, count = 'transition', 1
end
if status == 'resolved' then
  redis.call('PEXPIRE', key, ARGV[5])
else
  redis.call('PERSIST', key)
end
return {outcome, count, prev_status or '', '', ''}
