-- Corrects the budgets by ARGV[1] units (negative: a refund), never below zero, in
-- the periods of the second ARGV[2] (the charge's, from `CHECK`; 0: now): a period
-- that has ended since keeps the correction to itself.
local delta = tonumber(ARGV[1])
local at = tonumber(ARGV[2])
if at > 0 then now_s = at end
for i = 3, #ARGV do
  local idx = locate(tonumber(ARGV[i]))
  local key = KEYS[1] .. ':b:' .. ARGV[i] .. ':' .. string.format('%.0f', idx)
  if redis.call('EXISTS', key) == 1 then
    local v = redis.call('INCRBY', key, delta)
    if v < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  end
end
return 1
