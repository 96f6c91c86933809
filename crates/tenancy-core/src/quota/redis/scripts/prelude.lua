-- Redis's clock, and the calendar period (index, seconds left) of a budget code:
-- 1 hour, 2 day, 3 month (UTC). Shared by both scripts.
local t = redis.call('TIME')
local now_s = tonumber(t[1])
local now_us = now_s * 1000000 + tonumber(t[2])
local function fl(x) return math.floor(x) end
local function locate(code)
  if code == 1 then return fl(now_s / 3600), 3600 - now_s % 3600 end
  if code == 2 then return fl(now_s / 86400), 86400 - now_s % 86400 end
  local z = fl(now_s / 86400) + 719468
  local era = fl(z / 146097)
  local doe = z - era * 146097
  local yoe = fl((doe - fl(doe / 1460) + fl(doe / 36524) - fl(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + fl(yoe / 4) - fl(yoe / 100))
  local mp = fl((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local ny, nm = y, m + 1
  if m == 12 then ny, nm = y + 1, 1 end
  local yy = nm <= 2 and ny - 1 or ny
  local era2 = fl(yy / 400)
  local yoe2 = yy - era2 * 400
  local mp2 = nm > 2 and nm - 3 or nm + 9
  local doe2 = yoe2 * 365 + fl(yoe2 / 4) - fl(yoe2 / 100) + fl((153 * mp2 + 2) / 5)
  local next_day = era2 * 146097 + doe2 - 719468
  return y * 12 + (m - 1), next_day * 86400 - now_s
end
