#!/usr/bin/env bash
# Firewall cost benchmark (issue: firewall). Builds release binaries, starts the mock upstream
# and three `omi serve` instances that differ only in the rate limiter: off, in-process, and on
# Redis. The limit is set so high that nothing is refused, so what differs is the check itself.
# Measured side by side in one run, alternating round by round so that machine noise hits all
# three alike, and reported as the median of the rounds: throughput at c=50, and p50/p99
# latency at c=1 (where the Redis round trip shows).
#   bench/firewall.sh                  # full run (about 3 minutes after the build)
#   DURATION=10 ROUNDS=3 bench/firewall.sh
# Redis: REDIS_URL (default redis://127.0.0.1:6379/); keys go under a prefix of their own.
set -euo pipefail
REDIS="${REDIS_URL:-redis://127.0.0.1:6379/}"
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5}"
MOCK_PORT=18011
declare -A PORT=([off]=18012 [local]=18013 [redis]=18014)
LIMITERS=(off local redis)
source "$(dirname "$0")/common.sh"

# A database and a key for each instance (three writers on one SQLite file would measure lock
# contention instead).
declare -A KEY
for l in "${LIMITERS[@]}"; do
  KEY[$l]=$(DATABASE_URL="sqlite://$work/$l.db" "$bin/omi" keys create --email bench@example.com)
done
printf 'rate_limit_redis_prefix = "omi:rl:bench:%s"\n' "$$" >"$work/omi.toml"

start() { # limiter
  local limit=100000000 redis=""
  [ "$1" = off ] && limit=0
  [ "$1" = redis ] && redis="$REDIS"
  env DATABASE_URL="sqlite://$work/$1.db" OMI_LISTEN="127.0.0.1:${PORT[$1]}" OMI_CONFIG="$work/omi.toml" \
    OMI_RATE_LIMIT_PER_MINUTE=$limit ${redis:+REDIS_URL=$redis} "$bin/omi" serve >"$work/$1.log" 2>&1 &
  pids+=($!)
}
for l in "${LIMITERS[@]}"; do start "$l"; done
for l in "${LIMITERS[@]}"; do wait_healthy "${PORT[$l]}"; done
for l in "${LIMITERS[@]}"; do
  status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${KEY[$l]}" "127.0.0.1:${PORT[$l]}/v1/models")
  [ "$status" = 200 ] || { echo "instance $l answers $status:" >&2; cat "$work/$l.log" >&2; exit 1; }
done
if grep -q "lost Redis" "$work/redis.log"; then
  echo "the Redis instance cannot use $REDIS; start Redis or set REDIS_URL" >&2; exit 1
fi

run() { # name limiter connections
  OMI_BENCH_KEY=${KEY[$2]} wrk -t"$([ "$3" -gt 1 ] && echo 2 || echo 1)" -c"$3" -d"${DURATION}s" --latency -s bench/post.lua \
    "http://127.0.0.1:${PORT[$2]}/v1/chat/completions" >"$out/$1.txt"
}
refused() { awk '/Non-2xx/ {print $NF}' "$out/$1.txt"; }
median() { sort -n | awk '{v[NR]=$1} END {printf "%.0f", NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# Warm every path (connections, key cache, Redis script), then alternate the three, round by round.
for l in "${LIMITERS[@]}"; do
  OMI_BENCH_KEY=${KEY[$l]} wrk -t1 -c4 -d2s -s bench/post.lua "http://127.0.0.1:${PORT[$l]}/v1/chat/completions" >/dev/null
done
declare -A RPS P50 P99
for r in $(seq "$ROUNDS"); do
  for l in "${LIMITERS[@]}"; do
    run "fw_${l}_c50_r$r" "$l" 50
    run "fw_${l}_c1_r$r" "$l" 1
    RPS[$l]+="$(rps "fw_${l}_c50_r$r")"$'\n'
    P50[$l]+="$(to_us "$(pct "fw_${l}_c1_r$r" 50)")"$'\n'
    P99[$l]+="$(to_us "$(pct "fw_${l}_c1_r$r" 99)")"$'\n'
    bad=$(refused "fw_${l}_c50_r$r")
    [ -z "$bad" ] || { echo "limiter $l: $bad non-2xx responses (the limit must not refuse here)" >&2; exit 1; }
  done
done

{
  echo "== OMI firewall benchmark ($(date -u +%FT%TZ), $(nproc) cores, wrk, ${DURATION}s per run, median of $ROUNDS rounds) =="
  off=$(printf '%s' "${RPS[off]}" | median)
  printf "%-10s %12s %10s %12s %12s\n" limiter "req/s c=50" "vs off" "p50 c=1 us" "p99 c=1 us"
  for l in "${LIMITERS[@]}"; do
    rps=$(printf '%s' "${RPS[$l]}" | median)
    printf "%-10s %12s %9s%% %12s %12s\n" "$l" "$rps" "$(awk -v a="$rps" -v b="$off" 'BEGIN {printf "%+.1f", (a-b)/b*100}')" \
      "$(printf '%s' "${P50[$l]}" | median)" "$(printf '%s' "${P99[$l]}" | median)"
  done
  local_p50=$(printf '%s' "${P50[local]}" | median); redis_p50=$(printf '%s' "${P50[redis]}" | median)
  echo "Redis hop (p50 c=1, redis minus in-process): $((redis_p50 - local_p50)) us per request"
  echo "per-round raw numbers: $out/fw_*.txt"
} | tee "$out/firewall_summary.txt"
