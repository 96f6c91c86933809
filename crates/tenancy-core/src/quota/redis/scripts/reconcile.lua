-- Charges Redis with what a replica admitted on its own while Redis was away: the
-- rate's units still within the window (its arrival time moved on, at most a full
-- window), and each budget's units if their period is still the current one.
local base = KEYS[1]
local T = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local owed = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
if T > 0 and owed > 0 then
  local tat = tonumber(redis.call('GET', base .. ':r') or '0')
  if tat < now_us then tat = now_us end
  tat = math.min(tat + owed * T, now_us + limit)
  redis.call('SET', base .. ':r', string.format('%.0f', tat), 'PX', math.ceil((tat - now_us) / 1000) + 1)
end
for i = 1, nb do
  local code = ARGV[2 + 3 * i]
  local idx, left = locate(tonumber(code))
  local units = tonumber(ARGV[4 + 3 * i])
  if units ~= 0 and idx == tonumber(ARGV[3 + 3 * i]) then
    local key = base .. ':b:' .. code .. ':' .. string.format('%.0f', idx)
    -- A refund owed (a correction made while Redis was away) never goes below zero.
    local v = redis.call('INCRBY', key, units)
    if v < 0 then redis.call('SET', key, 0) end
    redis.call('EXPIRE', key, left + 60)
  end
end
return 1
