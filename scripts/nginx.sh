#!/usr/bin/env bash
# A private nginx in front of hubbub nodes for tests: its own directory (config, pid file, logs,
# temp files), a loopback port, no system service involved. The site config is deploy/nginx.conf
# (the file docs/deploy.md shows operators) with its placeholders filled in, wrapped in a minimal
# main config of this script's own. Stopped by the PID in its pid file (never by process name).
#
#   bash scripts/nginx.sh start DIR PORT UPSTREAM...   # UPSTREAM = host:port of one node
#   bash scripts/nginx.sh stop DIR
#
# `start` prints http://127.0.0.1:PORT once nginx listens there. DIR holds nginx.conf (the main
# config), hubbub.conf (the filled-in site), nginx.pid, error.log, access.log and temp/. Installs
# the Debian package `nginx` when the binary is missing (the package's own service is not used).
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT UPSTREAM... | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$2
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"

nginx_bin() {
  local bin
  # Debian installs it in /usr/sbin, which is not on every user's PATH.
  bin=$(command -v nginx || true)
  if [ -z "$bin" ] && [ -x /usr/sbin/nginx ]; then
    bin=/usr/sbin/nginx
  fi
  if [ -z "$bin" ]; then
    apt_install nginx.sh nginx
    bin=$(command -v nginx || echo /usr/sbin/nginx)
  fi
  echo "$bin"
}

# deploy/nginx.conf with @LISTEN@ filled in and its @NODE@ line written once per upstream.
site_config() {
  local listen=$1; shift
  awk -v listen="$listen" -v nodes="$*" '
    /@NODE@/ {
      n = split(nodes, node, " ")
      for (i = 1; i <= n; i++) { line = $0; gsub(/@NODE@/, node[i], line); print line }
      next
    }
    { gsub(/@LISTEN@/, listen); print }
  ' "$here/deploy/nginx.conf"
}

start() {
  local bin port pid
  [ $# -ge 2 ] || usage
  port=$1; shift
  bin=$(nginx_bin)
  mkdir -p "$dir/temp"
  dir=$(cd "$dir" && pwd)
  if running_pid "$dir/nginx.pid" >/dev/null; then
    echo "nginx.sh: nginx already runs in $dir (stop it first)" >&2
    return 1
  fi
  # As root the workers run as nobody: let them reach their temp directories (traverse only).
  [ "$(id -u)" != 0 ] || chmod go+x "$dir"
  site_config "127.0.0.1:$port" "$@" >"$dir/hubbub.conf"
  cat >"$dir/nginx.conf" <<CONF
# Written by scripts/nginx.sh: a private instance, everything under $dir.
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_processes 1;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    # Which node served each request: what a failing test needs to know.
    log_format upstream '\$remote_addr "\$request" \$status upstream=\$upstream_addr';
    access_log $dir/access.log upstream;
    client_body_temp_path $dir/temp/body;
    proxy_temp_path $dir/temp/proxy;
    fastcgi_temp_path $dir/temp/fastcgi;
    uwsgi_temp_path $dir/temp/uwsgi;
    scgi_temp_path $dir/temp/scgi;
    include $dir/hubbub.conf;
}
CONF
  rm -f "$dir/nginx.pid"
  # The listening socket is bound before nginx daemonizes; the daemon then writes its pid file.
  "$bin" -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" || {
    cat "$dir/error.log" >&2 || true
    return 1
  }
  for _ in $(seq 1 100); do
    if pid=$(running_pid "$dir/nginx.pid"); then
      echo "http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.05
  done
  echo "nginx.sh: nginx wrote no pid file in $dir" >&2
  cat "$dir/error.log" >&2 || true
  return 1
}

stop() {
  local pid workers
  pid=$(running_pid "$dir/nginx.pid") || return 0
  workers=$(ps -o pid= --ppid "$pid" || true)
  # TERM is nginx's fast shutdown: open WebSockets are cut, not waited for (QUIT would wait).
  # A master that would not stop is killed with its workers (its children, by PID).
  # shellcheck disable=SC2086 # one PID a word
  stop_pid "$pid" "$dir/nginx.pid" $workers
}

case "$action" in
  start) shift 2; start "$@" ;;
  stop) stop ;;
  *) usage ;;
esac
