#!/usr/bin/env bash
# The c=1 tail (issue 18): omi's added latency at p50 and p99, one request at a time, for
# several gateways side by side, alternated round by round so that the machine's noise hits
# all alike, with the direct path (wrk -> mock) and the bare floor (examples/bare_proxy.rs)
# measured in the same rounds. Each gateway is `name=bin_dir[:VAR=value,VAR=value]`: a kept
# build (bench/README.md) or target/release, with its own SQLite database and key.
#   bench/tail.sh                                        # this build, metering on and off
#   TAIL_GATEWAYS="before=/work/bins/base after=target/release" bench/tail.sh
#   DURATION=5 ROUNDS=5 bench/tail.sh
# Added latency = the gateway's percentile minus the direct path's in the same round.
# On a VM the direct path's own c=1 p99 moves by milliseconds between runs (wake-ups of halted
# virtual cores go through the hypervisor), which can bury what a gateway does to its tail. The
# `wait` column does not see the host: per request, the microseconds the gateway's and the
# mock's threads spent runnable but waiting for a core (`/proc/PID/task/*/schedstat`, second
# field), the SQLite connection threads left out (theirs is no request's wait). It is what a
# background thread of the gateway (a writer, say) costs the request path in this guest.
set -euo pipefail
MOCK_PORT=18101
BARE_PORT=18102
FIRST_PORT=18110
source "$(dirname "$0")/common.sh"
export OMI_RATE_LIMIT_PER_MINUTE=0
TAIL_GATEWAYS="${TAIL_GATEWAYS:-omi=$bin unmetered=$bin:OMI_METERING=false}"

declare -A URL BENCH_KEY GATEWAY_PID
names=(direct bare)
URL[direct]="http://127.0.0.1:$MOCK_PORT"
URL[bare]="http://127.0.0.1:$BARE_PORT"
start_bare "$BARE_PORT"
GATEWAY_PID[bare]=$bare_pid
port=$FIRST_PORT
for spec in $TAIL_GATEWAYS; do
  name=${spec%%=*}; rest=${spec#*=}; dir=${rest%%:*}; settings=()
  [ "$rest" != "$dir" ] && IFS=, read -r -a settings <<<"${rest#*:}"
  db="sqlite://$work/$name.db"
  BENCH_KEY[$name]=$(DATABASE_URL=$db "$dir/omi" keys create --email bench@example.com)
  env DATABASE_URL=$db OMI_LISTEN="127.0.0.1:$port" "${settings[@]}" "$dir/omi" serve >"$work/$name.log" 2>&1 & pids+=($!)
  GATEWAY_PID[$name]=$!
  wait_healthy $port
  URL[$name]="http://127.0.0.1:$port"; names+=("$name"); port=$((port + 1))
done
for _ in $(seq 50); do curl -s -o /dev/null "127.0.0.1:$BARE_PORT/" && break; sleep 0.1; done

c1() { # name output [wrk options…]
  local name=$1 file=$2; shift 2
  OMI_BENCH_KEY="${BENCH_KEY[$name]:-none}" wrk -t1 -c1 --latency "$@" -s bench/post.lua \
    "${URL[$name]}/v1/chat/completions" >"$file"
}
for name in "${names[@]}"; do c1 "$name" /dev/null -d2s; done # warm connections and caches

run_wait_ns() { # pid…: the threads' total time runnable but not running, SQLite's threads left out
  local pid task total=0
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*; do
      case "$(cat "$task/comm" 2>/dev/null)" in sqlx-sqlite-wor* | omi-idle-lane*) continue ;; esac
      total=$((total + $(awk '{print $2}' "$task/schedstat" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}

rounds="$out/tail_rounds.txt"
: >"$rounds"
for r in $(seq "$ROUNDS"); do
  for name in "${names[@]}"; do
    # shellcheck disable=SC2086 # the direct path has no gateway: the mock alone
    watched="$mock_pid ${GATEWAY_PID[$name]:-}"
    wait0=$(run_wait_ns $watched)
    c1 "$name" "$out/tail_${name}_r$r.txt" -d"${DURATION}s"
    wait1=$(run_wait_ns $watched)
    n=$(requests "tail_${name}_r$r")
    printf "%s %s %s %s %s\n" "$r" "$name" "$(to_us "$(pct "tail_${name}_r$r" 50)")" \
      "$(to_us "$(pct "tail_${name}_r$r" 99)")" "$(awk -v w=$((wait1 - wait0)) -v n="$n" 'BEGIN {printf "%.2f", w / n / 1000}')" >>"$rounds"
  done
done

# Per round: added = gateway - direct; then the median over rounds of each column.
printf "\nc=1, %s rounds of %ss, medians (us); added = minus the direct path in the same round\n" "$ROUNDS" "$DURATION"
printf "%-12s %8s %8s %10s %10s %14s %8s\n" gateway p50 p99 added_p50 added_p99 added_p99/p50 wait
for name in "${names[@]}"; do
  col() { awk -v n="$name" -v c="$1" '$2 == n {print $c}' "$rounds" | median 1; }
  added() { # column
    awk -v n="$name" -v c="$1" '$2 == "direct" {d[$1] = $c} $2 == n {print $c - d[$1]}' "$rounds" | median 1
  }
  ratio=$(awk -v n="$name" '$2 == "direct" {d50[$1] = $3; d99[$1] = $4}
    $2 == n && $3 > d50[$1] {print ($4 - d99[$1]) / ($3 - d50[$1])}' "$rounds" | median 2)
  if [ "$name" = direct ]; then
    printf "%-12s %8s %8s %10s %10s %14s %8s\n" "$name" "$(col 3)" "$(col 4)" "" "" "" "$(col 5)"
  else
    printf "%-12s %8s %8s %10s %10s %14s %8s\n" "$name" "$(col 3)" "$(col 4)" "$(added 3)" "$(added 4)" "$ratio" "$(col 5)"
  fi
done
printf "(rounds: %s)\n" "$rounds"
