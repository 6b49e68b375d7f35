# Helpers shared by scripts/nginx.sh, redis.sh and pg.sh (sourced, not run): installing a
# missing Debian package, a free loopback port, and a process found and stopped by the PID in
# its pid file (never by process name). Each function takes the calling script's name for its
# messages where it prints any.

# apt_install SCRIPT PACKAGE: installs the Debian package PACKAGE (its service is not used).
apt_install() {
  echo "$1: installing $2" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
}

# free_port SCRIPT: a loopback port nothing listens on, below the kernel's ephemeral range: a
# test may stop a server and start it again on the same port, and a port in that range may
# meanwhile have become the local end of some outgoing connection, which makes the bind fail.
# From 20000 up: the Rust tests give their own servers ports below that (tests/common/mod.rs,
# free_port), so a port one of them has handed out and not bound yet is never taken here.
free_port() {
  local port low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 21000 ] || low=32768
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % (low - 20000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "$1: no free port found" >&2
  return 1
}

# alive PID: whether process PID still runs. An exited process that is not reaped yet (a zombie)
# does not: the servers these scripts start daemonize, so their parent is the machine's init,
# which may reap them a second or two late (here it did), and `kill -0` succeeds on a zombie.
alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  # /proc/PID/stat: "PID (COMM) STATE ..."; COMM may hold spaces, so cut after the last ')'.
  state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# running_pid PIDFILE: prints the PID in PIDFILE if that process still runs; fails otherwise.
running_pid() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -n "$pid" ] && alive "$pid" && echo "$pid"
}

# stop_pid PID PIDFILE [PID...]: SIGTERM to PID, then waits until it is gone (at most 10 s,
# then SIGKILL to it and to the other PIDs given, its children); removes PIDFILE.
stop_pid() {
  local pid=$1 pidfile=$2
  shift 2
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    alive "$pid" || { rm -f "$pidfile"; return 0; }
    sleep 0.1
  done
  kill -9 "$pid" "$@" 2>/dev/null || true
  rm -f "$pidfile"
}
