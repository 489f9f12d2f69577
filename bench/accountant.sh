#!/usr/bin/env bash
# The Accountant's benchmarks (issue: Accountant):
#  1. sustained usage writing into PostgreSQL (target >= 10,000 records/s);
#  2. gateway throughput with metering on vs off, side by side in one run (target: within 10%).
#   bench/accountant.sh                                  # full run
#   RECORDS=50000 DURATION=5 ROUNDS=3 bench/accountant.sh # shorter
set -euo pipefail
RECORDS="${RECORDS:-200000}"
MOCK_PORT=18021
source "$(dirname "$0")/common.sh"
cargo run --release --quiet --example usage_write_bench -- "$RECORDS" | tee "$out/usage_write.txt"

export OMI_RATE_LIMIT_PER_MINUTE=0
start_variant off 18022 OMI_METERING=false
start_variant on 18023 OMI_METERING=true
compare_variants "OMI gateway with metering off and on" bench/post.lua | tee "$out/metering_summary.txt"
records=$(DATABASE_URL="sqlite://$work/on.db" python3 - "$work/on.db" <<'PY'
import sqlite3, sys
print(sqlite3.connect(sys.argv[1]).execute("select count(*) from usage_records").fetchone()[0])
PY
)
echo "usage records written by the metered gateway: $records (its log: $work/on.log)" | tee -a "$out/metering_summary.txt"
