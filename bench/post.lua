-- wrk script: a chat completion (bench/post.json, or the body in the file $BENCH_BODY names),
-- streamed when STREAM=1, with the key from $OMI_BENCH_KEY; ANTHROPIC_VERSION=v adds the
-- `anthropic-version` header Anthropic's SDKs send (the bare floor forwards it to the mock).
local file = assert(io.open(os.getenv("BENCH_BODY") or "bench/post.json"))
local body = file:read("*a")
file:close()
if os.getenv("STREAM") == "1" then
  body = body:gsub("^{", '{"stream":true,', 1)
end
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("OMI_BENCH_KEY")
local anthropic_version = os.getenv("ANTHROPIC_VERSION")
if anthropic_version and anthropic_version ~= "" then
  wrk.headers["anthropic-version"] = anthropic_version
end
