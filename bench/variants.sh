#!/usr/bin/env bash
# omi under settings that differ only in its environment, alternated round by round,
# non-streamed and streamed: throughput at c=50, CPU per request, p50/p99 at c=1.
# VARIANTS: one `name|VAR=value …` per line, the first is the base. The default compares the
# runtime's worker threads (issue 18): tokio's default (one worker per core) against one
# worker (`TOKIO_WORKER_THREADS=1`, read by tokio); bench/README.md ("The two runtime workers
# wait for each other") has the numbers and why one worker shortens the c=1 tail.
#   DURATION=5 ROUNDS=5 bench/variants.sh
#   VARIANTS='default|
#   purge0|MIMALLOC_PURGE_DELAY=0' BIN_DIR=/tmp/kept bench/variants.sh
#   VARIANTS='before|OMI_BUILD=/tmp/old
#   after|' bench/variants.sh            # two builds side by side
#   SCRIPT=bench/sentinel.lua bench/variants.sh  # another request (default bench/post.lua)
set -euo pipefail
MOCK_PORT=18201
# Read before common.sh, which declares its own VARIANTS array for compare_variants.
requested_variants="${VARIANTS:-w2|
w1|TOKIO_WORKER_THREADS=1}"
source "$(dirname "$0")/common.sh"
export OMI_RATE_LIMIT_PER_MINUTE=0
port=18202
while IFS='|' read -r name settings; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086 # settings is a list of VAR=value words
  start_variant "$name" $port $settings
  port=$((port + 1))
done <<<"$requested_variants"
script="${SCRIPT:-bench/post.lua}"
compare_variants "variants non-streamed, $script" "$script"
compare_variants "variants streamed, $script" "$script" STREAM=1
