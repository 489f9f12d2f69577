#!/usr/bin/env bash
# The Accountant's benchmarks, side by side in one run:
#  1. sustained usage writing into PostgreSQL (target >= 10,000 records/s);
#  2. gateway throughput with metering on vs off (target: within 10%).
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS="${RECORDS:-200000}"
cargo run --release --quiet --example usage_write_bench -- "$RECORDS"
for metering in true false; do
  echo "== gateway with OMI_METERING=$metering"
  OMI_METERING=$metering bench/gateway.sh | grep -E "throughput|latency c=1 p50"
done
