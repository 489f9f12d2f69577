-- wrk script: a non-streaming chat completion (bench/post.json) with the key from $OMI_BENCH_KEY.
local file = assert(io.open("bench/post.json"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("OMI_BENCH_KEY")
