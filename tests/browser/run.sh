#!/usr/bin/env bash
# Runs the hubbub web client's browser tests in headless Chromium.
#
#   bash tests/browser/run.sh            # from anywhere in the repo
#   HUBBUB_BIN=/path/to/hubbub bash tests/browser/run.sh
#   bash tests/browser/run.sh rooms.test.mjs   # only some test files
#
# Installs what is missing: Debian's chromium and an emoji font (apt-get), playwright-core (npm ci), and the
# release binary (cargo build --release, unless HUBBUB_BIN names one). The tests start the real
# hubbub binary on 127.0.0.1 and write docs/screenshots/*.png.
#
#   HUBBUB_LOG=debug bash tests/browser/run.sh rooms.test.mjs   # debug server logs in failure dumps
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "run.sh: $chromium missing, installing Debian's chromium" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

# Emoji (reactions, the picker) need a colour emoji font, or the screenshots show empty boxes.
if ! fc-list 2>/dev/null | grep -qi emoji; then
  echo "run.sh: no emoji font, installing Debian's fonts-noto-color-emoji" >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-noto-color-emoji || \
    echo "run.sh: could not install an emoji font; emoji will show as boxes in screenshots" >&2
fi

if [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "run.sh: installing playwright-core (npm ci)" >&2
  (cd "$here" && npm ci --no-audit --no-fund)
fi

# The web client is embedded in the binary at compile time, so a binary older than web/ would
# test old files. Without HUBBUB_BIN, (re)build it: cargo does nothing when it is up to date.
if [ -n "${HUBBUB_BIN:-}" ]; then
  bin="$HUBBUB_BIN"
  case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
  if [ ! -x "$bin" ]; then
    echo "run.sh: HUBBUB_BIN=$HUBBUB_BIN is not an executable" >&2
    exit 1
  fi
else
  bin="$root/target/release/hubbub"
  echo "run.sh: cargo build --release --bin hubbub" >&2
  (cd "$root" && cargo build --release --bin hubbub)
fi
export HUBBUB_BIN="$bin"

cd "$here"
if [ "$#" -gt 0 ]; then
  files=("$@")
else
  files=(*.test.mjs)
fi
# One file at a time: each starts its own servers and browsers, and the machine has 2 cores.
# No retries: a failing file fails the suite the first time. A failing test writes every page's
# WebSocket frames and the servers' logs to tests/browser/failures/ (run with HUBBUB_LOG=debug
# for the hub's debug lines).
status=0
for f in "${files[@]}"; do
  node --test --test-reporter=spec --test-concurrency=1 --test-timeout=180000 "$f" || status=1
done
exit "$status"
