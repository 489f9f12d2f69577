-- wrk script: a non-streaming chat completion with the key from $OMI_BENCH_KEY.
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in three words"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("OMI_BENCH_KEY")
