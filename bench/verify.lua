-- wrk script: POST a random valid key from $BENCH_SECRETS to /v1/verify with $BENCH_TOKEN.
local keys = {}
local token = os.getenv("BENCH_TOKEN")

function init(args)
  local f = assert(io.open(os.getenv("BENCH_SECRETS"), "r"))
  for line in f:lines() do
    if #line > 0 then keys[#keys + 1] = line end
  end
  f:close()
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (token or "")

function request()
  local k = keys[math.random(#keys)]
  return wrk.format(nil, nil, nil, '{"key":"' .. k .. '"}')
end

function done(summary, latency, requests)
  io.write(string.format("p99_us=%d\n", latency:percentile(99)))
end
