-- Voids the check of charge id ARGV[1]: gives back the budgets' units it charged
-- when it ran (as refunds do, the rate keeps its units: a window's worth at most), or,
-- when it has not run yet, marks it so that it charges nothing when it does. Safe to
-- run more than once, and in either order with the check.
local base = KEYS[1]
local record = base .. ':c:' .. ARGV[1]
local v = redis.call('GET', record)
if not v then
  redis.call('SET', record, 'void', 'PX', 60000)
  return 0
end
if v == 'void' then return 0 end
local parts = {}
for w in string.gmatch(v, '%S+') do parts[#parts + 1] = w end
local cost = tonumber(parts[1])
for i = 3, #parts do
  if redis.call('EXISTS', parts[i]) == 1 then
    local n = redis.call('DECRBY', parts[i], cost)
    if n < 0 then redis.call('SET', parts[i], 0, 'KEEPTTL') end
  end
end
redis.call('SET', record, 'void', 'KEEPTTL')
return 1
