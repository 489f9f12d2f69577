#!/usr/bin/env bash
# Gateway overhead benchmark (issue: foundation). Builds release binaries, starts the mock
# upstream and `omi serve` (SQLite, key auth on), and measures side by side in one run:
# the mock directly vs. the mock through omi: wrk at saturation (c=50) and at c=1, hey at a
# fixed rate (RATE, default 1,000 requests/s). Results go to stdout and bench/out/.
# Floors, measured in the same run: `examples/bare_proxy.rs` (axum + omi's upstream client
# forwarding with no logic: what omi's stack alone adds) and, when `nginx` is installed, nginx as a reverse proxy.
# RSS of omi and the bare floor under c=50, non-streamed and streamed (bench/README.md).
#   bench/gateway.sh            # full run (about 2 minutes after the build)
#   BIN_DIR=/tmp/before bench/gateway.sh # a kept build (bench/README.md)
#   DURATION=5 bench/gateway.sh # shorter
set -euo pipefail
MOCK_PORT=18001
OMI_PORT=18002
BARE_PORT=18003
NGINX_PORT=18004
source "$(dirname "$0")/common.sh"

# One client sends everything: the per-IP limit is off here (bench/firewall.sh measures it).
export DATABASE_URL="sqlite://$work/omi.db" OMI_LISTEN="127.0.0.1:$OMI_PORT" OMI_RATE_LIMIT_PER_MINUTE=0
OMI_BENCH_KEY=$("$bin/omi" keys create --email bench@example.com)
export OMI_BENCH_KEY
"$bin/omi" serve >"$work/omi.log" 2>&1 & omi_pid=$!; pids+=($omi_pid)
wait_healthy $OMI_PORT
start_bare "$BARE_PORT"
floors=(bare)
if command -v nginx >/dev/null; then
  mkdir -p "$work/nginx"
  cat >"$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  upstream mock { server 127.0.0.1:$MOCK_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / { proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
  nginx -c "$work/nginx.conf" -e "$work/nginx/error.log" & pids+=($!)
  floors+=(nginx)
fi
declare -A FLOOR_PORT=([bare]=$BARE_PORT [nginx]=$NGINX_PORT)
for _ in $(seq 50); do curl -s -o /dev/null "127.0.0.1:$BARE_PORT/" && break; sleep 0.1; done

rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
threads() { awk '/Threads/ {print $2}' "/proc/$1/status"; }
idle_rss=$(rss $omi_pid)
bare_idle_rss=$(rss $bare_pid)

run() { # name url connections [environment VAR=value…]
  local name=$1 url=$2 c=$3; shift 3
  env "$@" wrk -t"$([ "$c" -gt 1 ] && echo 2 || echo 1)" -c"$c" -d"${DURATION}s" --latency -s bench/post.lua \
    "$url/v1/chat/completions" >"$out/$name.txt"
}
# A c=50 run against a gateway, with its RSS halfway through and its peak (VmHWM) after.
loaded_run() { # name url pid [environment VAR=value…]
  local name=$1 url=$2 pid=$3; shift 3
  run "$name" "$url" 50 "$@" & local load=$!
  sleep $((DURATION / 2)); echo "$(rss "$pid") $(threads "$pid")" >"$work/$name.rss"; wait $load
  echo "$(hwm "$pid")" >>"$work/$name.rss"
}

# Warm both paths, then measure each side right after the other.
for f in "${floors[@]}"; do wrk -t1 -c4 -d2s -s bench/post.lua "http://127.0.0.1:${FLOOR_PORT[$f]}/v1/chat/completions" >/dev/null; done
wrk -t1 -c4 -d2s -s bench/post.lua "http://127.0.0.1:$OMI_PORT/v1/chat/completions" >/dev/null
# The gateway's own overhead (its histogram: total minus upstream time) during the c=1 run,
# as the bucket bound that holds the 50th and 99th percentiles.
overhead_buckets() {
  curl -s "127.0.0.1:$OMI_PORT/metrics" | awk -F'[{}" ]+' '/^omi_gateway_overhead_seconds_bucket/ && /route="chat"/ {
    for (i = 1; i <= NF; i++) if ($i ~ /le=$/) print $(i + 1), $NF }'
}
overhead_pct() { # before after percentile
  paste -d' ' <(echo "$1") <(echo "$2") | awk -v p="$3" '{le[NR] = $1; n[NR] = $4 - $2} END {
    total = n[NR]; for (i = 1; i <= NR; i++) if (n[i] >= total * p / 100) { printf "%.0f", le[i] * 1000000; exit } }'
}
run direct_c1 "http://127.0.0.1:$MOCK_PORT" 1
before_c1=$(overhead_buckets)
run omi_c1 "http://127.0.0.1:$OMI_PORT" 1
after_c1=$(overhead_buckets)
for f in "${floors[@]}"; do run "${f}_c1" "http://127.0.0.1:${FLOOR_PORT[$f]}" 1; done
run direct_c50 "http://127.0.0.1:$MOCK_PORT" 50
if [[ " ${floors[*]} " == *" nginx "* ]]; then run nginx_c50 "http://127.0.0.1:$NGINX_PORT" 50; fi
# RSS under c=50, non-streamed then streamed, omi and the bare floor alike: the peak after the
# streamed run is the peak of both.
loaded_run bare_c50 "http://127.0.0.1:$BARE_PORT" "$bare_pid"
loaded_run omi_c50 "http://127.0.0.1:$OMI_PORT" "$omi_pid"
loaded_run bare_stream_c50 "http://127.0.0.1:$BARE_PORT" "$bare_pid" STREAM=1
loaded_run omi_stream_c50 "http://127.0.0.1:$OMI_PORT" "$omi_pid" STREAM=1
for f in omi_c50 omi_stream_c50 bare_stream_c50; do
  if grep -q Non-2xx "$out/$f.txt"; then echo "$f: non-2xx responses (see $out/$f.txt)" >&2; exit 1; fi
done
rss_line() { # idle name name_stream
  read -r load threads peak < <(tr '\n' ' ' <"$work/$2.rss")
  read -r sload sthreads speak < <(tr '\n' ' ' <"$work/$3.rss")
  echo "idle $1 MiB; c=50 $load MiB ($threads threads), peak $peak MiB; streamed c=50 $sload MiB, peak $speak MiB"
}

# Fixed rate (hey: RATE requests/s from 2 workers, each throttled to half), p50/p99 each way. hey's
# workers tick in step, so with 10 workers every tick sent a burst of 10 at once and the run measured
# queueing behind the burst; 2 workers keep the rate with bursts of at most 2.
RATE="${RATE:-1000}"
fixed_rate() { # name url
  hey -z "${DURATION}s" -c 2 -q $((RATE / 2)) -m POST -T application/json -H "Authorization: Bearer $OMI_BENCH_KEY" \
    -D bench/post.json \
    "$2/v1/chat/completions" >"$out/$1.txt"
}
hey_pct() { awk -v p="$2%" '$1==p && $2=="in" {printf "%.0f", $3 * 1000000}' "$out/$1.txt"; }
fixed_rate direct_rate "http://127.0.0.1:$MOCK_PORT"
fixed_rate omi_rate "http://127.0.0.1:$OMI_PORT"

# Streaming time to first byte, 50 sequential requests each way.
ttfb() {
  local total=0
  for _ in $(seq 50); do
    t=$(curl -s -o /dev/null -w '%{time_starttransfer}' -H "Authorization: Bearer $OMI_BENCH_KEY" -H 'Content-Type: application/json' \
      -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}' "$1/v1/chat/completions")
    total=$(awk -v a="$total" -v b="$t" 'BEGIN {print a + b}')
  done
  awk -v t="$total" 'BEGIN {printf "%.0f", t / 50 * 1000000}'
}
ttfb_direct=$(ttfb "http://127.0.0.1:$MOCK_PORT")
ttfb_omi=$(ttfb "http://127.0.0.1:$OMI_PORT")

d50=$(to_us "$(pct direct_c1 50)"); o50=$(to_us "$(pct omi_c1 50)")
d99=$(to_us "$(pct direct_c1 99)"); o99=$(to_us "$(pct omi_c1 99)")
{
  echo "== OMI gateway benchmark ($(date -u +%FT%TZ), $(nproc) cores, wrk, ${DURATION}s per run) =="
  printf "throughput c=50      direct %8s req/s   through omi %8s req/s   ratio %s\n" "$(rps direct_c50)" "$(rps omi_c50)" \
    "$(awk -v a="$(rps omi_c50)" -v b="$(rps direct_c50)" 'BEGIN {printf "%.2f", a/b}')"
  printf "latency c=1 p50      direct %8s us      through omi %8s us      added %s us\n" "$d50" "$o50" "$(awk -v a="$o50" -v b="$d50" 'BEGIN {printf "%.0f", a-b}')"
  printf "latency c=1 p99      direct %8s us      through omi %8s us      added %s us\n" "$d99" "$o99" "$(awk -v a="$o99" -v b="$d99" 'BEGIN {printf "%.0f", a-b}')"
  printf "c=1 in-process overhead (omi_gateway_overhead_seconds): p50 <= %s us, p99 <= %s us;\n" \
    "$(overhead_pct "$before_c1" "$after_c1" 50)" "$(overhead_pct "$before_c1" "$after_c1" 99)"
  printf "  the rest of the added latency is the two extra loopback hops (direct p50 is one round trip: two)\n"
  for f in "${floors[@]}"; do
    f50=$(to_us "$(pct "${f}_c1" 50)"); f99=$(to_us "$(pct "${f}_c1" 99)")
    printf "floor: %-5s        c=50 %8s req/s     c=1 added p50 %s us, p99 %s us\n" "$f" "$(rps "${f}_c50")" \
      "$(awk -v a="$f50" -v b="$d50" 'BEGIN {printf "%.0f", a-b}')" "$(awk -v a="$f99" -v b="$d99" 'BEGIN {printf "%.0f", a-b}')"
  done
  printf "  (bare: axum + omi's upstream client (hyper-util) forwarding, no logic, examples/bare_proxy.rs; nginx: 1 worker, keep-alive upstream)\n"
  for p in 50 99; do
    printf "fixed %s/s p%s     direct %8s us      through omi %8s us      added %s us\n" "$RATE" "$p" "$(hey_pct direct_rate $p)" \
      "$(hey_pct omi_rate $p)" "$(($(hey_pct omi_rate $p) - $(hey_pct direct_rate $p)))"
  done
  printf "stream TTFB (mean)   direct %8s us      through omi %8s us      added %s us\n" "$ttfb_direct" "$ttfb_omi" "$((ttfb_omi - ttfb_direct))"
  b50=$(to_us "$(pct bare_c1 50)"); b99=$(to_us "$(pct bare_c1 99)")
  printf "c=1 targets          omi added p50 over the bare floor's: %s us; added p99/p50: omi %s, bare %s\n" \
    "$(awk -v o="$o50" -v b="$b50" 'BEGIN {printf "%.0f", o-b}')" \
    "$(awk -v p99="$o99" -v p50="$o50" -v d99="$d99" -v d50="$d50" 'BEGIN {printf "%.1f", (p99-d99)/(p50-d50)}')" \
    "$(awk -v p99="$b99" -v p50="$b50" -v d99="$d99" -v d50="$d50" 'BEGIN {printf "%.1f", (p99-d99)/(p50-d50)}')"
  printf "throughput c=50 streamed: bare %s req/s, omi %s req/s\n" "$(rps bare_stream_c50)" "$(rps omi_stream_c50)"
  printf "omi RSS              %s\n" "$(rss_line "$idle_rss" omi_c50 omi_stream_c50)"
  printf "bare RSS             %s\n" "$(rss_line "$bare_idle_rss" bare_c50 bare_stream_c50)"
  echo "gateway overhead histogram: omi_gateway_overhead_seconds at /metrics"
} | tee "$out/summary.txt"
