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
  pids+=($!); PID[$1]=$!
}
declare -A PID
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
requests() { awk '/requests in/ {print $1}' "$out/$1.txt"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system time of the process
tick_us=$((1000000 / $(getconf CLK_TCK)))
median() { # [decimals]
  sort -n | awk -v d="${1:-0}" '{v[NR]=$1} END {printf "%." d "f", NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
change() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f", (a-b)/b*100}'; }

# Warm every path (connections, key cache, Redis script), then alternate the three, round by round.
for l in "${LIMITERS[@]}"; do
  OMI_BENCH_KEY=${KEY[$l]} wrk -t1 -c4 -d2s -s bench/post.lua "http://127.0.0.1:${PORT[$l]}/v1/chat/completions" >/dev/null
done
declare -A RPS CPU P50 P99
: >"$out/fw_rounds.txt"
for r in $(seq "$ROUNDS"); do
  for l in "${LIMITERS[@]}"; do
    before=$(cpu_ticks "${PID[$l]}")
    run "fw_${l}_c50_r$r" "$l" 50
    used=$(($(cpu_ticks "${PID[$l]}") - before))
    run "fw_${l}_c1_r$r" "$l" 1
    RPS[$l]+="$(rps "fw_${l}_c50_r$r")"$'\n'
    cpu=$(awk -v t="$used" -v us="$tick_us" -v n="$(requests "fw_${l}_c50_r$r")" 'BEGIN {printf "%.1f", t*us/n}')
    CPU[$l]+="$cpu"$'\n'
    echo "round $r $l: $(rps "fw_${l}_c50_r$r") req/s, $cpu CPU us/req" >>"$out/fw_rounds.txt"
    P50[$l]+="$(to_us "$(pct "fw_${l}_c1_r$r" 50)")"$'\n'
    P99[$l]+="$(to_us "$(pct "fw_${l}_c1_r$r" 99)")"$'\n'
    bad=$(refused "fw_${l}_c50_r$r")
    [ -z "$bad" ] || { echo "limiter $l: $bad non-2xx responses (the limit must not refuse here)" >&2; exit 1; }
  done
done

{
  echo "== OMI firewall benchmark ($(date -u +%FT%TZ), $(nproc) cores, wrk, ${DURATION}s per run, median of $ROUNDS rounds) =="
  off=$(printf '%s' "${RPS[off]}" | median); off_cpu=$(printf '%s' "${CPU[off]}" | median 1)
  printf "%-8s %11s %8s %15s %8s %11s %11s\n" limiter "req/s c=50" "vs off" "omi CPU us/req" "vs off" "p50 c=1 us" "p99 c=1 us"
  for l in "${LIMITERS[@]}"; do
    rps=$(printf '%s' "${RPS[$l]}" | median); cpu=$(printf '%s' "${CPU[$l]}" | median 1)
    printf "%-8s %11s %7s%% %15s %7s%% %11s %11s\n" "$l" "$rps" "$(change "$rps" "$off")" "$cpu" "$(change "$cpu" "$off_cpu")" \
      "$(printf '%s' "${P50[$l]}" | median)" "$(printf '%s' "${P99[$l]}" | median)"
  done
  local_p50=$(printf '%s' "${P50[local]}" | median); redis_p50=$(printf '%s' "${P50[redis]}" | median)
  echo "Redis hop (p50 c=1, redis minus in-process): $((redis_p50 - local_p50)) us per request"
  echo "per-round numbers: $out/fw_rounds.txt, wrk's output: $out/fw_*_r*.txt"
} | tee "$out/firewall_summary.txt"
