#!/usr/bin/env bash
# Chaos: load through the real `acquiro serve` (journal on disk, sync batch) against the issuer
# simulator while the switch is killed with SIGKILL at random moments and restarted at once on the same
# journal; then every terminal's outcome is reconciled against the issuer's ledger. Exits non-zero on
# any mismatch or any transaction charged twice (the simulator approves everything, so a request
# forwarded twice would be charged twice).
# With `lifecycle`, the terminals send every message of the life cycle and the issuer refuses some
# advices and reversals and approves some requests in part (see `lifecycle_flags` in
# tests/support/run.sh), a settlement is out of balance only where its terminal miscounted on purpose,
# and the merchants' settlement read from the journal must also match the
# issuer's, RRN by RRN: every advice a terminal was told was accepted reached the issuer exactly once.
#
#   tests/chaos.sh [kills, default 20] [terminals, default 20] [requests/s, default 300] [lifecycle]
set -euo pipefail
cd "$(dirname "$0")/.."
kills=${1:-20}
terminals=${2:-20}
rate=${3:-300}
lifecycle=${4:-}
source tests/support/run.sh
issuer=29583 front=28583 admin=28590

switch_config "$work/acquiro.toml" <<TOML
response_timeout = "2s"
[reversals]
backoff = "500ms"
[journal]
dir = "$work/journal"
sync = "batch"
TOML

metric() { # name: its value on the admin endpoint
  curl -fs "http://127.0.0.1:$admin/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}
switch=
serve() {
  RUST_LOG=warn,switch=info $bin serve --config "$work/acquiro.toml" 2>>"$work/switch.log" &
  switch=$!
}

lifecycle_flags "$lifecycle"
$bin sim issuer --listen "127.0.0.1:$issuer" --ledger "$work/ledger.json" "${issuer_flags[@]}" 2>"$work/issuer.log" &
issuer_pid=$!
until_listening $issuer
serve
until_listening $front
duration=$((kills * 2 + 5))
$bin sim terminals --connect "127.0.0.1:$front" --terminals "$terminals" --rate "$rate" \
  --duration "${duration}s" --timeout 3s --outcomes "$work/outcomes.json" "${terminal_flags[@]}" >"$work/terminals.report" 2>/dev/null &
terminals_pid=$!

for i in $(seq "$kills"); do
  # A random moment in the next 0.2 to 3.8 s: the chaos itself, not a synchronisation.
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + 3.6 * r / 32768 }')"
  kill -9 "$switch"
  wait "$switch" 2>/dev/null || true
  echo "kill $i: switch killed at $(date +%T.%N | cut -c1-12), restarted" >&2
  serve
done

wait "$terminals_pid" || true
# The last reversals and advices: wait until nothing is in flight or queued, then stop both.
until_listening $front
until [ "$(metric acquiro_saf_depth)" = 0 ] && [ "$(metric acquiro_in_flight)" = 0 ] &&
  [ "$(metric acquiro_advice_queue_depth)" = 0 ]; do sleep 0.2; done
kill -TERM "$switch" && wait "$switch" || true
kill -TERM "$issuer_pid" && wait "$issuer_pid" || true

grep -E "^(throughput|answers|terminals)" "$work/terminals.report" || true
grep -o 'in_doubt=[0-9]*' "$work/switch.log" | awk -F= '{ n += $2 } END { printf "recoveries: %d requests in doubt reversed\n", n }'
verdict=$($bin sim reconcile --outcomes "$work/outcomes.json" --ledger "$work/ledger.json") || {
  echo "$verdict"
  exit 1
}
echo "$verdict"
echo "$verdict" | tail -1 | grep -q ", 0 charged twice$"
settlement_reconciles --journal-dir "$work/journal"
settlements_balance "$work/switch.log"
echo "chaos: $kills kills, reconciliation holds${lifecycle:+ (the life cycle, and the settlement with the issuer)}"
