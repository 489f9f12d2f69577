-- wrk script for bench/sentinel.sh: bench/sentinel.json, a typical prompt (about 60 words) and a
-- steered answer of about 110 words, streamed in 40 chunks when STREAM=1. Key from $OMI_BENCH_KEY.
local file = assert(io.open("bench/sentinel.json"))
local body = file:read("*a")
file:close()
if os.getenv("STREAM") == "1" then
  body = body:gsub('"stream":false', '"stream":true', 1)
end
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("OMI_BENCH_KEY")
