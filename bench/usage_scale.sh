#!/usr/bin/env bash
# Usage at scale on PostgreSQL (issue 23): a month of usage records for 10,000 customers written
# through the Accountant's batch path, the insert rate, and the margins report's time before any
# record, at each checkpoint and after retention dropped the month's partition.
#   bench/usage_scale.sh                                  # 10M records, timed at 1M and 10M
#   ROWS=1000000 CHECKPOINTS="100000" bench/usage_scale.sh # shorter
# PostgreSQL at OMI_BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/postgres); about
# 450 bytes of disk a record (table, three indexes, WAL), dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-10000000}"
CHECKPOINTS="${CHECKPOINTS:-1000000}"
mkdir -p bench/out
# shellcheck disable=SC2086 # CHECKPOINTS is a list
cargo run --release --quiet --example usage_scale_bench -- "$ROWS" $CHECKPOINTS | tee bench/out/usage_scale.txt
