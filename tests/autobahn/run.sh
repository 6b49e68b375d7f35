#!/usr/bin/env bash
# Autobahn|Testsuite conformance of the WebSocket stack, run against /echo of the real binary.
#
# The original autobahntestsuite needs Python 2.7; kosoku (PyPI) drives the same 517 case files
# on Python 3. Passes when no case of sections 1-11 is FAILED: OK, NON-STRICT and INFORMATIONAL
# are accepted. hubbub does not negotiate permessage-deflate, so sections 12 and 13 come back
# UNIMPLEMENTED; they are reported, not judged (see docs/conformance.md).
#
# Env: HUBBUB_BIN (default target/release/hubbub), AUTOBAHN_VENV (default target/autobahn-venv),
#      AUTOBAHN_OUT (default target/autobahn), AUTOBAHN_PARALLELISM (default 4).
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${HUBBUB_BIN:-$PWD/target/release/hubbub}
VENV=${AUTOBAHN_VENV:-$PWD/target/autobahn-venv}
OUT=${AUTOBAHN_OUT:-$PWD/target/autobahn}
PARALLELISM=${AUTOBAHN_PARALLELISM:-4}
KOSOKU_VERSION=0.1.0

[ -x "$BIN" ] || { echo "hubbub binary not found at $BIN (cargo build --release)" >&2; exit 1; }

if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x "$VENV/bin/kosoku" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "kosoku==$KOSOKU_VERSION"
fi

DATA=$(mktemp -d)
rm -rf "$OUT" && mkdir -p "$OUT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
"$BIN" serve --addr "127.0.0.1:$PORT" --data "$DATA" >"$OUT/server.log" 2>&1 &
SERVER=$!
cleanup() {
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -rf "$DATA"
}
trap cleanup EXIT

for _ in $(seq 200); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  kill -0 "$SERVER" 2>/dev/null || { echo "hubbub exited early:" >&2; cat "$OUT/server.log" >&2; exit 1; }
  sleep 0.05
done

echo "kosoku $KOSOKU_VERSION against ws://127.0.0.1:$PORT/echo (parallelism $PARALLELISM)"
start=$(date +%s)
# kosoku exits non-zero when any case's close behaviour is not clean; the verdict below is ours.
"$VENV/bin/kosoku" "ws://127.0.0.1:$PORT/echo" -p "$PARALLELISM" -o "$OUT/reports" >"$OUT/kosoku.log" 2>&1 || true
echo "suite took $(( $(date +%s) - start )) s; reports in $OUT/reports"

kill -0 "$SERVER" 2>/dev/null || { echo "hubbub died during the suite" >&2; tail -50 "$OUT/server.log" >&2; exit 1; }

python3 - "$OUT/reports/index.json" <<'PY'
import collections, json, sys

with open(sys.argv[1]) as f:
    index = json.load(f)
cases = next(iter(index.values()))
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}
counts = collections.defaultdict(collections.Counter)
failed = []
for case, result in cases.items():
    section = int(case.split(".")[0])
    behavior = result["behavior"]
    counts[section][behavior] += 1
    if section <= 11 and behavior not in ACCEPTED:
        failed.append((case, behavior, result.get("behaviorClose"), result.get("remoteCloseCode")))

columns = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
others = sorted({b for c in counts.values() for b in c} - set(columns))
columns += others
print("| section | " + " | ".join(columns) + " | total |")
print("|---|" + "---|" * (len(columns) + 1))
for section in sorted(counts):
    row = counts[section]
    print(f"| {section} | " + " | ".join(str(row.get(c, 0)) for c in columns) + f" | {sum(row.values())} |")
print(f"{len(cases)} cases")
if not cases:
    print("no cases ran", file=sys.stderr)
    sys.exit(1)
if failed:
    for case in sorted(failed, key=lambda c: [int(p) for p in c[0].split(".")]):
        print("FAILED: %s behavior=%s close=%s code=%s" % case, file=sys.stderr)
    sys.exit(1)
print("autobahn: every case of sections 1-11 is OK, NON-STRICT or INFORMATIONAL")
PY
