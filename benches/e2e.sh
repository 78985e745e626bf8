#!/usr/bin/env bash
# The end-to-end benchmark, in one invocation on this machine, against the issuer simulator:
#   direct   terminals -> issuer
#   relay    terminals -> byte relay (one upstream connection per terminal, nothing parsed) -> issuer
#   none, batch, always
#            terminals -> acquiro (journal on disk with that sync policy) -> issuer
# each as fast as answers come, then direct, relay and acquiro (batch) at a fixed rate for the latency a
# hop adds. Prints a table and the ratios acquiro/relay and acquiro/direct.
#
#   benches/e2e.sh [seconds per run, default 10] [terminals, default 200] [fixed rate, default 20000]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
terminals=${2:-200}
rate=${3:-20000}
source tests/support/run.sh
issuer=19583 front=18583 admin=18590

until_ready() { # url
  until curl -fs "$1" >/dev/null; do sleep 0.05; done
}

# CPU seconds (user + system) a process has used so far.
cpu() { # pid
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

# One load run against a port; appends "name tx/s p50 p99 p99.9 hop-µs issuer-µs" to the table: the
# CPU time the hop under test (pid $3, or none) and the issuer simulator spent per transaction.
load() { # name, port, hop pid or "", extra sim-terminals flags...
  local name=$1 port=$2 hop=$3
  shift 3
  local hop0=0 hop1=0 issuer0
  [[ -n $hop ]] && hop0=$(cpu "$hop")
  issuer0=$(cpu "$issuer_pid")
  $bin sim terminals --connect "127.0.0.1:$port" --terminals "$terminals" --duration "${secs}s" \
    "$@" >"$work/$name.report" 2>/dev/null
  [[ -n $hop ]] && hop1=$(cpu "$hop")
  awk -v name="$name" -v hop="$hop0 $hop1" -v issuer="$issuer0 $(cpu "$issuer_pid")" '
    /^throughput/ { tps = $2; n = substr($4, 2) }
    /^latency/ { for (i = 2; i < NF; i++) { if ($i == "p50") p50 = $(i+1); if ($i == "p99") p99 = $(i+1); if ($i == "p99.9") p999 = $(i+1) } }
    END { printf "%-14s %9d %9.2f %9.2f %9.2f %9.1f %9.1f\n", name, tps, p50, p99, p999, used(hop) / n, used(issuer) / n }
    # "before after" in seconds, as µs
    function used(span,  a) { split(span, a, " "); return (a[2] - a[1]) * 1e6 }' \
    "$work/$name.report" | tee -a "$work/table"
}

relay() { # name, extra sim-terminals flags...
  local name=$1
  shift
  $bin sim relay --listen "127.0.0.1:$front" --upstream "127.0.0.1:$issuer" 2>"$work/relay.log" &
  local pid=$!
  until_listening $front
  load "$name" $front $pid "$@"
  kill -TERM $pid
  wait $pid || true
}

acquiro() { # name, sync policy, extra sim-terminals flags...
  local name=$1 sync=$2
  shift 2
  switch_config "$work/$name.toml" <<TOML
[journal]
dir = "$work/journal-$name"
sync = "$sync"
TOML
  $bin serve --config "$work/$name.toml" 2>"$work/$name.log" &
  local pid=$!
  until_ready "http://127.0.0.1:$admin/readyz"
  load "$name" $front $pid "$@"
  kill -TERM $pid
  wait $pid || true
}

$bin sim issuer --listen "127.0.0.1:$issuer" 2>"$work/issuer.log" &
issuer_pid=$!
until_listening $issuer

echo "$(nproc) cores; $terminals terminals, ${secs} s per run; latencies in ms; CPU time per transaction in µs" >&2
printf "%-14s %9s %9s %9s %9s %9s %9s\n" run "tx/s" p50 p99 p99.9 "hop µs" "issuer µs" | tee "$work/table"
load direct $issuer ""
relay relay
acquiro none none
acquiro batch batch
acquiro always always
load "direct@$rate" $issuer "" --rate "$rate"
relay "relay@$rate" --rate "$rate"
acquiro "batch@$rate" batch --rate "$rate"

awk -v rate="$rate" '
  { tps[$1] = $2; p99[$1] = $4 }
  END {
    printf "acquiro(batch)/relay %.2f, acquiro(batch)/direct %.2f\n", tps["batch"] / tps["relay"], tps["batch"] / tps["direct"]
    printf "at %d/s, p99 added over direct: relay %.2f ms, acquiro(batch) %.2f ms\n", rate,
      p99["relay@" rate] - p99["direct@" rate], p99["batch@" rate] - p99["direct@" rate]
  }' "$work/table"
