#!/usr/bin/env bash
# Instructions per request, counted by callgrind: a measure of omi's own work that the shared
# machine's noise cannot move (throughput here swings by 20% between runs minutes apart; an
# instruction count is the same twice). Each variant runs under valgrind behind the mock
# upstream; after WARMUP requests its counters are zeroed, REQUESTS more are sent with hey
# (c=4), and the count is read back. Counts are not times (a cache miss is one instruction),
# so use this to compare settings and changes, and the wrk benchmarks for speed.
#   bench/instructions.sh               # the bare axum proxy (the stack's floor) vs omi
#   PRESET=guards bench/instructions.sh # bench/sentinel.sh's prompt / on variants and request
#   ENDPOINT=/v1/embeddings BODY=file bench/instructions.sh   # another endpoint (default chat)
#   HEADER='anthropic-version: 2023-06-01' ENDPOINT=/v1/messages …  # one more request header
#   VARIANTS='a|VAR=x
#   b|VAR=y' BODY=bench/post.json bench/instructions.sh
# VARIANTS: one `name|VAR=value …` per line, the first is the base; a name starting with `bare`
# runs examples/bare_proxy.rs instead of omi (`bare_reqwest|BARE_CLIENT=reqwest`: with reqwest);
# `OMI_BUILD=dir` runs that directory's omi (a kept build, bench/README.md) instead of BIN_DIR's.
# `$SYSTEM_PROMPT` in a setting is the file of
# bench/system_prompt.py. KEEP=dir keeps each variant's callgrind file there (dir/name.callgrind,
# for callgrind_annotate).
set -euo pipefail
MOCK_PORT=18041
# Read before common.sh, which declares its own VARIANTS array for compare_variants.
requested_variants="${VARIANTS:-}"
source "$(dirname "$0")/common.sh"
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
WARMUP="${WARMUP:-300}"
REQUESTS="${REQUESTS:-2000}"
SYSTEM_PROMPT="$work/system_prompt.txt"
python3 bench/system_prompt.py "$SYSTEM_PROMPT" 2>/dev/null
printf 'shield_answers = false\n' >"$work/off.toml"
if [ "${PRESET:-}" = guards ]; then
  BODY=bench/sentinel.json
  requested_variants="prompt|OMI_CONFIG=$work/off.toml SENTINEL_MODE=off OMI_SYSTEM_PROMPT_FILE=$SYSTEM_PROMPT
on|SENTINEL_MODE=rules SENTINEL_BLOCK=0.9 OMI_SYSTEM_PROMPT_FILE=$SYSTEM_PROMPT"
fi
BODY="${BODY:-bench/post.json}"
requested_variants="${requested_variants:-bare|
omi|}"
export OMI_RATE_LIMIT_PER_MINUTE=0

send() { # port requests
  hey -n "$2" -c 4 -m POST -T application/json -H "Authorization: Bearer $key" ${HEADER:+-H "$HEADER"} -D "$BODY" \
    "http://127.0.0.1:$1${ENDPOINT:-/v1/chat/completions}" >"$work/hey.txt"
  grep -q "\[200\].*$2 responses" "$work/hey.txt" || { echo "not all $2 requests were answered 200:" >&2; cat "$work/hey.txt" >&2; exit 1; }
}

port=18042
declare -A COUNT
names=()
while IFS='|' read -r name settings; do
  [ -n "$name" ] || continue
  settings=${settings//\$SYSTEM_PROMPT/$SYSTEM_PROMPT}
  build=$bin
  if [[ " $settings " =~ \ OMI_BUILD=([^ ]+)\  ]]; then
    build=${BASH_REMATCH[1]}
    settings=${settings//OMI_BUILD=$build/}
  fi
  names+=("$name")
  out_file="$work/$name.callgrind"
  key=$(DATABASE_URL="sqlite://$work/$name.db" "$build/omi" keys create --email bench@example.com)
  if [[ "$name" == bare* ]]; then
    # shellcheck disable=SC2086 # settings is a list of VAR=value words
    env $settings valgrind --tool=callgrind --callgrind-out-file="$out_file" \
      "$bin/examples/bare_proxy" "127.0.0.1:$port" "http://127.0.0.1:$MOCK_PORT" >"$work/$name.log" 2>&1 &
  else
    # shellcheck disable=SC2086 # settings is a list of VAR=value words
    env DATABASE_URL="sqlite://$work/$name.db" OMI_LISTEN="127.0.0.1:$port" $settings \
      valgrind --tool=callgrind --callgrind-out-file="$out_file" "$build/omi" serve >"$work/$name.log" 2>&1 &
  fi
  pid=$!; pids+=($pid)
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/")" != 000 ] && break; sleep 0.2
  done
  send $port "$WARMUP"
  callgrind_control -z $pid >/dev/null 2>&1
  send $port "$REQUESTS"
  callgrind_control -d $pid >/dev/null 2>&1
  for _ in $(seq 50); do [ -s "$out_file.1" ] && break; sleep 0.2; done
  COUNT[$name]=$(awk -v n="$REQUESTS" '/^summary:/ {printf "%.0f", $2 / n}' "$out_file.1")
  [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP" && cp "$out_file.1" "$KEEP/$name.callgrind"; }
  kill $pid; wait $pid 2>/dev/null || true
  port=$((port + 1))
done <<<"$requested_variants"

{
  echo "== instructions per request (callgrind, $REQUESTS requests after $WARMUP, body $BODY, $(date -u +%FT%TZ)) =="
  base=${names[0]}
  for name in "${names[@]}"; do
    printf "%-10s %10s   vs %s %+8d (%+.1f%%)\n" "$name" "${COUNT[$name]}" "$base" $((COUNT[$name] - COUNT[$base])) \
      "$(awk -v a="${COUNT[$name]}" -v b="${COUNT[$base]}" 'BEGIN {print (a - b) / b * 100}')"
  done
} | tee "$out/instructions.txt"
