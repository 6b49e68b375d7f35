#!/usr/bin/env bash
# The one command of the hubbub benchmark (issue #5): installs what is missing, builds hubbub,
# the load generator and the peer servers, then runs every scenario against hubbub and every
# peer in the same run, servers pinned to core 0 and the load generator to core 1, and writes
# docs/bench/results.json, docs/bench/*.svg and the results section of docs/benchmarks.md.
#
#   bench/run.sh            full plan: up to 19,000 connections (about 10-15 minutes)
#   bench/run.sh --quick    quick plan: up to 2,000 connections (a few minutes)
#   bench/run.sh --quick --servers hubbub,node-ws --scenarios fanout,echo   (subset)
#   bench/run.sh --smoke    the test suite's end-to-end check (seconds; its numbers mean nothing)
#   bench/run.sh --cluster --quick   hubbub alone in five configurations (SQLite; PostgreSQL;
#                           1, 2, 3 nodes on PostgreSQL + Redis) on a private PostgreSQL and
#                           Redis (scripts/pg.sh, scripts/redis.sh, which install them when
#                           missing): docs/bench/cluster.json, docs/bench/cluster_saturation.svg
#                           and the cluster section of docs/benchmarks.md (the peer results are
#                           left as they are)
#
# Every server and worker process it starts is stopped by PID when its scenario ends.
set -euo pipefail
cd "$(dirname "$0")/.."

size=full
cluster=0
extra=()
for arg in "$@"; do
  case "$arg" in
    --quick) size=quick ;;
    --full) size=full ;;
    --smoke|--tiny) size=smoke ;;
    --cluster) cluster=1 ;;
    *) extra+=("$arg") ;;
  esac
done

# 1. System packages the peers and the pinning need (Debian). The cluster run needs no peer;
#    its PostgreSQL and Redis are installed by scripts/pg.sh and scripts/redis.sh.
need=()
if [ "$cluster" = 0 ]; then
  command -v go >/dev/null || need+=(golang-go)
  [ -d /usr/share/gocode/src/github.com/gorilla/websocket ] || need+=(golang-github-gorilla-websocket-dev)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
fi
command -v taskset >/dev/null || need+=(util-linux)
if [ "${#need[@]}" -gt 0 ]; then
  echo "[run.sh] installing: ${need[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

if [ "$cluster" = 0 ]; then
  # 2. Node peers from the npm registry, exactly as locked.
  for peer in node-ws socketio; do
    (cd "bench/peers/$peer" && npm ci --no-audit --no-fund --loglevel=error)
  done

  # 3. Go peer, GOPATH mode against Debian's gorilla/websocket (no module proxy here).
  mkdir -p target/peers
  GO111MODULE=off GOFLAGS= GOPATH="$PWD/target/gopath:/usr/share/gocode" GOCACHE="$PWD/target/gocache" \
    go build -o target/peers/go-gorilla ./bench/peers/go-gorilla
fi

# 4. hubbub and the load generator.
cargo build --release -p hubbub -p hubbub-bench

# 5. Up to 19,000 connections: raise the open-file limit to the hard limit (inherited by
#    the servers and the worker processes).
ulimit -n "$(ulimit -Hn)"

# 6. Run. The coordinator and its workers sit on core 1; it pins each server to core 0. Both
#    run at niceness -10 when we are root, so that other work on a shared machine (builds)
#    takes less of the measured cores; every server gets the same treatment.
#    The kernel's ksoftirqd threads get the same -10 for the duration of the run: on loopback,
#    once a burst of writes exhausts the softirq budget, packet delivery continues in ksoftirqd,
#    and at the default niceness a busy machine delays every server's deliveries by hundreds of
#    milliseconds (measured: node-ws p99 at 2,000 members 3,009 ms → 52 ms). Restored on exit.
nice_args=()
launcher=(taskset -c 1)
if [ "$(id -u)" = 0 ]; then
  nice_args=(--nice -10)
  launcher=(nice -n -10 taskset -c 1)
  softirq_pids=$(pgrep -x 'ksoftirqd/[0-9]+' || true)
  if [ -n "$softirq_pids" ]; then
    # shellcheck disable=SC2086
    renice -n -10 -p $softirq_pids >/dev/null
    # shellcheck disable=SC2064
    trap "renice -n 0 -p $(echo $softirq_pids) >/dev/null 2>&1 || true" EXIT
  fi
fi
#    The cluster run pins every server process of a configuration (its hubbub nodes,
#    PostgreSQL and Redis) to core 0 together, the generator to core 1, like the single servers.
out=docs/bench/results.json
if [ "$cluster" = 1 ]; then
  out=docs/bench/cluster.json
  export HUBBUB_BENCH_COMMAND="bench/run.sh --cluster --$size${extra[*]:+ ${extra[*]}}"
  extra=(--servers hubbub --scenarios cluster "${extra[@]}")
else
  export HUBBUB_BENCH_COMMAND="bench/run.sh --$size${extra[*]:+ ${extra[*]}}"
fi
"${launcher[@]}" target/release/hubbub-bench suite \
  --size "$size" --pin 0 "${nice_args[@]}" \
  --hubbub-bin target/release/hubbub --go-bin target/peers/go-gorilla --peers-dir bench/peers \
  --out "$out" --md docs/benchmarks.md --log-dir target/bench-logs \
  "${extra[@]}"
echo "[run.sh] wrote docs/benchmarks.md, $out and docs/bench/*.svg"
