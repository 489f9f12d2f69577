# Sourced by the bench/*.sh scripts: results folder, wrk, release binaries, and a scratch
# folder whose servers (pids in `pids`) are stopped and which is removed on exit.
out=bench/out; mkdir -p "$out"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release --bins --quiet
bin="${CARGO_TARGET_DIR:-target}/release"

work=$(mktemp -d)
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
pids=(); trap cleanup EXIT
