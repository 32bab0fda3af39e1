-- wrk script: rotates through the tokens in $TOKENS (one per line), starting each thread at a
-- random offset. MODE=validate sends what Traefik sends to a forwardAuth address; MODE=session
-- the same with the token as a sign-in session cookie instead; MODE=dpop the same with
-- `Authorization: DPoP` and a proof, from lines "token<TAB>proof" read once each (every thread
-- its own share: a proof is good once); MODE=bearer sends only
-- Authorization (through Traefik); MODE=basic sends Basic $BASIC; MODE=none nothing.
local tokens = {}
local mode = os.getenv("MODE") or "validate"
local file = os.getenv("TOKENS")
if file and #file > 0 then
  for line in io.lines(file) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
end
local i = 0
local threads = 0

function setup(thread)
  thread:set("part", threads)
  threads = threads + 1
end

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  if mode == "dpop" then
    -- Thread k starts at k/THREADS of the file and reads forward.
    local share = math.floor(#tokens / tonumber(os.getenv("THREADS") or "2"))
    i = (part or 0) * share
  elseif #tokens > 0 then
    i = math.random(1, #tokens)
  end
end

function request()
  local headers = {}
  if #tokens > 0 then i = i % #tokens + 1 end
  if mode == "validate" or mode == "session" or mode == "dpop" then
    headers["X-Forwarded-Method"] = "GET"
    headers["X-Forwarded-Proto"] = "http"
    headers["X-Forwarded-Host"] = "app.test"
    headers["X-Forwarded-Port"] = "80"
    headers["X-Forwarded-Uri"] = "/api/v1/mcps"
    headers["X-Forwarded-For"] = "10.0.0.1"
    if mode == "session" then
      headers["Cookie"] = "gatepass_session=" .. tokens[i]
    elseif mode == "dpop" then
      local token, proof = tokens[i]:match("([^\t]+)\t([^\t]+)")
      headers["Authorization"] = "DPoP " .. token
      headers["DPoP"] = proof
    else
      headers["Authorization"] = "Bearer " .. tokens[i]
    end
  elseif mode == "bearer" then
    headers["Authorization"] = "Bearer " .. tokens[i]
  elseif mode == "basic" then
    headers["Authorization"] = "Basic " .. os.getenv("BASIC")
  end
  return wrk.format("GET", nil, headers)
end
