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

redis_bin() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "redis.sh: installing redis-server" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  fi
  command -v redis-server
}

# A loopback port nothing listens on, below the kernel's ephemeral range: a test restarts Redis
# on the same port, and a port in that range may meanwhile be the local end of some outgoing
# connection, which makes the bind fail.
free_port() {
  local port low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 11000 ] || low=32768
  for _ in $(seq 1 50); do
    port=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "redis.sh: no free port found" >&2
  return 1
}

# The PID in DIR/redis.pid if that process still runs.
running_pid() {
  local pid
  [ -e "$dir/redis.pid" ] || return 1
  pid=$(cat "$dir/redis.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  local bin port
  bin=$(redis_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if running_pid >/dev/null; then
    echo "redis.sh: a server already runs in $dir (stop it first)" >&2
    return 1
  fi
  if [ -s "$dir/port" ]; then
    port=$(cat "$dir/port")
  else
    port=$(free_port)
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
  pid=$(running_pid) || return 0
  kill "$pid"
  # Gone once the PID no longer runs (at most 10 s, then SIGKILL).
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$dir/redis.pid"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/redis.pid"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
