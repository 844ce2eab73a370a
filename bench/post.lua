-- wrk script for bench/run.py: POSTs bodies read from files, bounded in count, JSON summary.
-- BENCH_BODY_FILE: one body (binary, e.g. multipart) sent every time, or
-- BENCH_BODIES_FILE: one body per line, sent in turn (distinct sentences);
-- BENCH_CTYPE: Content-Type; BENCH_MAX: stop after this many responses (0: no limit);
-- BENCH_METHOD=GET: plain GETs without a body instead; BENCH_API_KEY: sent as X-API-Key.
local single, bodies = nil, {}
local bf = os.getenv("BENCH_BODY_FILE")
local get = os.getenv("BENCH_METHOD") == "GET"
if get then
  single = ""
elseif bf and bf ~= "" then
  local f = assert(io.open(bf, "rb")); single = f:read("*a"); f:close()
else
  for line in io.lines(os.getenv("BENCH_BODIES_FILE")) do bodies[#bodies + 1] = line end
end
local ctype = os.getenv("BENCH_CTYPE")
local maxreq = tonumber(os.getenv("BENCH_MAX") or "0")
local i, n = tonumber(os.getenv("BENCH_OFFSET") or "0"), 0
local headers = {["Content-Type"] = ctype}
local key = os.getenv("BENCH_API_KEY")
if key and key ~= "" then headers["X-API-Key"] = key end
local static = nil  -- built on first use: wrk.path is not set yet while the script loads

request = function()
  if single then
    static = static or (get and wrk.format("GET") or wrk.format("POST", nil, headers, single))
    return static
  end
  i = i + 1
  return wrk.format("POST", nil, headers, bodies[(i % #bodies) + 1])
end

response = function(status, hdrs, body)
  n = n + 1
  if maxreq > 0 and n >= maxreq then wrk.thread:stop() end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d},"p50_us":%d,"p95_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean, latency.max))
end
