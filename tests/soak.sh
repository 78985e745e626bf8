#!/usr/bin/env bash
# Soak: steady load through the real `acquiro serve` (journal on disk, sync batch, retention bounded)
# against the issuer simulator, sampling the switch's resident memory and open file descriptors. The
# idempotency table fills to its cap (1 000 000 keys by default) in the first minutes; after that both
# must stay flat. Prints the samples, then the growth over the second half of the run, and fails if RSS
# grew more than 5 % or the descriptors at all, or if the reconciliation does not hold.
# With `cluster`, the switch is one cluster node on a throw-away PostgreSQL (Debian's) instead, and the
# end also prints what the database holds a transaction.
#
#   tests/soak.sh [minutes, default 10] [requests/s, default 15000: half the batch maximum measured by
#                 benches/e2e.sh] [terminals, default 200] [cluster]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
rate=${2:-15000}
terminals=${3:-200}
mode=${4:-}
source tests/support/run.sh
# The allocator as deploy/ runs the switch: freed memory kept, not handed back to the kernel (so RSS
# is what a deployed switch holds).
export MIMALLOC_PURGE_DELAY=-1
issuer=39583 front=38583 admin=38590

if [[ $mode == cluster ]]; then
  pg_port=35432
  source tests/support/cluster.sh
  pg_start
  switch_config "$work/acquiro.toml" </dev/null
  serve_flags=(--node soak --database "$database")
  serve_env=(ACQUIRO_CARD_KEY=00112233445566778899aabbccddeeff)
else
  switch_config "$work/acquiro.toml" <<TOML
[journal]
dir = "$work/journal"
sync = "batch"
retain_bytes = 1073741824
TOML
  serve_flags=() serve_env=()
fi

$bin sim issuer --listen "127.0.0.1:$issuer" --ledger "$work/ledger.json" 2>"$work/issuer.log" &
issuer_pid=$!
until_listening $issuer
env "${serve_env[@]}" $bin serve --config "$work/acquiro.toml" "${serve_flags[@]}" 2>"$work/switch.log" &
switch=$!
until_listening $front
$bin sim terminals --connect "127.0.0.1:$front" --terminals "$terminals" --rate "$rate" \
  --duration "${minutes}m" --outcomes "$work/outcomes.json" >"$work/terminals.report" 2>/dev/null &
terminals_pid=$!

printf "%8s %10s %6s %12s\n" second rss_mib fds idempotency | tee "$work/samples"
start=$SECONDS
while kill -0 "$terminals_pid" 2>/dev/null; do
  rss=$(awk '/^VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$switch/status")
  fds=$(ls "/proc/$switch/fd" | wc -l)
  keys=$(curl -fs "http://127.0.0.1:$admin/metrics" | awk '$1 == "acquiro_idempotency_entries" { print $2 }')
  printf "%8d %10d %6d %12s\n" $((SECONDS - start)) "$rss" "$fds" "$keys" | tee -a "$work/samples"
  sleep 15
done
wait "$terminals_pid" || true
# How long the journal's syncs (in cluster mode, its commits) took, before the switch stops: whether
# the slowest purchases waited on the disk (or the database) or on the switch.
curl -fs "http://127.0.0.1:$admin/metrics" >"$work/switch.metrics" || true
kill -TERM "$switch" && wait "$switch" || true
kill -TERM "$issuer_pid" && wait "$issuer_pid" || true

grep -E "^(throughput|latency|answers|terminals)" "$work/terminals.report"
$bin sim reconcile --outcomes "$work/outcomes.json" --ledger "$work/ledger.json" | tail -1
awk -F'[{}" ]+' '$1 == "acquiro_journal_sync_seconds_bucket" { n[$3] = $4 } END {
  printf "journal syncs %d: over 100 ms %d, over 250 ms %d, over 1 s %d\n", n["+Inf"],
    n["+Inf"] - n["0.1"], n["+Inf"] - n["0.25"], n["+Inf"] - n["1"]
}' "$work/switch.metrics"
if [[ $mode == cluster ]]; then
  # What the database keeps a transaction (its rows and indexes, and the evidence copied behind),
  # for sizing a cluster's disk.
  pg_psql -c "SELECT pg_database_size(current_database()), (SELECT count(*) FROM claims)" |
    awk -F'|' '{ printf "database: %.0f MiB for %d transactions, %.0f bytes a transaction\n", $1 / 1048576, $2, $1 / $2 }'
fi
# The second half against its first sample: memory and descriptors must not creep.
awk 'NR > 1 { s[++n] = $0 } END {
  h = int(n / 2) + 1; split(s[h], a); split(s[n], b)
  growth = (b[2] - a[2]) / a[2] * 100
  printf "second half (%d s to %d s): rss %d -> %d MiB (%+.1f %%), fds %d -> %d\n", a[1], b[1], a[2], b[2], growth, a[3], b[3]
  exit (growth > 5 || b[3] > a[3]) ? 1 : 0
}' "$work/samples"
