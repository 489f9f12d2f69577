#!/usr/bin/env bash
# Dashboard benchmark (issue: dashboard). Seeds PostgreSQL with 1,000 customers and a month
# of usage (1.5 million records by default) through Store::insert_usage, starts the real
# server and times every dashboard page; fails if a page's median is over 100 ms.
#   bench/dashboard.sh                       # full run
#   OMI_BENCH_ROWS=200000 bench/dashboard.sh # smaller
#   OMI_BENCH_KEEP=1 bench/dashboard.sh      # keep (and reuse) the seeded database
#   OMI_BENCH_PROFILE=debug bench/dashboard.sh  # an unoptimized build (slower; not the budget's build)
# PostgreSQL: OMI_BENCH_PG_URL, default postgres://postgres@127.0.0.1:5432/postgres; the
# database it creates: OMI_BENCH_DB, default omi_dashboard_bench (two checkouts on one server
# need two names).
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out; mkdir -p "$out"
case "${OMI_BENCH_PROFILE:-release}" in
  release) profile=(--release); report="$out/dashboard.txt" ;;
  debug) profile=(); report="$out/dashboard-debug.txt" ;;
  *) echo "OMI_BENCH_PROFILE must be release or debug" >&2; exit 2 ;;
esac
RUST_LOG=warn cargo run "${profile[@]}" --quiet --example dashboard_bench | tee "$report"
