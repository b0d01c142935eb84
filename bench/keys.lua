-- wrk script for bench/run.sh's virtual-key scenario: POSTs one chat
-- completion per request, rotating `Authorization` over the keys listed in
-- $WRK_KEYS (one per line; empty or unset: no header). Prints one line
-- `JSON {...}` with the counts and latency percentiles (µs) when done.

local keys = {}
local i = 0
local body = os.getenv("WRK_BODY") or "{}"

function init(args)
  local path = os.getenv("WRK_KEYS")
  if path and path ~= "" then
    for line in io.lines(path) do
      if line ~= "" then keys[#keys + 1] = line end
    end
  end
  -- Threads start at different places so they do not walk in step.
  i = math.random(0, math.max(#keys - 1, 0))
end

function request()
  local headers = { ["Content-Type"] = "application/json" }
  if #keys > 0 then
    i = i % #keys + 1
    headers["Authorization"] = "Bearer " .. keys[i]
  end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
