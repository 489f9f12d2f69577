# Sourced by the benchmarks: release binaries (the bare floor, examples/bare_proxy.rs, too), wrk,
# a scratch directory, the mock upstream on $MOCK_PORT, and helpers to read wrk's output.
# Processes appended to `pids` are stopped on exit.
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
out=bench/out; mkdir -p "$out"
for tool in wrk hey; do
  command -v $tool >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $tool; }
done
# BIN_DIR=dir runs the binaries kept there (omi, mock-upstream, examples/bare_proxy: a copy of
# target/release) instead of building: a build kept from before a change, measured while the
# sources move on.
if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR
else
  cargo build --release --bins --example bare_proxy --quiet
  bin="${CARGO_TARGET_DIR:-target}/release"
fi

work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=(); trap cleanup EXIT

"$bin/mock-upstream" --port "$MOCK_PORT" --chunks 3 >"$work/mock.log" 2>&1 & mock_pid=$!; pids+=($mock_pid)
export OPENAI_BASE_URL="http://127.0.0.1:$MOCK_PORT/v1" OPENAI_API_KEY="sk-bench-house-key" RUST_LOG=warn

# The bare floor (examples/bare_proxy.rs: axum + omi's upstream client, no logic) on PORT in
# front of the mock; its pid in `bare_pid`.
start_bare() { # port
  "$bin/examples/bare_proxy" "127.0.0.1:$1" "http://127.0.0.1:$MOCK_PORT" >"$work/bare.log" 2>&1 &
  bare_pid=$!; pids+=($bare_pid)
}
wait_healthy() { for _ in $(seq 100); do curl -sf "127.0.0.1:$1/healthz" >/dev/null && return; sleep 0.1; done; }
rps() { awk '/Requests\/sec/ {print $2}' "$out/$1.txt"; }
pct() { awk -v p="$2%" '$1==p {print $2}' "$out/$1.txt"; }
to_us() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) {sub(/us/,"",v); print v} else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else {sub(/s/,"",v); print v*1000000} }'; }

# CPU time (user + system, in clock ticks) a process has used: throughput on a machine shared
# with other work is noisy, CPU time per request is not.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick_us=$((1000000 / $(getconf CLK_TCK)))
requests() { awk '/requests in/ {print $1}' "$out/$1.txt"; }
median() { # [decimals]
  sort -n | awk -v d="${1:-0}" '{v[NR]=$1} END {printf "%." d "f", NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'
}
change() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f", (a-b)/b*100}'; }

# Gateways that differ in one setting, measured side by side: `start_variant NAME PORT [VAR=value…]`
# starts one (its own SQLite database and key: writers sharing a file would measure lock
# contention), `compare_variants TITLE LUA [VAR=value…]` alternates them round by round, so
# that machine noise hits all alike, and prints the medians of ROUNDS rounds against the first
# variant. `variant_median TITLE VARIANT COLUMN` reads one median back.
declare -A PORT PID KEY
VARIANTS=()
# A setting `OMI_BUILD=dir` runs that kept build's omi (bench/README.md) instead of this one.
start_variant() {
  local name=$1 port=$2 build=$bin settings=() setting; shift 2
  for setting in "$@"; do
    case $setting in OMI_BUILD=*) build=${setting#OMI_BUILD=} ;; *) settings+=("$setting") ;; esac
  done
  KEY[$name]=$(DATABASE_URL="sqlite://$work/$name.db" "$build/omi" keys create --email bench@example.com)
  env DATABASE_URL="sqlite://$work/$name.db" OMI_LISTEN="127.0.0.1:$port" "${settings[@]}" "$build/omi" serve >"$work/$name.log" 2>&1 &
  pids+=($!); PID[$name]=$!; PORT[$name]=$port; VARIANTS+=("$name")
  wait_healthy "$port"
}
ROUND_COLUMNS=(round variant rps cpu_us mock_cpu_us p50_us p99_us cpu_per_mock)
tag_of() { echo "$1" | tr "A-Z" "a-z" | tr -c "a-z0-9\n" "_"; }
column_of() { local col; for col in "${!ROUND_COLUMNS[@]}"; do [ "${ROUND_COLUMNS[$col]}" = "$1" ] && break; done; echo $((col + 1)); }
variant_median() { # title variant column [decimals]
  awk -v v="$2" -v c="$(column_of "$3")" '$2 == v {print $c}' "$out/$(tag_of "$1")_rounds.txt" | median "${4:-1}"
}
# WRK_PATH=/v1/embeddings compare_variants … sends the requests to another endpoint.
compare_variants() { # title lua [wrk environment VAR=value…]
  local title=$1 lua=$2; shift 2
  local tag v r; tag=$(tag_of "$title")
  wrk_at() { # variant connections output [wrk options…]
    local v=$1 c=$2 file=$3; shift 3
    env OMI_BENCH_KEY="${KEY[$v]}" "${wrk_env[@]}" wrk -t"$([ "$c" -gt 1 ] && echo 2 || echo 1)" -c"$c" "$@" -s "$lua" \
      "http://127.0.0.1:${PORT[$v]}${WRK_PATH:-/v1/chat/completions}" >"$file"
  }
  local wrk_env=("$@")
  for v in "${VARIANTS[@]}"; do wrk_at "$v" 4 /dev/null -d2s; done # warm connections and caches
  : >"$out/${tag}_rounds.txt"
  for r in $(seq "$ROUNDS"); do
    for v in "${VARIANTS[@]}"; do
      local name="${tag}_${v}_r$r" omi0 mock0 n
      omi0=$(cpu_ticks "${PID[$v]}"); mock0=$(cpu_ticks "$mock_pid")
      wrk_at "$v" 50 "$out/${name}_c50.txt" -d"${DURATION}s"
      n=$(requests "${name}_c50")
      local omi_us mock_us
      omi_us=$(awk -v t="$(($(cpu_ticks "${PID[$v]}") - omi0))" -v us="$tick_us" -v n="$n" 'BEGIN {printf "%.1f", t*us/n}')
      mock_us=$(awk -v t="$(($(cpu_ticks "$mock_pid") - mock0))" -v us="$tick_us" -v n="$n" 'BEGIN {printf "%.1f", t*us/n}')
      if grep -q Non-2xx "$out/${name}_c50.txt"; then
        echo "$v: non-2xx responses under load (see $out/${name}_c50.txt, $work/$v.log)" >&2; exit 1
      fi
      wrk_at "$v" 1 "$out/${name}_c1.txt" -d"${DURATION}s" --latency
      # omi's CPU in units of the mock's: the mock does the same work for every variant
      # with the same upstream traffic, so this cancels the machine's speed of the moment.
      echo "$r $v $(rps "${name}_c50") $omi_us $mock_us $(to_us "$(pct "${name}_c1" 50)") $(to_us "$(pct "${name}_c1" 99)")" \
        "$(awk -v a="$omi_us" -v b="$mock_us" 'BEGIN {printf "%.3f", a / b}')" \
        >>"$out/${tag}_rounds.txt"
    done
  done
  local first=${VARIANTS[0]} base base_cpu rps cpu
  base=$(variant_median "$title" "$first" rps); base_cpu=$(variant_median "$title" "$first" cpu_us)
  echo "== $title ($(date -u +%FT%TZ), $(nproc) cores, wrk, ${DURATION}s per run, median of $ROUNDS alternating rounds) =="
  printf "%-10s %11s %8s %15s %8s %16s %11s %11s %9s\n" variant "req/s c=50" "vs $first" "omi CPU us/req" "vs $first" \
    "mock CPU us/req" "p50 c=1 us" "p99 c=1 us" "omi/mock"
  for v in "${VARIANTS[@]}"; do
    rps=$(variant_median "$title" "$v" rps); cpu=$(variant_median "$title" "$v" cpu_us)
    printf "%-10s %11s %7s%% %15s %7s%% %16s %11s %11s %9s\n" "$v" "$rps" "$(change "$rps" "$base")" "$cpu" \
      "$(change "$cpu" "$base_cpu")" "$(variant_median "$title" "$v" mock_cpu_us)" \
      "$(variant_median "$title" "$v" p50_us)" "$(variant_median "$title" "$v" p99_us)" \
      "$(variant_median "$title" "$v" cpu_per_mock 3)"
  done
  # Each round runs the variants back to back, so a round's own ratio cancels the machine's
  # drift between rounds (on this shared VM a round can be 20% slower than the next).
  for v in "${VARIANTS[@]:1}"; do
    printf "%s vs %s, median of the rounds' own throughput changes: %s%% (each round: %s)\n" "$v" "$first" \
      "$(paired_changes "$tag" "$first" "$v" | median 1)" "$(paired_changes "$tag" "$first" "$v" | tr '\n' ' ')"
  done
  echo "machine load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); rounds (${ROUND_COLUMNS[*]}): $out/${tag}_rounds.txt"
}
paired_changes() { # tag base variant [column, rps by default]: one change per round, in percent
  paired_rounds "$1" "$2" "$3" "${4:-rps}" percent
}
paired_differences() { # tag base variant column: one difference per round (variant minus base)
  paired_rounds "$1" "$2" "$3" "$4" difference
}
paired_rounds() { # tag base variant column percent|difference
  awk -v b="$2" -v v="$3" -v c="$(column_of "$4")" -v how="$5" '$2 == b {base[$1] = $c} $2 == v {x[$1] = $c} $1 > n {n = $1}
    END {for (r = 1; r <= n; r++) if ((r in x) && (r in base)) {
      d = x[r] - base[r]; if (how == "percent") d = d / base[r] * 100; printf "%.1f\n", d } }' "$out/$1_rounds.txt"
}
