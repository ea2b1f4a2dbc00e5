-- wrk script: POST pre-signed, unique webhook bodies (one per line: signature TAB body).
-- Usage: wrk -s signed_requests.lua URL -- FILE
local requests = {}
local index = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  for line in file:lines() do
    local tab = line:find("\t", 1, true)
    local headers = {
      ["Content-Type"] = "application/json",
      ["x-jiko-signature"] = line:sub(1, tab - 1),
    }
    requests[#requests + 1] = wrk.format("POST", nil, headers, line:sub(tab + 1))
  end
  file:close()
end

function request()
  index = index + 1
  if index > #requests then index = 1 end  -- the generator makes more than a run needs
  return requests[index]
end

function done(summary, latency, requests_done)
  io.write(string.format("BENCH requests=%d non2xx=%d errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
