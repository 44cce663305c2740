#!/usr/bin/env bash
# What notifications cost (not part of .ci/run).
#
#   bench/notify.sh [N]     N new keys (default 1000)
#
# Generates a repository of N keys (examples/gen_repo), adds a `notify:` section pointing at a
# real SMTP server (aiosmtpd, tests/notify_support/smtp_sink.py: AUTH, one JSON file written
# per message) and a real HTTP receiver (Python's ThreadingHTTPServer answering 200; HTTP/1.1
# keep-alive, as real receivers speak; HOOK_HTTP10=1 for a one-connection-per-call HTTP/1.0
# receiver) on loopback, then times with /usr/bin/time:
#   1. `keyward apply --auto-approve` creating the N keys on a copy of the repository without
#      `notify:`, for comparison;
#   2. the same apply with `notify:`, which also sends N created notices by email and N by
#      webhook (every message recorded as events in the stores): the notifications cost the
#      difference of 2 and 1;
#   3. the nightly `keyward expiring --notify` with nothing owed (twice): it reads every
#      notify.* event of each store to know what was sent;
#   4. the floor: the same number of mails and calls sent to fresh servers of the same kind
#      by a minimal Python client (CONNECTIONS SMTP connections with TCP_NODELAY, 8
#      keep-alive HTTP connections; the client's own CPU is included), i.e. roughly what the
#      receivers alone take.
# Prints the numbers (seconds, peak RSS), the message counts the servers saw and how many
# SMTP connections carried the mails.
#
# Environment: BENCH_DIR (scratch directory, default a new /tmp/keyward-notify.*),
# CARGO_TARGET_DIR (default target), KEYWARD_BIN (a keyward binary to time instead of the
# release build, e.g. an older commit's), CONNECTIONS (`notify.email.connections`, default 4;
# CONNECTIONS=none leaves it out, for a binary that predates it), SINK_LIGHT=1 (the SMTP
# server skips parsing each message: a receiver that is not itself the limit).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${1:-1000}
CONNECTIONS=${CONNECTIONS:-4}

python3 -c 'import aiosmtpd' 2>/dev/null || { echo "aiosmtpd is needed (pip install aiosmtpd)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "GNU time is needed at /usr/bin/time" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
echo "== building release" >&2
cargo build --release --quiet --bin keyward --example gen_repo
BIN=${KEYWARD_BIN:-$CARGO_TARGET_DIR/release/keyward}
GEN=$CARGO_TARGET_DIR/release/examples/gen_repo

WORK=${BENCH_DIR:-$(mktemp -d /tmp/keyward-notify.XXXXXX)}
mkdir -p "$WORK/mail" "$WORK/floor-mail"
echo "== scratch directory: $WORK" >&2
export NO_COLOR=1 KEYWARD_ACTOR=bench KW_BENCH_SMTP_PASSWORD=bench-pw KW_BENCH_HOOK_SECRET=bench-secret

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cat >"$WORK/hook.py" <<'PY'
import http.server, os, threading, time
count = 0
first = last = 0.0
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0" if os.environ.get("HOOK_HTTP10") else "HTTP/1.1"
    def do_POST(self):
        global count, first, last
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with lock:
            count += 1
            last = time.time()
            first = first or last
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        b = (str(count) if self.path == "/" else "%f %f" % (first, last)).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
PY
start() { # NAME COMMAND...: start a server that prints its port; wait for the port
  "${@:2}" >"$WORK/$1.port" 2>"$WORK/$1.log" &
  PIDS+=($!)
  for _ in $(seq 50); do [ -s "$WORK/$1.port" ] && break; sleep 0.1; done
}
port() { head -1 "$WORK/$1.port"; }
start smtp python3 "$ROOT/tests/notify_support/smtp_sink.py" "$WORK/mail" 0 bench bench-pw
start hook python3 "$WORK/hook.py"
SMTP_PORT=$(port smtp); HOOK_PORT=$(port hook)

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
$([ "$CONNECTIONS" = none ] || echo "    connections: $CONNECTIONS")
  webhook:
    url: http://127.0.0.1:$HOOK_PORT/keyward
    secret_env: KW_BENCH_HOOK_SECRET
    allow_private: true
EOF

t() { /usr/bin/time -f '%e s, %M KB peak RSS' -o "$WORK/$1.time" "${@:2}" >/dev/null 2>"$WORK/$1.err" || true; cat "$WORK/$1.time"; }
hooks() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen("http://127.0.0.1:%s/%s" % (sys.argv[1], sys.argv[2])).read().decode())' "$1" "${2:-}"; }
mails() { find "$1" -name '*.json' | wc -l; }
echo "apply, $N new keys, no notify:                 $(t plain "$BIN" -C "$plain" apply --auto-approve)"
echo "apply, $N new keys, + $N mails + $N webhooks:  $(t apply "$BIN" -C "$repo" apply --auto-approve)"
sleep 1
before=$(mails "$WORK/mail")
echo "messages after apply: $before mails, $(hooks "$HOOK_PORT") webhook calls"
python3 - "$WORK/mail" "$(hooks "$HOOK_PORT" span)" <<'PY'
import json, os, sys
d = sys.argv[1]
files = [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".json")]
peers = {json.load(open(f)).get("peer") for f in files}
print("SMTP connections that carried them (distinct client address:port): %d" % len(peers))
times = [os.path.getmtime(f) for f in files]
first, last = (float(x) for x in sys.argv[2].split())
print("received: mails over %.2f s, webhook calls over %.2f s, all of them over %.2f s"
      " (first message received -> last)"
      % (max(times) - min(times), last - first, max(times + [last]) - min(times + [first])))
PY
awk -v a="$(cut -d' ' -f1 "$WORK/apply.time")" -v p="$(cut -d' ' -f1 "$WORK/plain.time")" \
  'BEGIN { printf "notifications (apply with notify - without): %.2f s\n", a - p }'
echo "expiring --notify (reads every notify.* event): $(t nightly "$BIN" -C "$repo" expiring --notify)"
echo "expiring --notify again (nothing new owed):     $(t nightly2 "$BIN" -C "$repo" expiring --notify)"
sleep 1
echo "reminders the first nightly run sent: $(( $(mails "$WORK/mail") - before )) mails"
grep -c '^notified' "$WORK/apply.err" | sed 's/^/notified lines in the apply output: /'
grep -m3 'warning' "$WORK/apply.err" "$WORK/nightly.err" || true

# The floor: fresh receivers of the same kind, fed by a minimal client.
start floor-smtp python3 "$ROOT/tests/notify_support/smtp_sink.py" "$WORK/floor-mail" 0 bench bench-pw
start floor-hook python3 "$WORK/hook.py"
FLOOR_SMTP=$(port floor-smtp); FLOOR_HOOK=$(port floor-hook)
FLOOR_CONNS=$CONNECTIONS; [ "$FLOOR_CONNS" = none ] && FLOOR_CONNS=1
SAMPLE=$(find "$WORK/mail" -name '*.json' -print -quit)
python3 - "$FLOOR_SMTP" "$FLOOR_HOOK" "$N" "$FLOOR_CONNS" "$SAMPLE" <<'PY'
import base64, http.client, json, socket, sys, threading, time
smtp_port, hook_port, n, conns = (int(a) for a in sys.argv[1:5])
raw = json.load(open(sys.argv[5]))["raw"].encode("latin-1")
data = raw.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n"
body = b'{"format_version": 1, "text": "' + b"x" * 1200 + b'"}'

def mailer(count):
    s = socket.create_connection(("127.0.0.1", smtp_port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    def resp():
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                return line
    def cmd(c):
        s.sendall(c)
        return resp()
    resp()
    cmd(b"EHLO floor\r\n")
    cmd(b"AUTH PLAIN " + base64.b64encode(b"\0bench\0bench-pw") + b"\r\n")
    for _ in range(count):
        cmd(b"MAIL FROM:<keyward@example.edu>\r\n")
        cmd(b"RCPT TO:<owner@example.edu>\r\n")
        cmd(b"DATA\r\n")
        cmd(data)
    cmd(b"QUIT\r\n")

def poster(count):
    c = http.client.HTTPConnection("127.0.0.1", hook_port)
    for _ in range(count):
        c.request("POST", "/floor", body, {"Content-Type": "application/json"})
        c.getresponse().read()

def timed(fn, lanes):
    t = time.monotonic()
    ths = [threading.Thread(target=fn, args=(n // lanes + (i < n % lanes),)) for i in range(lanes)]
    for x in ths:
        x.start()
    for x in ths:
        x.join()
    return time.monotonic() - t

m = timed(mailer, conns)
h = timed(poster, 8)
print("floor: %d mails over %d SMTP connection(s) %.2f s; %d webhook calls over 8 connections %.2f s"
      % (n, conns, m, n, h))
PY
echo "floor mails the server saw: $(mails "$WORK/floor-mail"), calls: $(hooks "$FLOOR_HOOK")"
