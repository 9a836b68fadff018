-- Records alerts, each atomically: the Redis twin of `store::merge`
-- (src/store/mod.rs), in KEYS order. One call records up to a batch's 32
-- alerts on a single Redis (fewer script calls per alert); on a Redis Cluster,
-- where each alert's key has a slot of its own, it records one alert's
-- occurrences in the batch, so that they run in the order they came.
-- KEYS[i]  alert i's hash (the same key may come more than once)
-- ARGV[1]  now, ms since the epoch
-- ARGV[2]  retention of a resolved alert, ms
-- ARGV[3i], ARGV[3i + 1], ARGV[3i + 2]  alert i's status ("firing" |
--          "resolved"), starts_at (ms since the epoch, or "" when unknown)
--          and document (JSON: labels, annotations, ...)
-- Returns per alert {outcome, count, previous status or "", explanation of a
--   repeat or "", for a repeat: when its status last changed (ms) or ""}.
local now, retention = ARGV[1], ARGV[2]
local function record(key, status, starts, doc)
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
    redis.call('PEXPIRE', key, retention)
  else
    redis.call('PERSIST', key)
  end
  return {outcome, count, prev_status or '', '', ''}
end
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = record(key, ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2])
end
return out
