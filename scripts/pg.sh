#!/usr/bin/env bash
# A private PostgreSQL for tests: its own data directory, unix socket directory and free loopback
# port, trust auth on loopback only, no system service involved. Stopped by `pg_ctl stop`, which
# signals the postmaster by the PID in its own postmaster.pid (never by process name).
#
#   url=$(bash scripts/pg.sh start DIR)   # prints postgres://postgres@127.0.0.1:PORT/hubbub
#   bash scripts/pg.sh stop DIR
#
# DIR holds data/ (the cluster), sock/ (its unix socket), log and url. Installs the Debian package
# `postgresql` when initdb is missing. As root, the server runs as the `postgres` user (PostgreSQL
# refuses to run as root), so DIR is handed to that user.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

# The newest installed server's binaries (initdb, pg_ctl, postgres are not on PATH on Debian).
pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    apt_install pg.sh postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$bin"
}

# Runs a PostgreSQL command as the user that owns the cluster.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

start() {
  local bin port
  bin=$(pg_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -e "$dir/data/postmaster.pid" ]; then
    echo "pg.sh: a server already runs in $dir (stop it first)" >&2
    return 1
  fi
  mkdir -p "$dir/sock"
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres: "$dir"
    if ! runuser -u postgres -- test -w "$dir"; then
      echo "pg.sh: user postgres cannot write $dir (a parent directory is closed to it)" >&2
      return 1
    fi
  fi
  if [ ! -e "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=trust --no-sync >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2
      return 1
    }
  fi
  port=$(free_port pg.sh)
  # Loopback only; the socket lives in DIR so nothing touches /var/run/postgresql.
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir/sock' -c max_connections=300" \
    start >&2 || {
    cat "$dir/log" >&2
    return 1
  }
  as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE DATABASE hubbub" >&2
  echo "postgres://postgres@127.0.0.1:$port/hubbub" | tee "$dir/url"
}

stop() {
  local bin
  [ -e "$dir/data/postmaster.pid" ] || return 0
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
