-- wrk script: keep-alive POSTs of one MCP tools/call to a Streamable HTTP endpoint.
-- The environment (set by scripts/load/run) gives the token, the tool and its arguments,
-- and the session ids: requests go round-robin over them, so a server that serializes
-- each session's requests is measured with as many sessions as connections.
local token = os.getenv("MCP_TOKEN")
local tool = os.getenv("MCP_TOOL") or "_get_authentication_info"
local args = os.getenv("MCP_ARGS")
if not args or args == "" then args = "{}" end
local body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. args .. '}}'

local requests = {}
local next_request = 0

function init(argv)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = "2025-11-25",
  }
  if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end
  local sids = os.getenv("MCP_SESSION_IDS") or ""
  for sid in string.gmatch(sids, "[^,]+") do
    headers["Mcp-Session-Id"] = sid
    requests[#requests + 1] = wrk.format("POST", nil, headers, body)
  end
  if #requests == 0 then
    headers["Mcp-Session-Id"] = nil
    requests[1] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d errors=%d rps=%.0f p50_us=%d p99_us=%d\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99)))
end
