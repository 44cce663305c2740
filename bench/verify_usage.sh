#!/usr/bin/env bash
# Verify throughput with usage recording on (the default) against the same server with
# `--no-usage`, in one run: ROUNDS rounds, each round both servers once under the same wrk
# load (order alternating, so drift on a shared machine hits both), medians of the rounds.
# Issue 19's goal: usage on stays within 10% of usage off. Prints a Markdown section;
# appends it to docs/benchmarks.md (or $REPORT) unless NO_REPORT=1.
#
#   bench/verify_usage.sh                          # defaults below
#   ROUNDS=7 DURATION=10s CONNS=32 N=1000 bench/verify_usage.sh
#
# Server and load generator share the machine (loopback only). Not a test: numbers vary;
# read the ratio, not the absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
PORT=${PORT:-17451}
FLUSH=${FLUSH:-2s}
TARGET=${CARGO_TARGET_DIR:-target}

for tool in wrk curl; do
  command -v "$tool" >/dev/null || { echo "bench/verify_usage.sh: needs $tool (apt-get install $tool)" >&2; exit 2; }
done
cargo build --release --bin keyward --example bench_store >&2
BIN="$TARGET/release/keyward"
HELPER="$TARGET/release/examples/bench_store"

WORK=$(mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" token create bench-write --role write --tokens "$WORK/tokens.yaml" >"$WORK/write.token"
"$BIN" token create bench-app --role verify --tokens "$WORK/tokens.yaml" >"$WORK/verify.token"
URL="http://127.0.0.1:$PORT"

start() { # extra serve flags...
  "$BIN" -C "$WORK" serve --listen "127.0.0.1:$PORT" --database "sqlite:$WORK/serve.db" \
    --tokens "$WORK/tokens.yaml" "$@" 2>>"$WORK/serve.log" &
  PID=$!
  for _ in $(seq 100); do curl -fs "$URL/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "serve did not start; its log:" >&2; cat "$WORK/serve.log" >&2; exit 1
}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
load() { # output file
  BENCH_SECRETS="$WORK/secrets.txt" BENCH_TOKEN=$(cat "$WORK/verify.token") \
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/verify.lua "$URL/v1/verify" >"$1"
  awk '/^Requests\/sec:/ {printf "%s ", $2} /^p99_us=/ {split($0, a, "="); printf "%.2f\n", a[2] / 1000}' "$1"
}

start --no-usage
KEYWARD_BENCH_TOKEN=$(cat "$WORK/write.token") "$HELPER" create "$URL" "$N" "$WORK/secrets.txt" >&2
stop

: >"$WORK/on.txt"
: >"$WORK/off.txt"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then order="on off"; else order="off on"; fi
  for mode in $order; do
    if [ "$mode" = on ]; then start --usage-flush "$FLUSH"; else start --no-usage; fi
    line=$(load "$WORK/wrk-$mode-$r.txt")
    stop
    echo "$line" >>"$WORK/$mode.txt"
    echo "round $r usage $mode: $line (requests/s, p99 ms)" >&2
  done
done

median() { # file column
  sort -g -k"$2","$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'
}
ON_RPS=$(median "$WORK/on.txt" 1);  ON_P99=$(median "$WORK/on.txt" 2)
OFF_RPS=$(median "$WORK/off.txt" 1); OFF_P99=$(median "$WORK/off.txt" 2)
RATIO=$(awk -v a="$ON_RPS" -v b="$OFF_RPS" 'BEGIN { printf "%.1f", 100 * a / b }')
VERDICT=$(awk -v a="$ON_RPS" -v b="$OFF_RPS" 'BEGIN { print (a >= 0.9 * b) ? "met" : "**NOT met**" }')
# The usage the last "on" round recorded: proof that it was really counting.
RECORDED=$(sqlite3 "$WORK/serve.db" 'SELECT COALESCE(SUM(calls), 0) FROM key_usage' 2>/dev/null || echo "?")

section=$(cat <<EOF

### Verify with usage recording on vs off (issue 19), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, keyward $(git rev-parse --short HEAD 2>/dev/null || echo '?')

Command: \`N=$N ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS THREADS=$THREADS FLUSH=$FLUSH bench/verify_usage.sh\`
(release build, SQLite, $N keys with quotas, wrk on loopback; load average at the end
$(cut -d' ' -f1-3 /proc/loadavg); medians of $ROUNDS rounds, the two servers alternating).

| serve | requests/s | p99 latency |
|---|---:|---:|
| usage on (\`--usage-flush $FLUSH\`, the default) | $ON_RPS | $ON_P99 ms |
| \`--no-usage\` | $OFF_RPS | $OFF_P99 ms |

usage on / usage off: **${RATIO}%** of the throughput (goal: at least 90%): $VERDICT.
Calls the usage-on servers recorded in the store: $RECORDED.
EOF
)
echo "$section"
if [ "${NO_REPORT:-0}" != 1 ]; then echo "$section" >>"${REPORT:-docs/benchmarks.md}"; fi
