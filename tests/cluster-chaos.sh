#!/usr/bin/env bash
# Cluster chaos: load through HAProxy (TCP mode) to several `acquiro serve` nodes on one PostgreSQL. At
# random moments a node is killed with SIGKILL and restarted a little later under its name, or (every
# third round) paused with SIGSTOP, past its lease or not, or (every fourth) has its database
# connections cut; the database is restarted once, and later
# fails over to its synchronous standby (the primary killed, the standby promoted); then every
# terminal's outcome is reconciled against the issuer's ledger. Exits non-zero on any mismatch or any
# transaction charged twice (a request forwarded twice would be charged twice).
# With `lifecycle`, the terminals send every message of the life cycle (refunds, completions, partial
# reversals, offline sales, a settlement each at the end), the issuer answers 5 % of the advices and
# reversals it gets with 96 (the switch repeats them) and approves a share of the requests in part, and
# the merchants' settlement read from every node's records must also reconcile with the issuer's, RRN by
# RRN: every advice a terminal was told was accepted reached the issuer exactly once. A settlement is
# out of balance only where its terminal miscounted on purpose, whatever nodes its batch went through.
#
#   tests/cluster-chaos.sh [rounds, default 10] [nodes, default 2] [terminals, default 20] [requests/s, default 200] [lifecycle]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
nodes=${2:-2}
terminals=${3:-20}
rate=${4:-200}
lifecycle=${5:-}
source tests/support/run.sh
issuer=29583 front=28583 admin=28590
source tests/support/cluster.sh

switch_config "$work/acquiro.toml" <<TOML
response_timeout = "2s"
[reversals]
backoff = "500ms"
max_backoff = "2s"
[cluster]
lease = "2s"
# The load's terminals: a 3 s timeout, one retransmit, and a reconnect between.
terminal_patience = "10s"
TOML

metric() { # node name: the metric's value on the node's admin endpoint
  curl -fs "http://127.0.0.1:$((admin + $1))/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

pg_start
pg_standby_start
lifecycle_flags "$lifecycle"
$bin sim issuer --listen "127.0.0.1:$issuer" --ledger "$work/ledger.json" "${issuer_flags[@]}" 2>"$work/issuer.log" &
issuer_pid=$!
until_listening $issuer
for n in $(seq "$nodes"); do node_start "$n"; done
for n in $(seq "$nodes"); do until_listening $((front + n)); done
haproxy_start "$nodes"
until_listening $front
duration=$((rounds * 3 + 5))
$bin sim terminals --connect "127.0.0.1:$front" --terminals "$terminals" --rate "$rate" \
  --duration "${duration}s" --timeout 3s --outcomes "$work/outcomes.json" "${terminal_flags[@]}" >"$work/terminals.report" 2>/dev/null &
terminals_pid=$!

db_restart_at=$(( (rounds + 1) / 2 ))
failover_at=$(( (3 * rounds + 3) / 4 ))
# A node that stopped by itself (fenced: its lease lapsed while it was paused or starved of CPU, exit 3)
# is started again, as its supervisor would.
supervise() {
  for n in $(seq "$nodes"); do
    if ! kill -0 "${node_pid[$n]}" 2>/dev/null; then
      wait "${node_pid[$n]}" 2>/dev/null || true
      echo "        node$n had stopped by itself: started again" >&2
      node_start "$n"
    fi
  done
}
for i in $(seq "$rounds"); do
  # A random moment in the next 0.5 to 3 s: the chaos itself, not a synchronisation.
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.5 + 2.5 * r / 32768 }')"
  supervise
  n=$(( RANDOM % nodes + 1 ))
  if (( i % 3 == 0 && i != db_restart_at && i != failover_at )); then
    # Every third round a pause instead (SIGSTOP, as a long GC pause, a VM migration or a partition
    # would hold it) for 0.2 to 4 s against a lease of 2 s: sometimes it wakes still holding its
    # lease, sometimes after another node took its work over, when its commits must be refused.
    kill -STOP "${node_pid[$n]}" 2>/dev/null || true
    echo "round $i: node$n paused at $(date +%T.%N | cut -c1-12)" >&2
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + 3.8 * r / 32768 }')"
    kill -CONT "${node_pid[$n]}" 2>/dev/null || true
    continue
  fi
  if (( i % 4 == 0 && i != db_restart_at && i != failover_at )); then
    # Every fourth round the node's database connections are cut instead, as an operator's
    # pg_terminate_backend or a proxy restarting between would cut them, with the database up.
    cut=$("$pg_bin/psql" "$database" -qAt -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                                              WHERE application_name LIKE 'acquiro node$n %'" 2>/dev/null) || cut=0
    echo "round $i: node$n's $cut database connections cut at $(date +%T.%N | cut -c1-12)" >&2
    continue
  fi
  kill -9 "${node_pid[$n]}" 2>/dev/null || true
  wait "${node_pid[$n]}" 2>/dev/null || true
  echo "round $i: node$n killed at $(date +%T.%N | cut -c1-12)" >&2
  if (( i == db_restart_at )); then
    pg_kill
    echo "        and PostgreSQL stopped" >&2
    sleep 1
    pg_start
    echo "        and started again" >&2
  elif (( i == failover_at )); then
    pg_kill
    echo "        and the PostgreSQL primary killed" >&2
    sleep 1
    pg_promote
    echo "        and its standby promoted" >&2
  fi
  # Back after a random 0.2 to 4 s: sometimes before its lease lapses, sometimes after a takeover.
  sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + 3.8 * r / 32768 }')"
  node_start "$n"
done

wait "$terminals_pid" || true
# The end: every lease live and no takeover under way (a node woken from the last pause may yet be
# taken over, and then stop fenced and be started again), no plea left waiting, and no node with
# anything in flight or queued (the last reversals and advices, those in terminals' names waiting out
# their patience among them). Then everything stops.
settled() {
  local status
  status=$($bin cluster status --database "$database" 2>/dev/null) || return 1
  [[ $status != *LAPSED* && $status != *"TAKEOVER UNDER WAY"* && $status == *" 0 plea(s) waiting"* ]] || return 1
  for n in $(seq "$nodes"); do
    [ "$(metric "$n" acquiro_saf_depth)" = 0 ] && [ "$(metric "$n" acquiro_in_flight)" = 0 ] &&
      [ "$(metric "$n" acquiro_advice_queue_depth)" = 0 ] || return 1
  done
}
deadline=$((SECONDS + 120))
until settled; do
  (( SECONDS < deadline )) || { echo "the cluster did not settle within 120 s" >&2; exit 1; }
  supervise
  sleep 0.2
done
echo "fencings: $(cat "$work"/node*.log | grep -c 'fenced: this node stops' || true)"
for n in $(seq "$nodes"); do kill -TERM "${node_pid[$n]}"; wait "${node_pid[$n]}" || true; done
kill -TERM "$issuer_pid" && wait "$issuer_pid" || true

grep -E "^(throughput|answers|terminals)" "$work/terminals.report" || true
cat "$work"/node*.log | grep -o 'in_doubt=[0-9]*' | awk -F= '{ n += $2 } END { printf "recoveries and takeovers: %d requests in doubt reversed\n", n }'
echo "takeovers: $(cat "$work"/node*.log | grep -c 'took over the work' || true)"
$bin tranlog verify --database "$database"
verdict=$($bin sim reconcile --outcomes "$work/outcomes.json" --ledger "$work/ledger.json") || {
  echo "$verdict"
  # Each mismatch's timeline on every node, while the database is still there: with ACQUIRO_KEEP,
  # what explains the failure outlives the run. Under its RRN, the attempts that got one; under its
  # terminal and STAN, every attempt and every reversal in the terminal's name (a retransmit refused
  # 91 before it was given an RRN, a plea and whom it was taken on by).
  for rrn in $(grep -o '"rrn":"[0-9]*"' <<<"$verdict" | cut -d'"' -f4); do
    { echo "== RRN $rrn"; $bin tranlog show --database "$database" --rrn "$rrn" 2>&1 || true; } >>"$work/timelines.report"
    outcome=$(grep -m1 "\"rrn\":\"$rrn\"" "$work/outcomes.json" || true)
    terminal=$(grep -o '"terminal":"[^"]*"' <<<"$outcome" | cut -d'"' -f4)
    stan=$(grep -o '"stan":[0-9]*' <<<"$outcome" | cut -d: -f2)
    [ -n "$terminal" ] && [ -n "$stan" ] || continue
    { echo "== terminal $terminal STAN $stan"; $bin tranlog show --database "$database" --terminal "$terminal" --stan "$stan" 2>&1 || true; } >>"$work/timelines.report"
  done
  exit 1
}
echo "$verdict"
echo "$verdict" | tail -1 | grep -q ", 0 charged twice$"
settlement_reconciles --database "$database"
settlements_balance "$work"/node*.log
echo "cluster chaos: $rounds rounds of kills, pauses and connection cuts of $nodes nodes, a database restart and a failover, reconciliation holds${lifecycle:+ (the life cycle, and the settlement with the issuer)}"
