#!/usr/bin/env bash
# Verify throughput of `keyward serve` on SQLite, against the machine's ceiling (a bare
# axum handler answering 200 under the same load), and the time to list LIST_KEYS keys
# through the http store kind. Appends the results to docs/benchmarks.md.
#
#   bench/verify.sh                       # defaults below
#   N=1000 DURATION=20s CONNS=32 LIST_KEYS=100000 bench/verify.sh
#   REPORT=/tmp/x.md bench/verify.sh      # append the section there instead (bench/all.sh)
#
# Server and load generator share the machine (loopback only). Not a test: numbers vary.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
DURATION=${DURATION:-15s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-1}
LIST_KEYS=${LIST_KEYS:-100000}
PORT=${PORT:-17450}
TARGET=${CARGO_TARGET_DIR:-target}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
cargo build --release --bin keyward --example bench_store >&2
BIN="$TARGET/release/keyward"
HELPER="$TARGET/release/examples/bench_store"

WORK=$(mktemp -d)
SHM=$(mktemp -d -p /dev/shm 2>/dev/null || mktemp -d)
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK" "$SHM"; }
trap cleanup EXIT

"$BIN" token create bench-write --role write --tokens "$WORK/tokens.yaml" >"$WORK/write.token"
"$BIN" token create bench-app --role verify --tokens "$WORK/tokens.yaml" >"$WORK/verify.token"

start() { # dir database [--bare]
  "$BIN" -C "$1" serve --listen "127.0.0.1:$PORT" --database "$2" --tokens "$WORK/tokens.yaml" ${3:-} 2>"$WORK/serve.log" &
  PID=$!
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return; sleep 0.1; done

}
stop() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""; }
parse() { # wrk output file -> "rps p99_ms"
  local rps p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$1")
  p99=$(awk -F= '/^p99_us=/ {printf "%.2f", $2/1000}' "$1")
  echo "$rps $p99"
}

URL="http://127.0.0.1:$PORT"
start "$WORK" "sqlite:$WORK/serve.db"
KEYWARD_BENCH_TOKEN=$(cat "$WORK/write.token") "$HELPER" create "$URL" "$N" "$WORK/secrets.txt"
BENCH_SECRETS="$WORK/secrets.txt" BENCH_TOKEN=$(cat "$WORK/verify.token") \
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/verify.lua "$URL/v1/verify" | tee "$WORK/verify.txt" >&2
stop
read -r V_RPS V_P99 < <(parse "$WORK/verify.txt")

start "$WORK" "sqlite:$WORK/serve.db" --bare
BENCH_SECRETS="$WORK/secrets.txt" BENCH_TOKEN=x \
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/verify.lua "$URL/v1/verify" | tee "$WORK/bare.txt" >&2
stop
read -r B_RPS B_P99 < <(parse "$WORK/bare.txt")
RATIO=$(awk -v a="$V_RPS" -v b="$B_RPS" 'BEGIN { printf "%.0f", 100 * a / b }')

LIST_LINE="not measured (LIST_KEYS=0)"
if [ "$LIST_KEYS" -gt 0 ]; then
  # The listing database lives in /dev/shm so that filling it does not wait on fsync;
  # listing itself only reads.
  start "$SHM" "sqlite:$SHM/list.db"
  KEYWARD_BENCH_TOKEN=$(cat "$WORK/write.token") "$HELPER" create "$URL" "$LIST_KEYS" "$SHM/list-secrets.txt"
  LIST_LINE=$(KEYWARD_BENCH_TOKEN=$(cat "$WORK/write.token") "$HELPER" list "$URL")
  stop
fi

CPU=$(nproc)
{
  echo
  echo "### Verify throughput, $(date -u +%Y-%m-%dT%H:%MZ), $CPU cores, keyward $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo
  echo "Command: \`N=$N DURATION=$DURATION CONNS=$CONNS THREADS=$THREADS LIST_KEYS=$LIST_KEYS bench/verify.sh\`"
  echo
  echo "| what | requests/s | p99 latency |"
  echo "|---|---|---|"
  echo "| \`POST /v1/verify\`, SQLite, $N keys with quotas, valid keys | $V_RPS | $V_P99 ms |"
  echo "| bare axum handler (ceiling), same load | $B_RPS | $B_P99 ms |"
  echo
  echo "verify / ceiling: ${RATIO}%. Listing through the http store: $LIST_LINE."
} | tee -a "${REPORT:-docs/benchmarks.md}"
