-- pipeline.lua - wrk script: each write carries DEPTH requests (default 16),
-- so a server reads them together and may answer them in one write.
-- Usage: wrk ... -s perf/wrk/pipeline.lua URL -- [DEPTH]
local burst

function init(args)
  local depth = tonumber(args[1]) or 16
  local one = wrk.format(nil, "/")
  burst = string.rep(one, depth)
end

function request()
  return burst
end
