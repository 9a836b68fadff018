-- Writes one incident if nobody changed it since it was read (optimistic
-- concurrency), binding its correlation key, recording its alerts' membership
-- and appending its outbox entry in the same atomic step. All keys share the
-- `{PREFIX}` hash tag, so this is legal on Redis Cluster.
-- KEYS[1] incident hash   KEYS[2] correlation slot   KEYS[3] index zset (by update time)
-- KEYS[4] due zset        KEYS[5] outbox stream
-- KEYS[6] open-incident counters (hash: `p1`..`p5` open incidents by priority,
--         `flapping` their flapping alerts)
-- KEYS[7..] per member alert: its member key, then its set of incidents
-- ARGV[1] expected version ("0": new)   ARGV[2] new version   ARGV[3] incident JSON
-- ARGV[4] id   ARGV[5] "1" to bind the slot   ARGV[6] expected slot id or ""
-- ARGV[7] number of member alerts   ARGV[8] member ttl ms   ARGV[9] updated ms
-- ARGV[10] due ms or ""   ARGV[11] outbox event or ""
-- ARGV[12] ms to keep a closed incident, or "" while it is not closed
-- ARGV[13] what the incident adds to the counters: "OPEN:PRIORITY:FLAPPING"
--          (OPEN "1" or "0"); kept in the incident hash as `gauge` so the next
--          write can take the old contribution back
-- ARGV[14] number of extra slots; KEYS after the members' are those slots, and
-- ARGV[15..] per extra slot: its expected id or "", then "1" to point it at the incident
-- KEYS[last - 1] the incident's timeline list   KEYS[last] the list of its alerts
-- ARGV after the slots': timeline entries ever appended once these are (kept
--   as `tl_total`), the most entries the list keeps, the incident's route (JSON
--   list, kept as `route` so the outbox reads it without the document);
--   then its alerts: the entries of the stored list to keep (0: write the
--   list anew), S, A, then S pairs (0-based position, alert JSON) to
--   overwrite, A alert JSONs to append, and the number of alerts (kept as
--   `alerts`);
--   then the timeline entries to append
-- Returns 1 when written, 0 on a conflict; every check comes before any write.
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if current ~= ARGV[1] then
  return 0
end
if ARGV[5] == '1' then
  local slot = redis.call('GET', KEYS[2]) or ''
  if slot ~= ARGV[6] then
    return 0
  end
end
local members = tonumber(ARGV[7])
local extra = tonumber(ARGV[14] or '0')
for i = 0, extra - 1 do
  local slot = redis.call('GET', KEYS[7 + 2 * members + i]) or ''
  if slot ~= ARGV[15 + 2 * i] then
    return 0
  end
end
-- The entries kept are those of the list read at the expected version, which
-- the version check vouches for; a list shorter than that (lost, cut by hand)
-- is a conflict too, so the caller reads it again rather than failing halfway.
local alerts = KEYS[8 + 2 * members + extra]
local tl = 15 + 2 * extra
local keep = tonumber(ARGV[tl + 3])
if keep > 0 and redis.call('LLEN', alerts) < keep then
  return 0
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[2], ARGV[4])
end
for i = 0, extra - 1 do
  if ARGV[16 + 2 * i] == '1' then
    redis.call('SET', KEYS[7 + 2 * members + i], ARGV[4])
  end
end
local old_gauge = redis.call('HGET', KEYS[1], 'gauge')
if old_gauge ~= ARGV[13] then
  local function count(gauge, sign)
    if not gauge then return end
    local open, priority, flapping = string.match(gauge, '^(%d):(%d+):(%d+)$')
    if open == '1' then
      redis.call('HINCRBY', KEYS[6], 'p' .. priority, sign)
      if flapping ~= '0' then
        redis.call('HINCRBY', KEYS[6], 'flapping', sign * tonumber(flapping))
      end
    end
  end
  count(old_gauge, -1)
  count(ARGV[13], 1)
end
local timeline = KEYS[7 + 2 * members + extra]
-- RPUSH of ARGV[from..to], in chunks: unpack is bounded by Lua's C stack.
local function push(key, from, to)
  while from <= to do
    local last = math.min(to, from + 999)
    redis.call('RPUSH', key, unpack(ARGV, from, last))
    from = last + 1
  end
end
local set, append = tonumber(ARGV[tl + 4]), tonumber(ARGV[tl + 5])
local at = tl + 6
if keep == 0 then
  redis.call('DEL', alerts)
else
  redis.call('LTRIM', alerts, 0, keep - 1)
end
for i = 0, set - 1 do
  redis.call('LSET', alerts, ARGV[at + 2 * i], ARGV[at + 2 * i + 1])
end
at = at + 2 * set
push(alerts, at, at + append - 1)
at = at + append
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3], 'gauge', ARGV[13], 'tl_total', ARGV[tl],
  'route', ARGV[tl + 2], 'alerts', ARGV[at])
if #ARGV > at then
  push(timeline, at + 1, #ARGV)
  redis.call('LTRIM', timeline, -tonumber(ARGV[tl + 1]), -1)
end
if ARGV[12] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[12])
  redis.call('PEXPIRE', timeline, ARGV[12])
  redis.call('PEXPIRE', alerts, ARGV[12])
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', timeline)
  redis.call('PERSIST', alerts)
end
for i = 0, members - 1 do
  local member, of_alert = KEYS[7 + 2 * i], KEYS[8 + 2 * i]
  redis.call('SET', member, ARGV[4], 'PX', ARGV[8])
  redis.call('SADD', of_alert, ARGV[4])
  redis.call('PEXPIRE', of_alert, ARGV[8])
end
redis.call('ZADD', KEYS[3], ARGV[9], ARGV[4])
if ARGV[10] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[10], ARGV[4])
else
  redis.call('ZREM', KEYS[4], ARGV[4])
end
if ARGV[11] ~= '' then
  redis.call('XADD', KEYS[5], '*', 'incident', ARGV[4], 'version', ARGV[2], 'event', ARGV[11])
end
return 1
