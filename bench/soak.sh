#!/usr/bin/env bash
# Soak: `keyward serve` (SQLite) under /v1/verify load on loopback (wrk) for a bounded time
# while `keyward apply` runs in a loop against it through the `http` store, creating,
# rotating and revoking keys. Checks: zero failed verifies for valid keys, zero lost writes
# (after the loop the store holds exactly what the spec says: the plan is empty and every
# key is there), and flat memory (server RSS sampled every second; growth from the middle
# to the end under 10%).
#
#   bench/soak.sh                 60 s (CI-sized runs: --seconds 10)
#   bench/soak.sh --seconds 600   the long run
#
# KEYWARD_BIN: a binary built elsewhere (default: a release build). Prints key=value lines
# (failed_verifies, verifies, lost_writes, applies, rss_*_kb, rss_growth_pct); exits 1 when
# a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_TOTAL=60
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_TOTAL=$2; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 1 ;;
    esac
done
STATIC_KEYS=${STATIC_KEYS:-200}
CONNS=${CONNS:-16}

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        echo "wrk is needed (apt-get install wrk)" >&2; exit 1
    fi
fi
need python3 || { echo "python3 is needed" >&2; exit 1; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -n "${KEYWARD_BIN:-}" ]; then
    BIN=$KEYWARD_BIN
else
    cargo build --release --quiet --bin keyward
    BIN=$CARGO_TARGET_DIR/release/keyward
fi

WORK=$(mktemp -d /tmp/keyward-soak.XXXXXX)
chmod 700 "$WORK"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/srv" "$WORK/repo/keys"
"$BIN" token create soak-write --role write --tokens "$WORK/srv/tokens.yaml" >"$WORK/write.token" 2>/dev/null
"$BIN" token create soak-app --role verify --tokens "$WORK/srv/tokens.yaml" >"$WORK/verify.token" 2>/dev/null

KEYWARD_LOG=warn "$BIN" -C "$WORK/srv" serve --listen 127.0.0.1:0 --tokens tokens.yaml \
    --database sqlite:soak.db 2>"$WORK/serve.log" &
SERVER=$!
PIDS+=($SERVER)
URL=""
for _ in $(seq 1 100); do
    URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/serve.log" | head -n1)
    [ -n "$URL" ] && break
    sleep 0.1
done
[ -n "$URL" ] || { echo "serve did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

# Static keys (unmanaged: apply never touches them) registered through the API; wrk
# verifies them the whole time, so every answer must be valid.
python3 - "$URL" "$(cat "$WORK/write.token")" "$STATIC_KEYS" "$WORK/keys.lua" <<'PY'
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
        "id": kid, "name": f"static-{i:05d}", "environment": "production", "owner": "soak",
        "purpose": None, "scopes": ["bibs:read"], "labels": {}, "status": "active",
        "issued_at": (now - datetime.timedelta(minutes=5)).isoformat(),
        "expires_at": (now + datetime.timedelta(days=30)).isoformat(), "lifetime": None,
        "generation": 1, "spec_generation": 1, "recipients": {"soak": "fp"},
        "quota_per_day": None, "protected": False, "managed_by": None,
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

cat >"$WORK/verify.lua" <<LUA
dofile("$WORK/keys.lua")
local token = "$(cat "$WORK/verify.token")"
local i = 0
invalid = 0
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function() invalid = 0 end
request = function()
    i = i + 1
    local k = keys[(i % #keys) + 1]
    return wrk.format("POST", "/v1/verify",
        { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
        '{"key":"' .. k .. '"}')
end
response = function(status, headers, body)
    if status ~= 200 or not string.find(body, '"valid":%s*true') then
        invalid = invalid + 1
    end
end
done = function(summary, latency, requests)
    local bad = 0
    for _, t in ipairs(threads) do bad = bad + (t:get("invalid") or 0) end
    io.write(string.format("INVALID %d\nREQUESTS %d\nERRORS %d\n", bad, summary.requests,
        summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout))
end
LUA

# The repository apply works on: one http store, three people with real age identities.
cd "$WORK/repo"
PEOPLE="people:"
for who in ana ben cy; do
    "$BIN" keygen -o "$WORK/$who.txt" >"$WORK/$who.pub" 2>/dev/null
    PEOPLE="$PEOPLE
  $who: { name: $who, email: $who@example.edu, recipients: [\"$(cat "$WORK/$who.pub")\"] }"
done
echo "$PEOPLE" >people.yaml
cat >keyward.yaml <<EOF
version: 1
stores:
  soak: { kind: http, url: "$URL", token_env: KEYWARD_SOAK_TOKEN, environment: production }
policy:
  default_lifetime: 365d
  max_keys_per_owner: 1000
EOF
export KEYWARD_SOAK_TOKEN
KEYWARD_SOAK_TOKEN=$(cat "$WORK/write.token")

# spec ROUND: 30 keys; each round rotates a third, revokes one, creates one.
spec() {
    python3 - "$1" >keys/keys.yaml <<'PY'
import sys
r = int(sys.argv[1])
owners = ["ana", "ben", "cy"]
print("keys:")
for i in range(r, r + 30):
    gen = 1 + r // 3 if i % 3 == 0 else 1
    print(f"  - name: k{i:05d}\n    store: soak\n    owner: {owners[i % 3]}\n"
          f"    scopes: [bibs:read]\n    rotation: {{ generation: {gen} }}")
PY
}

# Sample the server's RSS every second.
( while kill -0 "$SERVER" 2>/dev/null; do
      awk '/VmRSS/ {print $2}' "/proc/$SERVER/status" 2>/dev/null
      sleep 1
  done ) >"$WORK/rss" &
PIDS+=($!)

wrk -t2 -c"$CONNS" -d"${SECONDS_TOTAL}s" -s "$WORK/verify.lua" "$URL" >"$WORK/wrk.out" 2>&1 &
WRK=$!
PIDS+=($WRK)

APPLIES=0
FAILED_APPLIES=0
ROUND=0
START=$(date +%s)
while [ $(( $(date +%s) - START )) -lt "$SECONDS_TOTAL" ] && kill -0 "$WRK" 2>/dev/null; do
    spec "$ROUND"
    if "$BIN" apply --auto-approve --force >"$WORK/apply.out" 2>&1; then
        APPLIES=$((APPLIES + 1))
    else
        FAILED_APPLIES=$((FAILED_APPLIES + 1))
        tail -n 5 "$WORK/apply.out" >&2
    fi
    ROUND=$((ROUND + 1))
done
wait "$WRK" || true

# Lost writes: after one more apply the plan must be empty and every key of the spec live.
LOST=0
"$BIN" apply --auto-approve --force >"$WORK/apply.out" 2>&1 || LOST=$((LOST + 1))
"$BIN" plan --detailed-exitcode >"$WORK/plan.out" 2>&1 || LOST=$((LOST + 1))
LIVE=$("$BIN" keys --format json 2>/dev/null | python3 -c '
import json, sys
print(sum(1 for k in json.load(sys.stdin) if k.get("status") == "active" and k["name"].startswith("k")))')
[ "$LIVE" = 30 ] || LOST=$((LOST + 30 - LIVE))
[ "$FAILED_APPLIES" = 0 ] || LOST=$((LOST + FAILED_APPLIES))

INVALID=$(awk '/^INVALID/ {print $2}' "$WORK/wrk.out"); INVALID=${INVALID:-unknown}
REQUESTS=$(awk '/^REQUESTS/ {print $2}' "$WORK/wrk.out"); REQUESTS=${REQUESTS:-0}
ERRORS=$(awk '/^ERRORS/ {print $2}' "$WORK/wrk.out"); ERRORS=${ERRORS:-0}
python3 - "$WORK/rss" <<'PY' >"$WORK/rss.kv"
import sys
xs = [int(l) for l in open(sys.argv[1]) if l.strip().isdigit()]
if len(xs) < 4:
    print("rss_growth_pct=unknown")
else:
    mid, end = xs[len(xs) // 2], max(xs[-3:])
    print(f"rss_start_kb={xs[0]}\nrss_mid_kb={mid}\nrss_end_kb={end}")
    print(f"rss_growth_pct={(end - mid) * 100 / mid:.1f}")
PY
FAILED=unknown
[ "$INVALID" != unknown ] && FAILED=$((INVALID + ERRORS))
{
    echo "seconds=$SECONDS_TOTAL"
    echo "verifies=$REQUESTS"
    echo "failed_verifies=$FAILED"
    echo "applies=$APPLIES"
    echo "lost_writes=$LOST"
    cat "$WORK/rss.kv"
}
GROWTH=$(sed -n 's/rss_growth_pct=//p' "$WORK/rss.kv")
ok=1
[ "$FAILED" = 0 ] || ok=0
[ "$LOST" = 0 ] || ok=0
[ "$REQUESTS" -gt 0 ] || ok=0
[ "$APPLIES" -gt 0 ] || ok=0
python3 -c "import sys; sys.exit(0 if '$GROWTH' != 'unknown' and float('$GROWTH') < 10 else 1)" || ok=0
[ "$ok" = 1 ]
