# Sourced by the scripts that run the real binaries (tests/chaos.sh, tests/soak.sh, benches/e2e.sh), from
# the repository's root: builds them, makes a work directory that is removed on exit with every process
# the script started, writes the switch configuration and waits for ports.
# ACQUIRO_PROFILE=dev: the test build's binary (what CI's short smoke of the chaos scripts runs, after
# `cargo test` built it) instead of a release build.
if [[ ${ACQUIRO_PROFILE:-release} == dev ]]; then
  cargo build -q
  bin=$PWD/target/debug/acquiro
else
  cargo build --release -q
  bin=$PWD/target/release/acquiro
fi
work=$(mktemp -d)
# ACQUIRO_KEEP=DIR: before the work directory goes, what is worth reading after the run (every process's
# log, PostgreSQL's among them, each load's report, the configurations, a bench's table) is copied to
# DIR, so that a stall or a failure seen in a bench, chaos or soak run can still be looked into.
keep_work() {
  [[ -n ${ACQUIRO_KEEP:-} && -d $work ]] || return 0
  local to
  to=$(mkdir -p "$ACQUIRO_KEEP" && cd "$ACQUIRO_KEEP" && pwd)
  (cd "$work" && find . -maxdepth 3 -type f \( -name '*.log' -o -name log -o -name '*.report' \
    -o -name '*.toml' -o -name '*.cfg' -o -name '*.metrics' -o -name table \) -exec cp --parents {} "$to" \;)
  echo "logs and reports kept in $ACQUIRO_KEEP" >&2
}
trap 'kill -9 $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; keep_work; rm -rf "$work"' EXIT
export RUST_LOG=warn

# A switch configuration in FILE: the admin endpoint on $admin; one listener on $front that takes the
# default 1 000 connections, or $terminals and a few more if that is larger; issuer "visa" with two
# links to $issuer. The TOML on stdin follows (more issuer keys first, then whole sections).
switch_config() { # file
  local extra
  extra=$(cat)
  cat >"$1" <<TOML
admin_listen = "127.0.0.1:$admin"
[[listeners]]
address = "127.0.0.1:$front"
max_connections = $((${terminals:-0} + 10 > 1000 ? ${terminals:-0} + 10 : 1000))
[[issuers]]
name = "visa"
hosts = ["127.0.0.1:$issuer"]
connections_per_host = 2
$extra
TOML
}

until_listening() { # port: waits (30 s at most) until something listens on it
  local tries=1500
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    (( --tries )) || { echo "nothing listens on port $1" >&2; exit 1; }
    sleep 0.02
  done
}

# A chaos script's `lifecycle` argument (or nothing, for purchases and authorizations only): sets the
# extra flags of the issuer simulator (`issuer_flags`: 96 to 5 % of the advices and reversals it gets,
# 10 % of the requests approved in part, its settlement written to $work/issuer.csv) and of the
# terminals (`terminal_flags`: every message of the life cycle, a settlement each at the end).
lifecycle_flags() { # "" or lifecycle
  issuer_flags=() terminal_flags=()
  case $1 in
    "") ;;
    lifecycle)
      printf 'refuse_share = 0.05\n[[rules]]\nshare = 0.1\naction = "partial"\n' >"$work/rules.toml"
      issuer_flags=(--rules "$work/rules.toml" --settlement "$work/issuer.csv")
      terminal_flags=(--lifecycle) ;;
    *) echo "the last argument is lifecycle, or nothing" >&2; exit 2 ;;
  esac
}

# With `lifecycle`: a terminal is found out of balance at its settlement only when it miscounted on
# purpose (`sim terminals` adds one debit of 100 to its totals). Any other difference between its
# totals and the switch's record of its batch, as the switch logged them (LOG...), is a fault: exits
# 1 naming it.
settlements_balance() { # LOG...
  [[ -f $work/issuer.csv ]] || return 0
  { grep -h 'terminal out of balance' "$@" || true; } | awk '
    { s = substr($0, index($0, "ours=")); n = 0
      while (match(s, /[0-9]+/)) { v[++n] = substr(s, RSTART, RLENGTH) + 0; s = substr(s, RSTART + RLENGTH) }
      total++
      if (!(n == 8 && v[5] == v[1] && v[6] == v[2] + 1 && v[7] == v[3] && v[8] == v[4] + 100)) {
        bad++; print "out of balance, not by a deliberate miscount: " $0 > "/dev/stderr"
      } }
    END { printf "settlements out of balance: %d, %d of them not by a deliberate miscount\n", total, bad; exit bad > 0 }'
}

# With `lifecycle`: the merchants' settlement read from the journal (SOURCE: --journal-dir DIR or
# --database URL) must match the issuer's, RRN by RRN; exits 1 on any difference.
settlement_reconciles() { # SOURCE...
  [[ -f $work/issuer.csv ]] || return 0
  $bin settlement reconcile "$@" --issuer-file "$work/issuer.csv" >"$work/differences.csv" || {
    head -20 "$work/differences.csv"
    exit 1
  }
}
