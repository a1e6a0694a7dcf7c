-- wrk script of every closed-loop run: counts answers that are not 200 (a 302 would mean
-- the filter did not accept the session: not the path being measured) and prints one
-- machine-readable line with exact latency percentiles (microseconds) when done.
local threads = {}
function setup(thread) table.insert(threads, thread) end

non200 = 0
function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1 end
end

done = function(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + (t:get("non200") or 0) end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d status_errors=%d socket_errors=%d non200=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout, bad,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
