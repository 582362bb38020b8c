-- wrk script for bench/serving_bench.py: POSTs TF Serving Predict bodies and prints a JSON summary.
--
--   wrk -t1 -c16 -d6s -s bench/predict.lua http://127.0.0.1:8501/v1/models/mnist:predict -- BODIES_FILE
--
-- BODIES_FILE holds one JSON body per line ({"instances": [...]}); each connection cycles through them
-- so the server does not see one body over and over. Requests are formatted once in init(), so the
-- per-request work in wrk is a pointer bump: the load generator stays cheap next to the server.

local requests = {}
local next_index = 1

function init(args)
  local path = args[1]
  local file = assert(io.open(path, "r"), "cannot open bodies file " .. tostring(path))
  local headers = { ["Content-Type"] = "application/json" }
  for line in file:lines() do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  file:close()
  assert(#requests > 0, "no bodies in " .. path)
  next_index = math.random(#requests)
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

-- Latency values are in microseconds; errors.status counts HTTP answers outside 2xx/3xx.
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
