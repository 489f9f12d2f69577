#!/usr/bin/env bash
# Firewall cost benchmark (issue: firewall). Builds release binaries, starts the mock upstream
# and three `omi serve` instances that differ only in the rate limiter: off, in-process, and on
# Redis. The limit is set so high that nothing is refused, so what differs is the check itself.
# Measured side by side in one run, alternating round by round so that machine noise hits all
# three alike, and reported as the median of the rounds: throughput at c=50, omi's own CPU time
# per request at c=50 (steadier than throughput on a shared machine), and p50/p99 latency at c=1
# (where the Redis round trip shows).
#   bench/firewall.sh                  # full run (about 3 minutes after the build)
#   DURATION=10 ROUNDS=3 bench/firewall.sh
# Redis: REDIS_URL (default redis://127.0.0.1:6379/); keys go under a prefix of their own.
set -euo pipefail
REDIS="${REDIS_URL:-redis://127.0.0.1:6379/}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5}"
MOCK_PORT=18011
source "$(dirname "$0")/common.sh"

printf 'rate_limit_redis_prefix = "omi:rl:bench:%s"\n' "$$" >"$work/omi.toml"
export OMI_CONFIG="$work/omi.toml"
start_variant off 18012 OMI_RATE_LIMIT_PER_MINUTE=0
start_variant local 18013 OMI_RATE_LIMIT_PER_MINUTE=100000000
start_variant redis 18014 OMI_RATE_LIMIT_PER_MINUTE=100000000 REDIS_URL="$REDIS"
for v in "${VARIANTS[@]}"; do
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${KEY[$v]}" "127.0.0.1:${PORT[$v]}/v1/models")
  [ "$status" = 200 ] || { echo "instance $v answers $status:" >&2; cat "$work/$v.log" >&2; exit 1; }
done
if grep -q "lost Redis" "$work/redis.log"; then
  echo "the Redis instance cannot use $REDIS; start Redis or set REDIS_URL" >&2; exit 1
fi

title="OMI firewall benchmark: per-IP limiter off, in-process, on Redis"
{
  compare_variants "$title" bench/post.lua
  local_p50=$(variant_median "$title" local p50_us); redis_p50=$(variant_median "$title" redis p50_us)
  echo "Redis hop (p50 c=1, redis minus in-process): $(awk -v a="$redis_p50" -v b="$local_p50" 'BEGIN {print a - b}') us per request"
} | tee "$out/firewall_summary.txt"
