#!/usr/bin/env bash
# The floor under cluster mode: what a throw-away PostgreSQL (Debian's `postgresql`, on this machine, with
# synchronous_commit = on) does with cluster mode's own write pattern, with no switch in front: pgbench
# runs commit.sql (one acquiro_commit of a batch of purchases, the real schema of
# crates/cluster/migrations) with one and two writers, and PostgreSQL's CPU per transaction is read from
# /proc. The statement is prepared once per connection, as the switch prepares its own: parsing and
# planning commit.sql's text on every call cost 0.1–0.2 ms a commit that the switch never pays.
#
#   benches/pg-floor/run.sh [seconds per run, default 10] [purchases per commit, default 16]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
batch=${2:-16}
work=$(mktemp -d)
# WAL segments larger than a run writes: the steady state of a database that recycles them (see
# tests/support/cluster.sh).
pg_wal_segment=1024
source tests/support/cluster.sh
# A fresh database for each run, as benches/e2e.sh makes for each cluster row: the WAL a run writes
# would otherwise bring a checkpoint into the next run, and its full-page writes with it. Two nodes
# (pgbench's client ids), each committing its own rows.
fresh() {
  pg_kill 2>/dev/null || true
  rm -rf "$work/pg"
  pg_start
  for m in crates/cluster/migrations/*.sql; do pg_psql -f "$m" >/dev/null; done
  pg_psql -c "CREATE SEQUENCE bench_seq; INSERT INTO nodes (node, epoch, lease_until, joined_at) SELECT 'bench' || i, 1, now() + interval '1 day', now() FROM generate_series(0, 1) i" >/dev/null
  pm=$(head -1 "$work/pg/data/postmaster.pid")
  idle=$(pgrep -P "$pm" | wc -l)
}
cpu() { # PostgreSQL's CPU seconds so far: the server, the children it reaped (pgbench's backends end
  # with their connections) and those still running
  local total pid
  total=$(awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15 + $16 + $17) / hz }' "/proc/$pm/stat")
  for pid in $(pgrep -P "$pm"); do
    total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{ print t + ($14 + $15) / hz }' "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}
echo "$(nproc) cores; PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}'); $batch purchases (4 records in 2 rows + 1 claim each) per commit; ${secs} s per run"
for clients in 1 2; do
  fresh
  before=$(cpu)
  # The copy of the evidence to its indexes, behind the commits, as every node runs it (schema
  # version 4): part of the database's work for each purchase, on a connection of its own.
  touch "$work/indexing"
  { while [[ -e $work/indexing ]] && sleep 0.1; do echo "SELECT acquiro_index_evidence(50000);"; done; } |
    pg_psql >/dev/null &
  indexer=$!
  # Generic plans: pgbench's statement builds the batch's arrays with subqueries, which PostgreSQL
  # otherwise planned again at each commit (a tenth of its CPU a purchase) where the node's statement,
  # its arguments given, has nothing to plan.
  tps=$(PGOPTIONS="-c plan_cache_mode=force_generic_plan" "$pg_bin/pgbench" -h "$work/pg" -p "$pg_port" -U postgres -n -M prepared -f benches/pg-floor/commit.sql -D b="$batch" \
    -c "$clients" -j "$clients" -T "$secs" postgres 2>/dev/null | awk '/^tps/ { print $3 }')
  rm "$work/indexing"
  wait "$indexer"
  # pgbench's backends count once the server has reaped them (their CPU moves to the server's).
  until (( $(pgrep -P "$pm" | wc -l) <= idle )); do sleep 0.05; done
  after=$(cpu)
  awk -v c="$clients" -v tps="$tps" -v b="$batch" -v used="$(awk -v a="$after" -v b0="$before" 'BEGIN { print a - b0 }')" -v secs="$secs" \
    'BEGIN { n = tps * b * secs; printf "  %d writer(s): %.0f commits/s, %.0f purchases/s, PostgreSQL %.1f µs CPU per purchase\n", c, tps, tps * b, used * 1e6 / n }'
done
