package redisstore

import "github.com/redis/go-redis/v9"

// The scripts mirror ratelimit.SlidingWindow and ratelimit.TokenBucket in
// microseconds, the resolution of the server's TIME. Each decision is one
// script run, so it is atomic on the server and costs one round trip.
//
// Lua numbers are doubles: every value stays an integer below 2^53 (the
// constructors check Limit, Burst and Window for that), and fdiv corrects
// the rounding a floating division may introduce. Numbers written to Redis
// go through string.format('%.0f') so that large timestamps are not
// abbreviated to exponent notation.
//
// Both return {allowed (0/1), remaining, reset µs, retry-after µs}.

const luaHelpers = `
local function fdiv(a, b) -- floor(a/b) for integers 0 <= a, 0 < b, below 2^53
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end
local function cdiv(a, b) return fdiv(a + b - 1, b) end
local function num(x) return string.format('%.0f', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
`

// slidingWindowScript: KEYS[1] is a hash {s = window start µs, c = count
// in that window, p = count in the window before}. ARGV: limit, window µs,
// cost. The key expires when both counts have slid out.
var slidingWindowScript = redis.NewScript(luaHelpers + `
local limit, window, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local start = fdiv(now, window) * window
local prev, cur = 0, 0
local st = redis.call('HMGET', KEYS[1], 's', 'c', 'p')
local s = tonumber(st[1])
if s == start then
  cur, prev = tonumber(st[2]), tonumber(st[3])
elseif s == start - window then
  prev = tonumber(st[2])
elseif s and s > start then
  -- The server clock stepped back: judge at the start of the newest
  -- window seen, where the previous window counts in full.
  start, now = s, s
  cur, prev = tonumber(st[2]), tonumber(st[3])
end
local rest = window - (now - start)
local allowed, retry = 0, 0
local r = limit - cur - cost
if r >= 0 and 2 * prev * rest < (2 * r + 1) * window then
  allowed = 1
  cur = cur + cost
  redis.call('HSET', KEYS[1], 's', num(start), 'c', num(cur), 'p', num(prev))
  redis.call('PEXPIRE', KEYS[1], num(cdiv(rest + window, 1000)))
elseif cost > limit then
  retry = window
elseif r >= 0 then
  retry = rest - cdiv((2 * r + 1) * window, 2 * prev) + 1
else
  retry = rest + window - cdiv((2 * (limit - cost) + 1) * window, 2 * cur) + 1
end
local remaining = limit - cur - fdiv(2 * prev * rest + window, 2 * window)
if remaining < 0 then remaining = 0 end
local reset = 0
if cur > 0 then reset = rest + window elseif prev > 0 then reset = rest end
return {allowed, remaining, reset, retry}
`)

// tokenBucketScript: KEYS[1] is the theoretical arrival time (µs) at which
// the bucket is full again. ARGV: burst, emission interval µs, cost. The
// key expires when the bucket is full.
var tokenBucketScript = redis.NewScript(luaHelpers + `
local burst, interval, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tau = burst * interval
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local allowed, retry = 0, 0
if cost > burst then
  retry = tau
else
  local nxt = tat + cost * interval
  if nxt - now <= tau then
    allowed = 1
    tat = nxt
    redis.call('SET', KEYS[1], num(tat), 'PX', num(cdiv(tat - now, 1000)))
  else
    retry = nxt - now - tau
  end
end
local remaining = 0
if tau > tat - now then remaining = fdiv(tau - (tat - now), interval) end
return {allowed, remaining, tat - now, retry}
`)
