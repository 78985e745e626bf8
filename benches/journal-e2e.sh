#!/usr/bin/env bash
# End-to-end throughput of acquiro with the journal in memory, on disk with sync = none, and with
# sync = batch (the default), in one run on this machine: terminals -> acquiro -> issuer simulator.
#
#   benches/journal-e2e.sh [seconds per run, default 10] [terminals, default 200]
#
# Prints each run's report line and the ratios batch/none and batch/memory.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
terminals=${2:-200}
cargo build --release -q
bin=target/release/acquiro
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

$bin sim issuer --listen 127.0.0.1:19583 >"$work/issuer.log" 2>&1 &

run() { # name, extra config lines
  local name=$1 extra=$2
  cat >"$work/$name.toml" <<TOML
[[listeners]]
address = "127.0.0.1:18583"
[[issuers]]
name = "visa"
hosts = ["127.0.0.1:19583"]
connections_per_host = 2
$extra
TOML
  RUST_LOG=warn $bin serve --config "$work/$name.toml" 2>"$work/$name.log" &
  local switch=$!
  # Ready once the listener accepts.
  until (exec 3<>/dev/tcp/127.0.0.1/18583) 2>/dev/null; do :; done
  local line
  line=$($bin sim terminals --connect 127.0.0.1:18583 --terminals "$terminals" \
    --duration "${secs}s" 2>/dev/null | grep throughput)
  kill -TERM $switch; wait $switch || true
  echo "$name: $line" >&2
  echo "$line" | awk '{print $2}'
}

memory=$(run memory "")
none=$(run none "[journal]
dir = \"$work/journal-none\"
sync = \"none\"")
batch=$(run batch "[journal]
dir = \"$work/journal-batch\"
sync = \"batch\"")
awk -v m="$memory" -v n="$none" -v b="$batch" 'BEGIN {
  printf "transactions/s: memory %d, none %d, batch %d\n", m, n, b
  printf "batch/none %.2f, batch/memory %.2f\n", b / n, b / m
}'
