# Sourced by the benchmarks: release binaries, wrk, a scratch directory, the mock upstream on
# $MOCK_PORT, and helpers to read wrk's output. Processes appended to `pids` are stopped on exit.
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
out=bench/out; mkdir -p "$out"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --bins --quiet
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=(); trap cleanup EXIT

"$bin/mock-upstream" --port "$MOCK_PORT" --chunks 3 >"$work/mock.log" 2>&1 & pids+=($!)
export OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1" OPENAI_API_KEY="sk-bench-house-key" RUST_LOG=warn

wait_healthy() { for _ in $(seq 100); do curl -sf "127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done; }
rps() { awk '/Requests\/sec/ {print $2}' "$out/$1.txt"; }
pct() { awk -v p="$2%" '$1==p {print $2}' "$out/$1.txt"; }
to_us() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s/,"",v); print v*1000000} }'; }
