#!/usr/bin/env bash
# Records the session of docs/consoles.md ("A whole session with the example, as recorded")
# on a fresh git copy of examples/consoles, with the built binary: CI apply, the checklist
# through a pty (python3 pexpect), --console-input, age -d of every delivery against the
# ledger fingerprints, a revoke, expiring. Needs age, git, python3 with pexpect.
#
#   cargo build --release && bash examples/consoles/session.sh
# Values are random fake keys; age -d output is elided in the shell.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KW=${KW:-$ROOT/target/release/keyward}
T=$(mktemp -d /tmp/kwtx.XXXX); R=$T/repo
cp -r "$ROOT/examples/consoles" "$R"; cd "$R"
git init -q -b main && git add -A && git -c user.name=admin -c user.email=admin@example.edu commit -qm "examples/consoles"
export GIT_AUTHOR_NAME=admin GIT_AUTHOR_EMAIL=admin@example.edu GIT_COMMITTER_NAME=admin GIT_COMMITTER_EMAIL=admin@example.edu
export PATH=$(dirname "$KW"):$PATH NO_COLOR=1
hex() { python3 -c 'import secrets; print("l7xx" + secrets.token_hex(16))'; }
run() { echo "\$ $*"; bash -c "$*" 2>&1; }
run 'keyward validate'
run 'keyward plan | grep -A8 "Console steps"'
run 'CI=true keyward apply --auto-approve < /dev/null | tail -5; echo "exit ${PIPESTATUS[0]}"'
run '[ -z "$(git status --short)" ] && echo "working tree clean: no ledger written, nothing delivered"'
echo '$ keyward apply --store alma-sandbox          # at a terminal (driven through a pty)'
GOOD=$(hex) python3 - "$KW" <<'PY'
import os, pexpect, sys
c = pexpect.spawn(sys.argv[1], ["apply", "--store", "alma-sandbox"], encoding="utf-8", timeout=30)
out = []
def step(pat, send=None, hide=False):
    c.expect(pat); out.append(c.before + c.after)
    if send is not None: c.sendline(send)
step(r"(?i)yes.*: ?", "yes")
step(r"\[q\] stop: ", "y")
step(r"`q` stops\): ", "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ")
step(r"`q` stops\): ", os.environ["GOOD"])
c.expect(pexpect.EOF); out.append(c.before)
text = "".join(out).replace("\r", "")
assert os.environ["GOOD"] not in text and "AGE-SECRET-KEY-1QQQ" not in text, "a pasted value was echoed"
print(text)
c.close(); print(f"(exit {c.exitstatus})")
PY
mkdir -m 700 "$T/answers"
python3 - "$T/answers/answers.json" <<'PY'
import json, secrets, sys
json.dump({"ezproxy-local-auth": {"secret": "oa-" + secrets.token_urlsafe(24)},
           "discovery-search": {"secret": "l7xx" + secrets.token_hex(16)}}, open(sys.argv[1], "w"))
PY
chmod 600 "$T/answers/answers.json"
run "keyward apply --auto-approve --commit-deliveries --console-input $T/answers/answers.json | tail -5"
run 'for f in deliveries/*/*/g*/*.age; do echo "$f: $(age -d -i demo-identities/$(basename $f .age).txt $f | sed -E "s/\"secret\":\"([^\"]{4})[^\"]*\"/\"secret\":\"\\1…(elided)\"/")"; done'
echo '$ # each value'"'"'s SHA-256 against the ledger fingerprint:'
for f in deliveries/*/*/g*/*.age; do
  store=$(echo "$f" | cut -d/ -f2)
  h=$(age -d -i "demo-identities/$(basename "$f" .age).txt" "$f" | python3 -c 'import json,sys,hashlib; print(hashlib.sha256(json.load(sys.stdin)["secret"].encode()).hexdigest())')
  if grep -q "$h" "ledger/$store.yaml"; then echo "$f: sha256 matches ledger/$store.yaml"; else echo "$f: sha256 NOT in ledger/$store.yaml"; fi
done
run 'keyward plan --detailed-exitcode | tail -2; echo "exit ${PIPESTATUS[0]}"'
python3 - <<'PY'
import re
p = "keys/primo.yaml"; s = open(p).read()
s = s.replace("    scopes: [primo-search:read]", "    scopes: [primo-search:read]\n    state: revoked")
open(p, "w").write(s)
PY
git commit -qam "revoke discovery-search"
echo '$ # keys/primo.yaml: state: revoked, committed'
run 'keyward plan | grep -E "^[-~+]|revoke|Plan:"'
echo '$ keyward apply --store primo-production --commit-deliveries     # at a terminal'
python3 - "$KW" <<'PY'
import pexpect, sys
c = pexpect.spawn(sys.argv[1], ["apply", "--store", "primo-production", "--commit-deliveries"], encoding="utf-8", timeout=30)
out = []
c.expect(r"(?i)yes.*: ?"); out.append(c.before + c.after); c.sendline("yes")
c.expect(r"\[q\] stop: "); out.append(c.before + c.after); c.sendline("y")
c.expect(pexpect.EOF); out.append(c.before)
print("".join(out).replace("\r", "")); c.close(); print(f"(exit {c.exitstatus})")
PY
run 'keyward plan --detailed-exitcode | tail -2; echo "exit ${PIPESTATUS[0]}"'
run 'keyward expiring --within 400d | head -12'
run 'git log --oneline | head -5'
rm -rf "$T"
