#!/usr/bin/env bash
# Where a setting's cost goes: starts two gateways that differ in their environment, profiles
# each with `perf record` under wrk at c=50, and prints the functions whose CPU time per
# request changed most from A to B (kernel functions included: wake-ups and context switches
# show there). This is how the Sentinel queue's per-request wake-up was found.
#   A="SENTINEL_MODE=off" B="SENTINEL_MODE=rules SENTINEL_BLOCK=0.9" bench/profile.sh
#   LUA=bench/sentinel.lua DURATION=6 A=... B=... bench/profile.sh
# Sampling adds its own overhead, so compare A with B, not these CPU times with other runs.
set -euo pipefail
MOCK_PORT=18031
source "$(dirname "$0")/common.sh"
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
LUA="${LUA:-bench/post.lua}"
export OMI_RATE_LIMIT_PER_MINUTE=0

# shellcheck disable=SC2086 # A and B are lists of VAR=value words
start_variant A 18032 ${A:-}
# shellcheck disable=SC2086
start_variant B 18033 ${B:-}

for v in A B; do
  url="http://127.0.0.1:${PORT[$v]}/v1/chat/completions"
  OMI_BENCH_KEY="${KEY[$v]}" wrk -t2 -c4 -d2s -s "$LUA" "$url" >/dev/null
  ticks0=$(cpu_ticks "${PID[$v]}")
  perf record -q -F 1999 -o "$work/$v.perf" -p "${PID[$v]}" -- sleep "$DURATION" >/dev/null 2>&1 & perf_pid=$!
  OMI_BENCH_KEY="${KEY[$v]}" wrk -t2 -c50 -d"${DURATION}s" -s "$LUA" "$url" >"$out/profile_$v.txt"
  wait $perf_pid
  n=$(requests "profile_$v")
  cpu_us=$(awk -v t="$(($(cpu_ticks "${PID[$v]}") - ticks0))" -v us="$tick_us" -v n="$n" 'BEGIN {printf "%.1f", t*us/n}')
  echo "$v (${!v:-defaults}): $(rps "profile_$v") req/s, omi CPU $cpu_us us/request"
  perf report -i "$work/$v.perf" --no-children --sort dso,symbol --percent-limit 0.05 2>/dev/null |
    awk -v cpu="$cpu_us" '$1 ~ /%$/ {pct = $1; sub(/%/, "", pct); $1 = $2 = $3 = ""; sub(/^ +/, ""); sub(/ +- +-$/, "")
      print pct * cpu / 100 "\t" $0}' \
    >"$work/$v.symbols"
done

echo "CPU time per request by function (us): B minus A, A, B; the 25 largest changes either way:"
awk -F'\t' 'FNR == NR {a[$2] += $1; next} {b[$2] += $1}
  END {for (f in a) d[f] = -a[f]; for (f in b) d[f] += b[f];
       for (f in d) printf "%.3f\t%+8.2f  %7.2f  %7.2f  %s\n", (d[f] < 0 ? -d[f] : d[f]), d[f], a[f], b[f], substr(f, 1, 100)}' \
  "$work/A.symbols" "$work/B.symbols" | sort -g -r | head -25 | cut -f2-
