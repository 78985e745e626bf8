# Sourced by the scripts that run a cluster of real nodes (tests/cluster-chaos.sh, benches/e2e.sh): a
# throw-away PostgreSQL from Debian's binaries in $work (as root, run as the `postgres` user), nodes of
# `acquiro serve` on it, and HAProxy in TCP mode in front of them. Needs $work (tests/support/run.sh makes it).

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
pg_as=()
[[ $(id -u) == 0 ]] && pg_as=(runuser -u postgres --)
pg_port=${pg_port:-25432}
database="host=$work/pg port=$pg_port user=postgres dbname=postgres"
# WAL segment size in MB (initdb's default, 16, when unset). A database that has run for a while
# recycles its WAL segments at each checkpoint; a fresh one creates and zero-fills a new one whenever
# the last fills, and the commit that needs it waits: at 5 000 purchases/s on this machine, 12-15 ms
# every 1.6 s. The benches set a size larger than a run writes, so that they measure the steady state.
pg_wal_segment=${pg_wal_segment:-}

pg_start() { # starts the server (made on the first call)
  if [[ ! -d $work/pg/data ]]; then
    mkdir -p "$work/pg"
    # The server runs as `postgres`: it must get through $work to its own directory.
    [[ $(id -u) == 0 ]] && chmod o+x "$work" && chown postgres "$work/pg"
    "${pg_as[@]}" "$pg_bin/initdb" -D "$work/pg/data" -A trust -U postgres --no-sync \
      ${pg_wal_segment:+--wal-segsize=$pg_wal_segment} >/dev/null
    # On disk before the server starts: a large segment written and left to the kernel's writeback
    # would be flushed half a minute later, in the middle of a run.
    if [[ -n $pg_wal_segment ]]; then sync "$work"/pg/data/pg_wal/0*; fi
  fi
  pg_ctl_start "$work/pg" "$pg_port" ${pg_standby:+"-c synchronous_standby_names='*'"}
}
pg_kill() { pg_ctl_stop "$work/pg"; }
# The server with its data in DIR/data and its socket in DIR, on PORT (more server options after).
pg_ctl_start() { # DIR PORT [options...]
  local dir=$1 port=$2
  shift 2
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses='' -c synchronous_commit=on -c fsync=on -c max_connections=200 $*" start >/dev/null
}
pg_ctl_stop() { "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$1/data" -m immediate stop >/dev/null; } # DIR
pg_psql() { "$pg_bin/psql" -h "$work/pg" -p "$pg_port" -U postgres -qAt "$@"; }

# A standby of the running server in $work/pg-standby, on the next port, streaming and synchronous
# from here on (the server is restarted with synchronous_standby_names): a commit returns once the
# standby has it on disk. $database then names both, and a node connects to whichever takes writes.
# Call before the nodes start. After pg_kill, pg_promote makes the standby the primary (a failover).
pg_standby_start() {
  pg_standby=$work/pg-standby
  mkdir -p "$pg_standby"
  [[ $(id -u) == 0 ]] && chown postgres "$pg_standby"
  "${pg_as[@]}" "$pg_bin/pg_basebackup" -h "$work/pg" -p "$pg_port" -U postgres -D "$pg_standby/data" \
    -R -X stream -c fast --no-sync
  pg_ctl_start "$pg_standby" $((pg_port + 1))
  pg_kill
  pg_start
  database="host=$work/pg,$pg_standby port=$pg_port,$((pg_port + 1)) user=postgres dbname=postgres target_session_attrs=read-write"
}
pg_promote() {
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_standby/data" -w promote >/dev/null
}
# keep_work: see tests/support/run.sh (a script that makes its own $work has none).
trap 'kill -9 $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; pg_kill 2>/dev/null || true
      [[ -n ${pg_standby:-} ]] && { pg_ctl_stop "$pg_standby" 2>/dev/null || true; }
      if declare -F keep_work >/dev/null; then keep_work; fi; rm -rf "$work"' EXIT
[[ -x $pg_bin/initdb ]] || { echo "$0 needs PostgreSQL's server: apt-get install postgresql" >&2; exit 1; }

# Node N of the cluster: terminals on 127.0.0.1:$((front + N)), admin on $((admin + N)); its pid in
# node_pid[N]. The configuration is $work/acquiro.toml (switch_config) with the node's own addresses.
declare -A node_pid
node_start() { # N
  local n=$1
  sed -e "s/127.0.0.1:$front\"/127.0.0.1:$((front + n))\"/" -e "s/127.0.0.1:$admin\"/127.0.0.1:$((admin + n))\"/" \
    "$work/acquiro.toml" >"$work/node$n.toml"
  ACQUIRO_CARD_KEY=00112233445566778899aabbccddeeff RUST_LOG=warn,switch=info \
    $bin serve --config "$work/node$n.toml" --node "node$n" --database "$database" 2>>"$work/node$n.log" &
  node_pid[$n]=$!
}

# The start of an HAProxy configuration: TCP mode, terminals on $front, to backend BACKEND.
haproxy_head() { # BACKEND
  cat <<CFG
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
frontend terminals
  bind 127.0.0.1:$front
  default_backend $1
CFG
}

# HAProxy in TCP mode on $front, to nodes 1..N, each checked through its /readyz.
haproxy_start() { # N
  {
    haproxy_head nodes
    cat <<CFG
backend nodes
  balance roundrobin
  option httpchk GET /readyz
  http-check disable-on-404
  default-server inter 500ms fall 1 rise 1 on-marked-down shutdown-sessions
CFG
    for n in $(seq "$1"); do
      echo "  server node$n 127.0.0.1:$((front + n)) check port $((admin + n))"
    done
  } >"$work/haproxy.cfg"
  haproxy -f "$work/haproxy.cfg" -db 2>"$work/haproxy.log" &
}
