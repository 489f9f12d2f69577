#!/usr/bin/env bash
# omi against crabllm, another Rust LLM gateway (issue 18: keep a lead over it on every endpoint).
# Builds release binaries, starts the mock upstream, omi (SQLite, key auth on, as in gateway.sh)
# and crabllm (its own config in the scratch directory: the same mock as an OpenAI and an
# Anthropic provider, one virtual key, no extensions), and compares them side by side under wrk,
# alternating round by round (compare_variants in common.sh), on every endpoint both serve:
# chat completions streamed and not, embeddings, Anthropic's /v1/messages streamed and not.
# Per endpoint: throughput at c=50, p50/p99 at c=1, CPU time per request, the ratios omi/crabllm;
# then each gateway's peak RSS (VmHWM). The bare floor runs in the same rounds: its lead over
# crabllm bounds what any gateway on omi's stack could reach on this machine. A bench, not a
# test: CI does not run it.
#   CRABLLM=/path/to/crabllm bench/crabllm.sh   # default: crabllm on PATH
#   DURATION=5 ROUNDS=3 bench/crabllm.sh        # about 9 minutes after the build
#   BIN_DIR=/tmp/before bench/crabllm.sh        # a kept omi build (bench/README.md)
#   ONLY=messages bench/crabllm.sh              # the endpoints whose title matches
# Embeddings at the mock's 8 dimensions only: crabllm 0.0.25 drops `dimensions` from the request
# (asked for 1,536, its client gets 8), so at a real vector size the two do not do the same work.
set -euo pipefail
MOCK_PORT=18051
OMI_PORT=18052
CRABLLM_PORT=18053
BARE_PORT=18054
CRABLLM="${CRABLLM:-$(command -v crabllm || true)}"
if [ -z "$CRABLLM" ] || [ ! -x "$CRABLLM" ]; then
  echo "crabllm not found (CRABLLM=path, or on PATH). Install it with:" >&2
  echo "  cargo install crabllm --version 0.0.25 --root DIR   # then CRABLLM=DIR/bin/crabllm $0" >&2
  exit 1
fi
CRABLLM=$(realpath "$CRABLLM") # common.sh moves to the repository's root
source "$(dirname "$0")/common.sh"

# One client sends everything: omi's per-IP limit is off (crabllm has none without extensions).
export OMI_RATE_LIMIT_PER_MINUTE=0 ANTHROPIC_API_KEY="sk-ant-bench-house-key"
cat >"$work/omi.toml" <<TOML
[[providers]]
name = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
api_key_env = "OPENAI_API_KEY"
catch_all = true

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
api_key_env = "ANTHROPIC_API_KEY"
models = ["claude-haiku-4-5"]
TOML
start_variant omi $OMI_PORT OMI_CONFIG="$work/omi.toml"

KEY[crabllm]="sk-crabllm-bench-$RANDOM$RANDOM"
cat >"$work/crabllm.toml" <<TOML
listen = "127.0.0.1:$CRABLLM_PORT"

[[keys]]
name = "bench"
key = "${KEY[crabllm]}"
models = ["*"]

[providers.openai]
kind = "openai"
api_key = "$OPENAI_API_KEY"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
models = ["gpt-4o-mini", "text-embedding-3-small"]

[providers.anthropic]
kind = "anthropic"
api_key = "$ANTHROPIC_API_KEY"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
models = ["claude-haiku-4-5"]
TOML
# RUST_LOG=warn (common.sh) keeps crabllm's per-request log lines off, as omi's.
"$CRABLLM" serve --config "$work/crabllm.toml" >"$work/crabllm.log" 2>&1 &
pids+=($!); PID[crabllm]=$!; PORT[crabllm]=$CRABLLM_PORT; VARIANTS+=(crabllm)
for _ in $(seq 100); do curl -sf "127.0.0.1:$CRABLLM_PORT/health" >/dev/null && break; sleep 0.1; done
# The bare floor in the same rounds: its lead over crabllm is the most any gateway on this stack
# could have on this machine.
start_bare "$BARE_PORT"
PID[bare]=$bare_pid; PORT[bare]=$BARE_PORT; KEY[bare]=unused; VARIANTS+=(bare)
wait_healthy "$BARE_PORT"

# The endpoints: title, path, body, streamed, the anthropic-version header (as Anthropic's SDKs send it).
ENDPOINTS=(
  "chat completions|/v1/chat/completions|bench/post.json|0|"
  "chat completions streamed|/v1/chat/completions|bench/post.json|1|"
  "embeddings|/v1/embeddings|bench/embeddings.json|0|"
  "anthropic messages|/v1/messages|bench/messages.json|0|2023-06-01"
  "anthropic messages streamed|/v1/messages|bench/messages.json|1|2023-06-01"
)
# ONLY=regex keeps the endpoints whose title matches.
if [ -n "${ONLY:-}" ]; then
  kept=(); for e in "${ENDPOINTS[@]}"; do [[ "${e%%|*}" =~ $ONLY ]] && kept+=("$e"); done; ENDPOINTS=("${kept[@]}")
fi
# Every variant answers each one as meant before anything is measured: 200, and a stream that ends.
for e in "${ENDPOINTS[@]}"; do
  IFS='|' read -r title path body stream version <<<"$e"
  data=$(cat "$body"); [ "$stream" = 1 ] && data="{\"stream\":true,${data#\{}"
  for v in "${VARIANTS[@]}"; do
    answer=$(curl -s -w '\n%{http_code}' -H "Authorization: Bearer ${KEY[$v]}" -H 'Content-Type: application/json' \
      ${version:+-H "anthropic-version: $version"} \
      -d "$data" "127.0.0.1:${PORT[$v]}$path")
    if [ "$(tail -n1 <<<"$answer")" != 200 ] ||
      { [ "$stream" = 1 ] && ! grep -q -e 'data: \[DONE\]' -e 'message_stop' <<<"$answer"; }; then
      echo "$v does not serve $title:" >&2; echo "$answer" >&2; tail -5 "$work/$v.log" >&2; exit 1
    fi
  done
done

hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
# A variant's over crabllm's (omi's by default), round by round (they run back to back), then the median.
round_ratio() { # title column [variant]
  awk -v c="$(column_of "$2")" -v v="${3:-omi}" '$2 == v {o[$1] = $c} $2 == "crabllm" {k[$1] = $c}
    END {for (r in o) if (r in k) printf "%.3f\n", o[r] / k[r]}' "$out/$(tag_of "$1")_rounds.txt" | median 2
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); crabllm: $CRABLLM" | tee "$out/crabllm_summary.txt"
rows=()
for e in "${ENDPOINTS[@]}"; do
  IFS='|' read -r title path body stream version <<<"$e"
  title="omi vs crabllm: $title"
  WRK_PATH=$path compare_variants "$title" bench/post.lua BENCH_BODY="$body" STREAM="$stream" ANTHROPIC_VERSION="$version" |
    tee -a "$out/crabllm_summary.txt"
  row="${title#omi vs crabllm: }"
  for col in rps p50_us p99_us cpu_us; do
    o=$(variant_median "$title" omi "$col"); k=$(variant_median "$title" crabllm "$col")
    row+="|$o|$k|$(ratio "$o" "$k") ($(round_ratio "$title" "$col"))"
  done
  b=$(variant_median "$title" bare rps); k=$(variant_median "$title" crabllm rps)
  rows+=("$row|$(hwm "${PID[omi]}")|$(hwm "${PID[crabllm]}")|$b|$(ratio "$b" "$k") ($(round_ratio "$title" rps bare))")
done
{
  echo "== omi vs crabllm ($(date -u +%FT%TZ), $(nproc) cores, wrk, ${DURATION}s per run, medians of $ROUNDS alternating rounds) =="
  echo "(in the tables above, \"omi CPU\" is each gateway's own CPU time per request)"
  echo "ratios are omi/crabllm: of the medians (the median of the rounds' own ratios)"
  printf "%-28s %8s %8s %13s | %6s %6s %13s | %6s %6s %13s | %6s %6s %13s | %9s %14s | %s\n" endpoint "omi rps" "crab rps" "rps ratio" \
    "omi p50" "crab" "p50 ratio" "omi p99" "crab" "p99 ratio" "omi CPU" "crab" "CPU ratio" "bare rps" "bare/crab rps" \
    "peak RSS MiB so far omi/crabllm"
  for row in "${rows[@]}"; do
    IFS='|' read -r name o1 k1 r1 o2 k2 r2 o3 k3 r3 o4 k4 r4 ho hk b1 br <<<"$row"
    printf "%-28s %8s %8s %13s | %6s %6s %13s | %6s %6s %13s | %6s %6s %13s | %9s %14s | %s / %s\n" "$name" "$o1" "$k1" "$r1" \
      "$o2" "$k2" "$r2" "$o3" "$k3" "$r3" "$o4" "$k4" "$r4" "$b1" "$br" "$ho" "$hk"
  done
  echo "latencies at c=1 in us, CPU in us per request at c=50; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee -a "$out/crabllm_summary.txt"
