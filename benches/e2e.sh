#!/usr/bin/env bash
# The end-to-end benchmark, in one invocation on this machine, against the issuer simulator:
#   direct   terminals -> issuer
#   relay    terminals -> byte relay (one upstream connection per terminal, nothing parsed) -> issuer
#   haproxy  terminals -> HAProxy in TCP mode -> issuer: the reference for a production-grade hop
#   none, batch, always
#            terminals -> acquiro (journal on disk with that sync policy) -> issuer
#   pg1      terminals -> one acquiro node in cluster mode on a throw-away PostgreSQL -> issuer
#   pg2      terminals -> HAProxy (TCP) -> two nodes on the same PostgreSQL -> issuer
# each as fast as answers come, then direct, relay, acquiro (batch) and pg1 at fixed rates for the
# latency a hop adds, then "4x16": 64 terminals on 4 shared connections (16 requests in flight on each,
# as behind a terminal concentrator), closed loop and at the cluster rate. Prints a table (CPU per
# transaction of the hop under test, of the issuer simulator, and of PostgreSQL) and the ratios.
#
#   benches/e2e.sh [seconds per run, default 10] [terminals, default 200] [fixed rate, default 20000]
#                  [cluster fixed rate, default 5000]
set -euo pipefail
cd "$(dirname "$0")/.."
# HAProxy (Debian's `haproxy`) has rows of its own: said before the first run, not in the middle of the
# bench (tests/support/cluster.sh says the same of PostgreSQL).
command -v haproxy >/dev/null || { echo "benches/e2e.sh needs HAProxy: apt-get install haproxy" >&2; exit 1; }
secs=${1:-10}
terminals=${2:-200}
rate=${3:-20000}
pg_rate=${4:-5000}
# Every run's logs, reports and each switch's metrics at the end of its row stay in
# target/e2e/<UTC time> (see tests/support/run.sh): a row that stalls (a p99.9 far above its
# neighbours) is read from its switch's and PostgreSQL's logs and its switch's histograms there.
ACQUIRO_KEEP=${ACQUIRO_KEEP:-target/e2e/$(date -u +%Y%m%dT%H%M%SZ)}
source tests/support/run.sh
# The allocator as deploy/ runs the switch: freed memory kept, not handed back to the kernel.
export MIMALLOC_PURGE_DELAY=-1
issuer=19583 front=18583 admin=18590
# WAL segments larger than a run writes: the steady state of a database that recycles them (see
# tests/support/cluster.sh).
pg_wal_segment=1024
source tests/support/cluster.sh

until_ready() { # url
  until curl -fs "$1" >/dev/null; do sleep 0.05; done
}

# CPU seconds (user + system) the processes have used so far (one that is gone counts nothing).
cpu() { # pid...
  local pid total=0
  for pid in "$@"; do
    total=$(awk -v t="$total" -v hz="$(getconf CLK_TCK)" '{ print t + ($14 + $15) / hz }' "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}

# PostgreSQL's processes: the server and its children (a backend per connection of each node).
pg_pids() {
  [[ -f $work/pg/data/postmaster.pid ]] || return 0
  local pm
  pm=$(head -1 "$work/pg/data/postmaster.pid")
  echo "$pm" $(pgrep -P "$pm")
}

# One load run against a port; appends "name tx/s p50 p99 p99.9 hop-µs issuer-µs db-µs" to the table:
# the CPU time the hop under test (pids $3, or none), the issuer simulator and PostgreSQL spent per
# transaction.
load() { # name, port, hop pids or "", extra sim-terminals flags...
  local name=$1 port=$2 hop=$3
  shift 3
  local hop0 issuer0 db0 dbs
  # Nothing the rows before left unwritten (a journal under `none`, the database's tables) is written
  # back by the kernel during this one: dirty pages go out half a minute after they were made.
  sync
  dbs=$(pg_pids)
  hop0=$(cpu $hop)
  issuer0=$(cpu "$issuer_pid")
  db0=$(cpu $dbs)
  $bin sim terminals --connect "127.0.0.1:$port" --terminals "$terminals" --duration "${secs}s" \
    "$@" >"$work/$name.report" 2>/dev/null
  awk -v name="$name" -v hop="$hop0 $(cpu $hop)" -v issuer="$issuer0 $(cpu "$issuer_pid")" -v db="$db0 $(cpu $dbs)" '
    /^throughput/ { tps = $2; n = substr($4, 2) }
    /^latency/ { for (i = 2; i < NF; i++) { if ($i == "p50") p50 = $(i+1); if ($i == "p99") p99 = $(i+1); if ($i == "p99.9") p999 = $(i+1) } }
    END { printf "%-14s %9d %9.2f %9.2f %9.2f %9.1f %9.1f %9.1f\n", name, tps, p50, p99, p999, used(hop) / n, used(issuer) / n, used(db) / n }
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

# HAProxy in TCP mode in front of the issuer, nothing else: what a mature proxy costs per hop.
haproxy_hop() { # name, extra sim-terminals flags...
  local name=$1
  shift
  {
    haproxy_head issuer
    printf 'backend issuer\n  server issuer 127.0.0.1:%s\n' "$issuer"
  } >"$work/haproxy-hop.cfg"
  haproxy -f "$work/haproxy-hop.cfg" -db 2>"$work/haproxy-hop.log" &
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
  # Its metrics as the row ends, kept with the logs: a stall's stage shows in the histograms (a
  # journal sync, an issuer's answer, a turn of the driver).
  curl -fs "http://127.0.0.1:$admin/metrics" >"$work/$name.metrics" || true
  kill -TERM $pid
  wait $pid || true
}

# What node N's journal writer did, from its metrics (every commit of a node is one after the other,
# on one connection): commits a second, records a commit, time a commit, and the share of the run the
# writer had a commit out. The counters start with the node, a moment before the run: close enough for
# a line under the row, which is why it is not in the table. A node that cannot be asked prints nothing.
commits() { # name, N (the metrics kept too, as for the file journal's rows)
  { curl -fs "http://127.0.0.1:$((admin + $2))/metrics" || true; } | tee "$work/$1-node$2.metrics" | awk -v name="$1" -v n="$2" -v secs="$secs" '
    /^acquiro_journal_sync_seconds_sum/ { busy = $2 }
    /^acquiro_journal_sync_seconds_count/ { commits = $2 }
    /^acquiro_journal_batch_records_sum/ { records = $2 }
    END { if (commits > 0) printf "  %s node%d: %.0f commits/s, %.0f records a commit, %.2f ms a commit, writer busy %.0f %%\n",
      name, n, commits / secs, records / commits, 1000 * busy / commits, 100 * busy / secs }'
}

# Cluster mode: N nodes on a fresh database (behind HAProxy when more than one).
cluster() { # name, nodes, extra sim-terminals flags...
  local name=$1 nodes=$2 pids=() n port
  shift 2
  pg_kill 2>/dev/null || true
  rm -rf "$work/pg"
  pg_start
  switch_config "$work/acquiro.toml" </dev/null
  for n in $(seq "$nodes"); do
    node_start "$n"
    pids+=("${node_pid[$n]}")
    until_ready "http://127.0.0.1:$((admin + n))/readyz"
  done
  port=$((front + 1))
  if (( nodes > 1 )); then
    haproxy_start "$nodes"
    pids+=($!)
    port=$front
    until_listening $front
  fi
  load "$name" $port "${pids[*]}" "$@"
  for n in $(seq "$nodes"); do commits "$name" "$n"; done
  kill -TERM "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  pg_kill
}

$bin sim issuer --listen "127.0.0.1:$issuer" 2>"$work/issuer.log" &
issuer_pid=$!
until_listening $issuer

echo "$(nproc) cores; $terminals terminals, ${secs} s per run; latencies in ms; CPU time per transaction in µs" >&2
printf "%-14s %9s %9s %9s %9s %9s %9s %9s\n" run "tx/s" p50 p99 p99.9 "hop µs" "issuer µs" "db µs" | tee "$work/table"
load direct $issuer ""
relay relay
haproxy_hop haproxy
acquiro none none
acquiro batch batch
acquiro always always
load "direct@$rate" $issuer "" --rate "$rate"
relay "relay@$rate" --rate "$rate"
acquiro "batch@$rate" batch --rate "$rate"
# `pg1` between two `batch` runs: the machine's own speed drifts within a run (the file journal's rate
# moved by 40 % in half an hour on the development machine), so the ratio is also given against the
# runs on either side of it.
acquiro batch-before batch
cluster pg1 1
acquiro batch-after batch
cluster pg2 2
load "direct@$pg_rate" $issuer "" --rate "$pg_rate"
acquiro "batch@$pg_rate" batch --rate "$pg_rate"
cluster "pg1@$pg_rate" 1 --rate "$pg_rate"
# 64 terminals on 4 connections (the assignment holds for the call only).
terminals=64 load direct@4x16 $issuer "" --connections 4
terminals=64 relay relay@4x16 --connections 4
terminals=64 haproxy_hop haproxy@4x16 --connections 4
terminals=64 acquiro batch@4x16 batch --connections 4
terminals=64 load "direct@4x16@$pg_rate" $issuer "" --connections 4 --rate "$pg_rate"
terminals=64 acquiro "batch@4x16@$pg_rate" batch --connections 4 --rate "$pg_rate"

awk -v rate="$rate" -v pg_rate="$pg_rate" '
  { tps[$1] = $2; p99[$1] = $4 }
  END {
    printf "acquiro(batch)/relay %.2f, acquiro(batch)/direct %.2f, haproxy/relay %.2f\n", tps["batch"] / tps["relay"],
      tps["batch"] / tps["direct"], tps["haproxy"] / tps["relay"]
    printf "at %d/s, p99 added over direct: relay %.2f ms, acquiro(batch) %.2f ms\n", rate,
      p99["relay@" rate] - p99["direct@" rate], p99["batch@" rate] - p99["direct@" rate]
    printf "cluster: pg1/batch %.2f (%.2f against the batch runs on either side of it), pg2/batch %.2f; at %d/s, p99 added over direct: batch %.2f ms, pg1 %.2f ms\n",
      tps["pg1"] / tps["batch"], 2 * tps["pg1"] / (tps["batch-before"] + tps["batch-after"]), tps["pg2"] / tps["batch"], pg_rate,
      p99["batch@" pg_rate] - p99["direct@" pg_rate], p99["pg1@" pg_rate] - p99["direct@" pg_rate]
    printf "4x16 closed loop, throughput lost against direct: relay %.0f %%, haproxy %.0f %%, acquiro(batch) %.0f %%\n",
      100 * (1 - tps["relay@4x16"] / tps["direct@4x16"]), 100 * (1 - tps["haproxy@4x16"] / tps["direct@4x16"]),
      100 * (1 - tps["batch@4x16"] / tps["direct@4x16"])
  }' "$work/table"
