#!/usr/bin/env bash
# Cost of a failed first attempt (issue 19). Builds release binaries, starts the mock upstream
# and three `omi serve` instances that differ only in where gpt-4o-mini goes first:
#   direct   gpt-4o-mini is served by the mock: one call.
#   refused  gpt-4o-mini is first served by a provider on a closed loopback port (every
#            connection refused, circuits off): each request pays the refusal, then falls back
#            to the mock (`[fallbacks]`): two calls.
#   circuit  the same, with that provider's circuit open (circuit_failures = 1, opened by the
#            warm-up, a day's cooldown): each request skips it without a call, then the mock.
# Measured side by side in one run, alternating round by round (compare_variants in common.sh):
# p50/p99 at c=1, whose difference to `direct` is the added latency (targets: under 2 ms for a
# refused connection, under 0.1 ms for an open circuit), and throughput and omi's CPU per
# request at c=50.
#   bench/fallback.sh                  # full run (about 2 minutes after the build)
#   DURATION=5 ROUNDS=5 bench/fallback.sh
set -euo pipefail
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-5}"
MOCK_PORT=18021
REFUSING_PORT=18029
source "$(dirname "$0")/common.sh"
if (echo >"/dev/tcp/127.0.0.1/$REFUSING_PORT") 2>/dev/null; then
  echo "port $REFUSING_PORT is in use: it must refuse connections" >&2; exit 1
fi

# One client sends everything: the per-IP limit is off.
export OMI_RATE_LIMIT_PER_MINUTE=0
# gpt-4o-mini on `first_model_at` URL, with the mock as its fallback `backup/gpt-4o-mini`.
config() { # first_model_url
  cat <<TOML
[[providers]]
name = "first"
base_url = "$1"
api_key_env = "OPENAI_API_KEY"
models = ["gpt-4o-mini"]

[[providers]]
name = "backup"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"
api_key_env = "OPENAI_API_KEY"

[fallbacks]
"gpt-4o-mini" = ["backup/gpt-4o-mini"]
TOML
}
config "http://127.0.0.1:$MOCK_PORT/v1" >"$work/direct.toml"
config "http://127.0.0.1:$REFUSING_PORT/v1" >"$work/refusing.toml"
start_variant direct 18022 OMI_CONFIG="$work/direct.toml"
start_variant refused 18023 OMI_CONFIG="$work/refusing.toml" OMI_CIRCUIT_FAILURES=0
start_variant circuit 18024 OMI_CONFIG="$work/refusing.toml" OMI_CIRCUIT_FAILURES=1 OMI_CIRCUIT_COOLDOWN_SECS=86400

# Each variant answers as described (and the first request opens the circuit's).
expect() { # variant upstream attempts
  local headers; headers=$(curl -s -o /dev/null -D - -H "Authorization: Bearer ${KEY[$1]}" -H 'Content-Type: application/json' \
    -d @bench/post.json "127.0.0.1:${PORT[$1]}/v1/chat/completions" | tr -d '\r' | tr 'A-Z' 'a-z')
  if ! grep -qx "x-omi-upstream: $2" <<<"$headers" || ! grep -qx "x-omi-attempts: $3" <<<"$headers"; then
    echo "$1 does not answer from $2 after $3 attempts:" >&2; echo "$headers" >&2; cat "$work/$1.log" >&2; exit 1
  fi
}
expect direct first/gpt-4o-mini 1
expect refused backup/gpt-4o-mini 2
expect circuit backup/gpt-4o-mini 2 # this failure opens the circuit
expect circuit backup/gpt-4o-mini 1
curl -s "127.0.0.1:${PORT[circuit]}/metrics" | grep -q '^omi_upstream_circuit_open{provider="first"} 1' ||
  { echo "the circuit of the refusing provider did not open" >&2; exit 1; }

title="OMI fallback benchmark: first candidate answers, refuses connections, has an open circuit"
{
  compare_variants "$title" bench/post.lua
  direct50=$(variant_median "$title" direct p50_us); direct99=$(variant_median "$title" direct p99_us)
  for v in refused circuit; do
    printf "%-8s added at c=1: p50 %s us, p99 %s us (medians of the rounds' own differences: p50 %s us, p99 %s us)\n" "$v" \
      "$(awk -v a="$(variant_median "$title" "$v" p50_us)" -v b="$direct50" 'BEGIN {printf "%.0f", a - b}')" \
      "$(awk -v a="$(variant_median "$title" "$v" p99_us)" -v b="$direct99" 'BEGIN {printf "%.0f", a - b}')" \
      "$(paired_differences "$(tag_of "$title")" direct "$v" p50_us | median 0)" \
      "$(paired_differences "$(tag_of "$title")" direct "$v" p99_us | median 0)"
  done
  echo "targets: refused connection under 2000 us added, open circuit under 100 us added (p50)"
} | tee "$out/fallback_summary.txt"
