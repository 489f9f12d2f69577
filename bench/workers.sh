#!/usr/bin/env bash
# The runtime's worker threads (issue 18): omi with tokio's default (one worker per core) against
# one worker (`TOKIO_WORKER_THREADS=1`, read by tokio), alternated round by round, non-streamed
# and streamed: throughput at c=50, CPU per request, p50/p99 at c=1. bench/README.md ("The two
# runtime workers wait for each other") has the numbers and why one worker shortens the c=1 tail.
#   DURATION=5 ROUNDS=5 bench/workers.sh
#   BIN_DIR=/tmp/kept bench/workers.sh   # a kept build (bench/README.md)
set -euo pipefail
MOCK_PORT=18201
source "$(dirname "$0")/common.sh"
export OMI_RATE_LIMIT_PER_MINUTE=0
start_variant w2 18202
start_variant w1 18203 TOKIO_WORKER_THREADS=1
compare_variants "workers non-streamed" bench/post.lua
compare_variants "workers streamed" bench/post.lua STREAM=1
