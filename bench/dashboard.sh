#!/usr/bin/env bash
# Dashboard benchmark (issue: dashboard). Seeds PostgreSQL with 1,000 customers and a month
# of usage (1.5 million records by default) through Store::insert_usage, starts the real
# server and times every dashboard page; fails if a page's median is over 100 ms.
#   bench/dashboard.sh                       # full run
#   OMI_BENCH_ROWS=200000 bench/dashboard.sh # smaller
#   OMI_BENCH_KEEP=1 bench/dashboard.sh      # keep (and reuse) the seeded database
# PostgreSQL: OMI_BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out; mkdir -p "$out"
RUST_LOG=warn cargo run --release --quiet --example dashboard_bench | tee "$out/dashboard.txt"
