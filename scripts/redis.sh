#!/usr/bin/env bash
# A private Redis for tests: its own directory, loopback port and pidfile, no persistence
# (`--save '' --appendonly no`), no system service involved. Stopped by the PID in its pidfile
# (never by process name).
#
#   url=$(bash scripts/redis.sh start DIR)   # prints redis://127.0.0.1:PORT
#   bash scripts/redis.sh stop DIR
#
# DIR holds redis.pid, log and url. Starting again on a DIR that was used before reuses its port
# (DIR/port), so a test can stop Redis and bring it back where the nodes expect it. Installs the
# Debian package `redis-server` when the binary is missing.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

redis_bin() {
  if ! command -v redis-server >/dev/null 2>&1; then
    apt_install redis.sh redis-server
  fi
  command -v redis-server
}

start() {
  local bin port
  bin=$(redis_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if running_pid "$dir/redis.pid" >/dev/null; then
    echo "redis.sh: a server already runs in $dir (stop it first)" >&2
    return 1
  fi
  if [ -s "$dir/port" ]; then
    port=$(cat "$dir/port")
  else
    port=$(free_port redis.sh)
    echo "$port" >"$dir/port"
  fi
  "$bin" --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/log" >&2
  # Ready once it answers; the pidfile is written by then.
  for _ in $(seq 1 100); do
    if redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null | grep -q PONG; then
      echo "redis://127.0.0.1:$port" | tee "$dir/url"
      return 0
    fi
    sleep 0.1
  done
  echo "redis.sh: redis did not answer on port $port" >&2
  cat "$dir/log" >&2 || true
  return 1
}

stop() {
  local pid
  pid=$(running_pid "$dir/redis.pid") || return 0
  stop_pid "$pid" "$dir/redis.pid"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
