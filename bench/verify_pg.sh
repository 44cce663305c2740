#!/usr/bin/env bash
# Verify throughput of `keyward serve` on PostgreSQL, next to SQLite and the machine's ceiling
# (`keyward serve --bare`, a handler answering 200), all measured in the same run with wrk on
# loopback; server, database and load generator share the machine. Not part of .ci/run.
#
#   bench/verify_pg.sh                 10 s per target, 64 connections, 1,000 keys
#   DURATION=30s CONNS=128 KEYS=5000 bench/verify_pg.sh
#   WARMUP=3s CONNS=32 bench/verify_pg.sh   issue 17's row: each target warmed up first
#
# Targets: the ceiling, SQLite, one PostgreSQL instance, then two instances on the same
# database (the scale-out path), each under half the connections at once.
#
# PostgreSQL URL: KEYWARD_BENCH_POSTGRES_URL, else KEYWARD_TEST_POSTGRES_URL, else
# postgres://postgres@127.0.0.1:5432/test. The run uses a fresh schema and drops it at the end.
# Keys are throwaway test keys registered through the HTTP API (secret hashes only), each with
# a daily quota (as bench/verify.sh's), so every verify also goes through quota counting; their
# secrets sit in the scratch directory (mode 0700) for wrk and are deleted at the end.
# Prints a Markdown table (requests/s, p50, p99 latency, share of the ceiling).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
KEYS=${KEYS:-1000}
# WARMUP=3s: the same load for that long first, not counted (each server's caches and quota
# blocks are filled before the measured run; 0, the default, measures from a cold start).
WARMUP=${WARMUP:-0}
# SERVE_ARGS="--no-usage": extra options for every `keyward serve` of the run.
PG_URL=${KEYWARD_BENCH_POSTGRES_URL:-${KEYWARD_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        echo "wrk is needed (apt-get install wrk)" >&2; exit 1
    fi
fi
need python3 || { echo "python3 is needed" >&2; exit 1; }
need psql || { echo "psql is needed to drop the benchmark schema" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -n "${KEYWARD_BIN:-}" ]; then
    BIN=$KEYWARD_BIN   # a binary built elsewhere (e.g. to try the script with a debug build)
else
    echo "== building release" >&2
    cargo build --release --quiet --bin keyward
    BIN=$CARGO_TARGET_DIR/release/keyward
fi

WORK=$(mktemp -d /tmp/keyward-verify-bench.XXXXXX)
chmod 700 "$WORK"
SCHEMA="kwbench_$(date +%s)_$$"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    psql "$PG_URL" -qc "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" token create bench-write --role write --tokens "$WORK/tokens.yaml" >"$WORK/write.token" 2>/dev/null
"$BIN" token create bench-app --role verify --tokens "$WORK/tokens.yaml" >"$WORK/verify.token" 2>/dev/null

# start NAME ARGS...: starts `keyward serve` on a free port, sets URL.
start() {
    local name=$1; shift
    # shellcheck disable=SC2086 # SERVE_ARGS: extra serve options, split on spaces
    KEYWARD_LOG=warn "$BIN" -C "$WORK" serve --listen 127.0.0.1:0 --tokens tokens.yaml "$@" ${SERVE_ARGS:-} \
        2>"$WORK/$name.log" &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/$name.log" | head -n1)
        [ -n "$URL" ] && return 0
        sleep 0.1
    done
    echo "$name did not start:" >&2; cat "$WORK/$name.log" >&2; exit 1
}

# register URL: creates $KEYS keys through the API, writes their secrets to $WORK/keys.lua.
register() {
    python3 - "$1" "$(cat "$WORK/write.token")" "$KEYS" "$WORK/keys.lua" <<'PY'
import base64, hashlib, json, os, sys, urllib.request, zlib, datetime
url, token, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def b32(b): return base64.b32encode(b).decode().rstrip("=").lower()
now = datetime.datetime.now(datetime.timezone.utc)
secrets = []
for i in range(n):
    kid = b32(os.urandom(10))
    head = f"kw_prod_{kid}_{b32(os.urandom(32))}"
    secret = head + f"{zlib.crc32(head.encode()):08x}"
    body = {
        "id": kid, "name": f"bench-{i:06d}", "environment": "production", "owner": "bench",
        "purpose": None, "scopes": ["bibs:read"], "labels": {}, "status": "active",
        "issued_at": (now - datetime.timedelta(minutes=5)).isoformat(),
        "expires_at": (now + datetime.timedelta(days=30)).isoformat(), "lifetime": None,
        "generation": 1, "spec_generation": 1, "recipients": {"bench": "fp"},
        "quota_per_day": 1000000000, "protected": False, "managed_by": "keyward",
        "secret_hash": hashlib.sha256(secret.encode()).hexdigest(),
    }
    req = urllib.request.Request(url + "/v1/keys", data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 201, r.status
    secrets.append(secret)
with open(out, "w") as f:
    f.write("keys = {" + ",".join(json.dumps(s) for s in secrets) + "}\n")
PY
}

# check URL: one verify must be valid.
check() {
    local first
    first=$(sed -n 's/^keys = {"\([^"]*\)".*/\1/p' "$WORK/keys.lua")
    python3 - "$1" "$(cat "$WORK/verify.token")" "$first" <<'PY'
import json, sys, urllib.request
url, token, key = sys.argv[1:4]
req = urllib.request.Request(url + "/v1/verify", data=json.dumps({"key": key}).encode(),
    method="POST", headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
v = json.load(urllib.request.urlopen(req))
assert v["valid"] is True and v["reason"] == "ok", v
PY
}

cat >"$WORK/verify.lua" <<LUA
dofile("$WORK/keys.lua")
local token = "$(cat "$WORK/verify.token")"
local i = 0
request = function()
    i = i + 1
    local k = keys[(i % #keys) + 1]
    return wrk.format("POST", "/v1/verify",
        { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
        '{"key":"' .. k .. '"}')
end
LUA

wait_wrk() { for j in $(jobs -p); do case " ${PIDS[*]} " in *" $j "*) ;; *) wait "$j" ;; esac; done; }  # every job but the servers

# probe OUT URL_A URL_B: in the background, one verify every 20 ms on its own keep-alive
# connection to each URL in turn for DURATION less a second, timed by this client (a second
# opinion on wrk's latency figures); writes "n p50 p99 max" (ms) to OUT.
probe() {
    python3 - "$2" "$3" "$(cat "$WORK/verify.token")" "$WORK/keys.lua" "$DURATION" \
        >"$1" <<'PY' &
import http.client, json, re, sys, time, urllib.parse
a, b, token, keys_file, dur = sys.argv[1:6]
keys = re.findall(r'"([^"]+)"', open(keys_file).read())
secs = float(dur.rstrip("s")) - 1.0
conns = [http.client.HTTPConnection(urllib.parse.urlsplit(u).netloc, timeout=10) for u in (a, b)]
lat, i, end = [], 0, time.monotonic() + secs
time.sleep(0.5)
while time.monotonic() < end:
    c = conns[i % 2]
    body = json.dumps({"key": keys[i % len(keys)]})
    t0 = time.monotonic()
    c.request("POST", "/v1/verify", body, {"Authorization": "Bearer " + token,
                                           "Content-Type": "application/json"})
    r = c.getresponse(); r.read()
    lat.append((time.monotonic() - t0) * 1000)
    assert r.status == 200, r.status
    i += 1
    time.sleep(0.02)
lat.sort()
q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))]
print(f"{len(lat)} {q(0.5):.2f} {q(0.99):.2f} {lat[-1]:.2f}")
PY
}

# load NAME URL: runs wrk, appends "NAME rps p50 p99 non2xx" to results.
load() {
    local out="$WORK/$1.wrk"
    if [ "$WARMUP" != 0 ]; then
        wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -s "$WORK/verify.lua" "$2" >/dev/null
    fi
    # PROBE=FILE: the probe beside the measured run (not the warm-up).
    if [ -n "${PROBE:-}" ]; then probe "$PROBE" "$2" "$2"; fi
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$WORK/verify.lua" "$2" >"$out"
    local rps p50 p99 bad
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
    p50=$(awk '$1 == "50%" {print $2}' "$out")
    p99=$(awk '$1 == "99%" {print $2}' "$out")
    bad=$(awk '/Non-2xx/ {print $NF}' "$out"); bad=${bad:-0}
    echo "$1 $rps $p50 $p99 $bad" >>"$WORK/results"
    echo "   $1: $rps req/s, p50 $p50, p99 $p99, non-2xx $bad" >&2
}

echo "== ceiling: keyward serve --bare" >&2
start bare --bare
echo 'keys = {"x"}' >"$WORK/keys.lua"
load ceiling "$URL"
kill "${PIDS[-1]}"

echo "== SQLite: registering $KEYS keys" >&2
start sqlite --database sqlite:bench.db
register "$URL"; check "$URL"
load sqlite "$URL"
kill "${PIDS[-1]}"

echo "== PostgreSQL (schema $SCHEMA): registering $KEYS keys" >&2
case "$PG_URL" in *\?*) SEP='&' ;; *) SEP='?' ;; esac
start postgres --database "$PG_URL${SEP}schema=$SCHEMA&pepper_file=$WORK/pg.pepper"
register "$URL"; check "$URL"
PROBE="$WORK/probe1.txt" load postgres "$URL"
wait_wrk
read -r p1n p1p50 p1p99 p1max <"$WORK/probe1.txt"
echo "   probe, one instance: $p1n verifies, p50 ${p1p50} ms, p99 ${p1p99} ms, max ${p1max} ms" >&2

# Two instances on the one database (the scale-out path), each under half the load at once:
# one wrk per instance with half the connections; requests/s summed, the higher p50/p99.
URL_A=$URL
start postgres-b --database "$PG_URL${SEP}schema=$SCHEMA&pepper_file=$WORK/pg.pepper"
URL_B=$URL; check "$URL_B"
echo "== PostgreSQL, two instances on one database" >&2
half=$(( CONNS / 2 > 0 ? CONNS / 2 : 1 ))
for side in a b; do
    u=$URL_A; [ "$side" = b ] && u=$URL_B
    if [ "$WARMUP" != 0 ]; then
        wrk -t1 -c"$half" -d"$WARMUP" -s "$WORK/verify.lua" "$u" >/dev/null &
    fi
done
wait_wrk
wrk -t1 -c"$half" -d"$DURATION" --latency -s "$WORK/verify.lua" "$URL_A" >"$WORK/two-a.wrk" &
wrk -t1 -c"$half" -d"$DURATION" --latency -s "$WORK/verify.lua" "$URL_B" >"$WORK/two-b.wrk" &
probe "$WORK/probe.txt" "$URL_A" "$URL_B"
wait_wrk
read -r pn pp50 pp99 pmax <"$WORK/probe.txt"
echo "   probe: $pn verifies, p50 ${pp50} ms, p99 ${pp99} ms, max ${pmax} ms" >&2
python3 - "$WORK/two-a.wrk" "$WORK/two-b.wrk" >>"$WORK/results" <<'PY'
import re, sys
def ms(v):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", v)
    return float(m[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]
rps, p50, p99, bad = 0.0, 0.0, 0.0, 0
for path in sys.argv[1:]:
    text = open(path).read()
    rps += float(re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)[1])
    p50 = max(p50, ms(re.search(r"^\s+50%\s+(\S+)", text, re.M)[1]))
    p99 = max(p99, ms(re.search(r"^\s+99%\s+(\S+)", text, re.M)[1]))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    bad += int(m[1]) if m else 0
print(f"postgres2 {rps:.2f} {p50:.2f}ms {p99:.2f}ms {bad}")
PY
# KEEP=DIR: keep the two wrk reports and the servers' logs there for reading.
if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$WORK"/two-*.wrk "$WORK"/postgres*.log "$KEEP"/; fi
tail -n1 "$WORK/results" | awk '{ print "   two instances: " $2 " req/s, p50 " $3 ", p99 " $4 ", non-2xx " $5 }' >&2

python3 - "$WORK/results" "$DURATION" "$CONNS" "$THREADS" "$KEYS" "$WARMUP" <<'PY'
import sys
path, dur, conns, threads, keys, warmup = sys.argv[1:7]
rows = [l.split() for l in open(path)]
ceiling = float(rows[0][1])
warm = "cold start" if warmup == "0" else f"after {warmup} of the same load, not counted"
print(f"\n/v1/verify, valid keys ({keys} keys, wrk -t{threads} -c{conns} -d{dur}, {warm}; loopback, 2 cores shared)\n")
print("| target | requests/s | p50 | p99 | of ceiling | non-2xx |")
print("|---|---:|---:|---:|---:|---:|")
names = {"ceiling": "ceiling (`serve --bare`, 200 on every path)", "sqlite": "verify on SQLite",
         "postgres": "verify on PostgreSQL",
         "postgres2": "verify on PostgreSQL, two instances on one database (half the connections each, summed)"}
for name, rps, p50, p99, bad in rows:
    print(f"| {names[name]} | {float(rps):,.0f} | {p50} | {p99} | {float(rps) / ceiling:.0%} | {bad} |")
PY
echo
echo "Probe beside wrk (one verify every 20 ms on its own connection, timed by a separate Python"
echo "client): one instance $p1n verifies, p50 ${p1p50} ms, p99 ${p1p99} ms, max ${p1max} ms;"
echo "two instances (alternating) $pn verifies, p50 ${pp50} ms, p99 ${pp99} ms, max ${pmax} ms."
