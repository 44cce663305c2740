#!/usr/bin/env bash
# What notifications cost (not part of .ci/run).
#
#   bench/notify.sh [N]     N new keys (default 1000)
#
# Generates a repository of N keys (examples/gen_repo), adds a `notify:` section pointing at a
# real SMTP server (aiosmtpd, tests/notify_support/smtp_sink.py) and a real HTTP receiver
# (Python's http.server answering 200) on loopback, then times with /usr/bin/time:
#   1. `keyward apply --auto-approve` creating the N keys, which also sends N created notices
#      by email and N by webhook (every message recorded as events in the stores);
#   2. the nightly `keyward expiring --notify` with nothing owed: it reads every notify.*
#      event of each store to know what was sent;
#   3. the same apply on a copy of the repository without `notify:`, for comparison.
# Prints the numbers (seconds, peak RSS) and the message counts the servers saw.
#
# Environment: BENCH_DIR (scratch directory, default a new /tmp/keyward-notify.*),
# CARGO_TARGET_DIR (default target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-1000}

python3 -c 'import aiosmtpd' 2>/dev/null || { echo "aiosmtpd is needed (pip install aiosmtpd)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is needed at /usr/bin/time" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
echo "== building release" >&2
cargo build --release --quiet --bin keyward --example gen_repo
BIN=$CARGO_TARGET_DIR/release/keyward
GEN=$CARGO_TARGET_DIR/release/examples/gen_repo

WORK=${BENCH_DIR:-$(mktemp -d /tmp/keyward-notify.XXXXXX)}
mkdir -p "$WORK/mail"
echo "== scratch directory: $WORK" >&2
export NO_COLOR=1 KEYWARD_ACTOR=bench KW_BENCH_SMTP_PASSWORD=bench-pw KW_BENCH_HOOK_SECRET=bench-secret

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 "$ROOT/tests/notify_support/smtp_sink.py" "$WORK/mail" 0 bench bench-pw >"$WORK/smtp.port" &
PIDS+=($!)
cat >"$WORK/hook.py" <<'EOF'
import http.server, sys
count = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global count
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        count += 1
        with open(sys.argv[1], "w") as f:
            f.write(str(count))
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
EOF
python3 "$WORK/hook.py" "$WORK/hook.count" >"$WORK/hook.port" &
PIDS+=($!)
for _ in $(seq 50); do [ -s "$WORK/smtp.port" ] && [ -s "$WORK/hook.port" ] && break; sleep 0.1; done
SMTP_PORT=$(head -1 "$WORK/smtp.port"); HOOK_PORT=$(head -1 "$WORK/hook.port")

repo=$WORK/repo; plain=$WORK/plain
rm -rf "$repo" "$plain"
"$GEN" --keys "$N" --stores 3 --files 50 --seed 7 "$repo" 2>/dev/null
cp -r "$repo" "$plain"
cat >>"$repo/keyward.yaml" <<EOF
notify:
  email:
    host: 127.0.0.1
    port: $SMTP_PORT
    tls: none
    username: bench
    password_env: KW_BENCH_SMTP_PASSWORD
    from: keyward@example.edu
  webhook:
    url: http://127.0.0.1:$HOOK_PORT/keyward
    secret_env: KW_BENCH_HOOK_SECRET
    allow_private: true
EOF

t() { /usr/bin/time -f '%e s, %M KB peak RSS' -o "$WORK/$1.time" "${@:2}" >/dev/null 2>"$WORK/$1.err" || true; cat "$WORK/$1.time"; }
echo "apply, $N new keys, no notify:                 $(t plain "$BIN" -C "$plain" apply --auto-approve)"
echo "apply, $N new keys, + $N mails + $N webhooks:  $(t apply "$BIN" -C "$repo" apply --auto-approve)"
sleep 1
before=$(ls "$WORK/mail" | grep -c json || true)
echo "messages after apply: $before mails, $(cat "$WORK/hook.count" 2>/dev/null || echo 0) webhook calls"
echo "expiring --notify (reads every notify.* event): $(t nightly "$BIN" -C "$repo" expiring --notify)"
echo "expiring --notify again (nothing new owed):     $(t nightly2 "$BIN" -C "$repo" expiring --notify)"
sleep 1
echo "reminders the first nightly run sent: $(( $(ls "$WORK/mail" | grep -c json || true) - before )) mails"
grep -c '^notified' "$WORK/apply.err" | sed 's/^/notified lines in the apply output: /'
grep -m3 'warning' "$WORK/apply.err" "$WORK/nightly.err" || true
