#!/usr/bin/env bash
# Peak RSS (VmHWM) of omi under long c=50 saturation, one variant after another, each a fresh
# process: chat completions, streamed, embeddings, for DURATION seconds each, ROUNDS times.
#   PEAK_VARIANTS="default|
#   purge0|MIMALLOC_PURGE_DELAY=0" BIN_DIR=dir bench/peak.sh
set -euo pipefail
MOCK_PORT=18061
source "$(dirname "$0")/common.sh"
export OMI_RATE_LIMIT_PER_MINUTE=0 RUST_LOG=warn,omi::store::idle_lane=info
port=18062
while IFS='|' read -r name settings; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086 # settings is a list of VAR=value words
  start_variant "$name" $port $settings
  pid=${PID[$name]}
  for _ in $(seq "$ROUNDS"); do
    OMI_BENCH_KEY="${KEY[$name]}" wrk -t2 -c50 -d"${DURATION}s" -s bench/post.lua "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
    STREAM=1 OMI_BENCH_KEY="${KEY[$name]}" wrk -t2 -c50 -d"${DURATION}s" -s bench/post.lua "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
    BENCH_BODY=bench/embeddings.json OMI_BENCH_KEY="${KEY[$name]}" wrk -t2 -c50 -d"${DURATION}s" -s bench/post.lua "http://127.0.0.1:$port/v1/embeddings" >/dev/null
  done
  printf '%-12s peak %6.1f MiB  now %6.1f MiB  lane timeouts %s\n' "$name" \
    "$(awk '/VmHWM/ {print $2/1024}' /proc/$pid/status)" "$(awk '/VmRSS/ {print $2/1024}' /proc/$pid/status)" \
    "$(grep -c 'ran out of time' "$work/$name.log" || true)"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  port=$((port + 1))
done <<<"${PEAK_VARIANTS:-default|}"
