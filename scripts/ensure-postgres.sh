#!/usr/bin/env bash
# Prints the URL of a PostgreSQL database for the tests (user postgres, trust auth,
# database `test`). Uses the one on 127.0.0.1:5432 when it answers; otherwise starts a
# throwaway server (Debian's postgresql: initdb + pg_ctl on a temporary directory and
# port) that stops when the process named by $1 (default: the caller) exits.
set -euo pipefail
log() { printf '[postgres] %s\n' "$*" >&2; }

if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
  && psql -h 127.0.0.1 -U postgres -d test -Atqc 'select 1' >/dev/null 2>&1; then
  echo "postgres://postgres@127.0.0.1:5432/test"
  exit 0
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  log "installing Debian's postgresql"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi

dir=$(mktemp -d /tmp/annals-pg.XXXXXX)
port=$(( 40000 + RANDOM % 20000 ))
run_as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
log "starting a throwaway server in $dir on port $port"
run_as_postgres "$bin/initdb" -D "$dir/data" -U postgres -A trust >/dev/null
run_as_postgres "$bin/pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -l "$dir/log" -w start >/dev/null
psql -h 127.0.0.1 -p "$port" -U postgres -qc 'create database test' >/dev/null

# Stop it when the caller exits.
watch=${1:-$PPID}
( while kill -0 "$watch" 2>/dev/null; do sleep 2; done
  run_as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1
  rm -rf "$dir" ) >/dev/null 2>&1 &
echo "postgres://postgres@127.0.0.1:$port/test"
