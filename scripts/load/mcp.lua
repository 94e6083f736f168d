-- wrk script: keep-alive POSTs of one MCP tools/call to a Streamable HTTP endpoint.
-- Headers come from the environment that scripts/load sets.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
local sid = os.getenv("MCP_SESSION_ID")
if sid and sid ~= "" then wrk.headers["Mcp-Session-Id"] = sid end
local token = os.getenv("MCP_TOKEN")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
local tool = os.getenv("MCP_TOOL") or "_get_authentication_info"
local args = os.getenv("MCP_ARGS")
if not args or args == "" then args = "{}" end
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. args .. '}}'

function done(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT requests=%d errors=%d rps=%.0f p50_us=%d p99_us=%d\n",
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99)))
end
