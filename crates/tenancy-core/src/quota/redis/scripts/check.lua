-- One check: budgets first (read only), then GCRA for the rate on Redis's own clock,
-- then the budgets are charged; all or nothing, atomically. Calendar periods come
-- from Redis's `TIME` too, so replicas with skewed clocks agree.
local base = KEYS[1]
local T = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local nb = tonumber(ARGV[4])
local rcost = tonumber(ARGV[5 + 2 * nb])
-- The charge's id: a check its manager gave up on (a timeout, a client gone) was
-- voided before it ran here; it charges nothing.
local cid = ARGV[6 + 2 * nb]
local record = cid and (base .. ':c:' .. cid)
if record and redis.call('GET', record) == 'void' then return {3} end
local keys, lefts, units, useds = {}, {}, {}, {}
local tat = 0
if T > 0 then
  tat = tonumber(redis.call('GET', base .. ':r') or '0')
  if tat < now_us then tat = now_us end
end
-- What the rate has left now, uncharged: reported beside a budget's refusal.
local function rate_left()
  if T > 0 then return fl((limit - (tat - now_us)) / T), tat - now_us end
  return -1, 0
end
for i = 1, nb do
  units[i] = tonumber(ARGV[3 + 2 * i])
  local idx, left = locate(tonumber(ARGV[4 + 2 * i]))
  keys[i] = base .. ':b:' .. ARGV[4 + 2 * i] .. ':' .. string.format('%.0f', idx)
  lefts[i] = left
  useds[i] = tonumber(redis.call('GET', keys[i]) or '0')
  if useds[i] + cost > units[i] then
    local rrem, rreset = rate_left()
    return {0, 1, i, units[i] - useds[i], left, rrem, rreset}
  end
end
local rrem, rreset = -1, 0
if T > 0 then
  local new_tat = tat + rcost * T
  if new_tat - now_us > limit then
    -- Refused by the rate: the budgets, uncharged, follow as (remaining, seconds left).
    local out = {0, 2, 0, fl((limit - (tat - now_us)) / T), new_tat - now_us - limit}
    for i = 1, nb do
      out[#out + 1] = units[i] - useds[i]
      out[#out + 1] = lefts[i]
    end
    return out
  end
  redis.call('SET', base .. ':r', string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now_us) / 1000) + 1)
  rrem = fl((limit - (new_tat - now_us)) / T)
  rreset = new_tat - now_us
end
local out = {1, rrem, rreset, now_s}
for i = 1, nb do
  local used = redis.call('INCRBY', keys[i], cost)
  redis.call('EXPIRE', keys[i], lefts[i] + 60)
  out[#out + 1] = units[i] - used
  out[#out + 1] = lefts[i]
end
-- What was charged, for `VOID` should the manager give up on this answer; kept a
-- minute (the voider gives up after about half a minute).
if record then
  local rec = string.format('%.0f %.0f', cost, rcost)
  for i = 1, nb do rec = rec .. ' ' .. keys[i] end
  redis.call('SET', record, rec, 'PX', 60000)
end
return out
