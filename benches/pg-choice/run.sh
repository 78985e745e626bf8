#!/usr/bin/env bash
# Cluster mode's group commit against a throw-away PostgreSQL (Debian's package `postgresql`): the
# database's own floor for the write pattern (pgbench with floor.sql, one and two writers), then each
# candidate client (src/main.rs). Everything runs on this machine; the server is removed on exit.
#
#   benches/pg-choice/run.sh [seconds for pgbench, default 10]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
as=()
if [[ $(id -u) == 0 ]]; then
  chown postgres "$dir"
  as=(runuser -u postgres --)
fi
trap '"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
"${as[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-p $port -k $dir -c listen_addresses='' -c synchronous_commit=on -c fsync=on" start >/dev/null
psql() { "$bin/psql" -h "$dir" -p "$port" -U postgres -q -v ON_ERROR_STOP=1 "$@"; }
psql -f schema.sql
echo "$(nproc) cores; PostgreSQL $("$bin/postgres" --version | awk '{print $3}'); synchronous_commit = on"
echo "floor: pgbench, floor.sql (a batch of 16 transactions per commit), ${secs} s"
for clients in 1 2; do
  "$bin/pgbench" -h "$dir" -p "$port" -U postgres -n -f floor.sql -c "$clients" -j "$clients" -T "$secs" postgres 2>"$dir/pgbench.err" |
    awk -v c="$clients" '/^tps/ { printf "  %d writer(s): %.0f batches/s, %.0f transactions/s\n", c, $3, $3 * 16 }'
done
[[ -s $dir/pgbench.err ]] && grep -m3 -i error "$dir/pgbench.err" || true
psql -c "TRUNCATE records, claims"
cargo build --release -q
PG="host=$dir port=$port user=postgres dbname=postgres" target/release/pg-choice
