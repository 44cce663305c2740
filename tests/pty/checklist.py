"""Drive `keyward apply` on a console store through a real pseudo-terminal (pexpect), the
way an admin does: answer the steps, paste values at the hidden prompt. Used by
tests/console_pty.rs, which checks the ledger, the deliveries and the canary afterwards.

usage: checklist.py SCENARIO KEYWARD REPO VALUES.json TRANSCRIPT

VALUES.json holds the values to paste (outside the repository); nothing of them is ever
printed here: the transcript file is what the terminal showed.
"""

import json
import signal
import sys

import pexpect

scenario, keyward, repo, values_path, transcript_path = sys.argv[1:6]
with open(values_path) as f:
    values = json.load(f)
transcript = open(transcript_path, "a")


def spawn(*args):
    child = pexpect.spawn(
        keyward,
        ["-C", repo, *args],
        env={"PATH": "/usr/bin:/bin", "HOME": repo, "NO_COLOR": "1", "KEYWARD_ACTOR": "jdoe", "TERM": "dumb"},
        encoding="utf-8",
        timeout=60,
        dimensions=(50, 200),
    )
    child.logfile_read = transcript
    transcript.write(f"\n$ keyward {' '.join(args)}\n")
    return child


def expect(child, text):
    try:
        child.expect_exact(text)
    except (pexpect.TIMEOUT, pexpect.EOF):
        raise SystemExit(f"expected {text!r}; the terminal showed:\n{child.before}")


def paste(child, value):
    """At the hidden prompt: echo is already off when the prompt shows (keyward turns it
    off before writing the prompt), so a value pasted at once is never echoed."""
    expect(child, "(input hidden; `s` skips, `q` stops): ")
    # Typed the moment the prompt shows, with no wait: had echo gone off only after the
    # prompt was written, a value typed at once could be echoed (tests/console_pty.rs
    # scans the transcript for every pasted value).
    child.send(value + "\r")
    if child.getecho():
        raise SystemExit("echo was still on after the paste prompt showed")


def approve(child):
    expect(child, "Enter a value: ")
    child.sendline("yes")


def done(child, question="Done in the console? [y] done / [s] skip / [q] stop: "):
    expect(child, question)
    child.sendline("y")


def finish(child, code):
    child.expect(pexpect.EOF)
    child.close()
    if child.exitstatus != code:
        raise SystemExit(f"exit {child.exitstatus} (signal {child.signalstatus}), wanted {code}:\n{child.before}")


if scenario == "create":
    # Wrong shapes first (an age key, another vendor's format, an empty line, two lines),
    # each refused and asked again; then the right value.
    child = spawn("apply", "--store", "alma-production")
    approve(child)
    expect(child, "create alma-production/illiad-barcode-lookup")
    expect(child, "Add these API areas, each at the level shown:")
    done(child)
    paste(child, "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ")
    expect(child, "refused: ")
    paste(child, values["openathens"])
    expect(child, "refused: ")
    paste(child, "")
    expect(child, "refused: ")
    paste(child, values["first_half"] + "\r" + values["second_half"])
    expect(child, "refused: ")
    paste(child, values["production"])
    expect(child, "Apply complete: 1 change(s) applied, 0 failed.")
    finish(child, 0)
elif scenario == "interrupt":
    # Made in the console, then Ctrl-C at the paste prompt: the step stays pending (exit 3).
    child = spawn("apply", "--store", "alma-sandbox")
    approve(child)
    done(child)
    expect(child, "(input hidden; `s` skips, `q` stops): ")
    child.waitnoecho(timeout=10)
    child.send("\x03")
    expect(child, "1 manual step pending for store alma-sandbox")
    finish(child, 3)
    # Begun again and killed outright at the paste prompt.
    child = spawn("apply", "--store", "alma-sandbox")
    approve(child)
    expect(child, "was never pasted here")
    done(child, "Was `illiad-barcode-lookup` made in the console? [y] yes, it was made / [n] it was not made / [s] skip / [q] stop: ")
    expect(child, "(input hidden; `s` skips, `q` stops): ")
    child.kill(signal.SIGKILL)
    child.expect(pexpect.EOF)
    child.close()
elif scenario == "resume":
    child = spawn("apply", "--store", "alma-sandbox")
    approve(child)
    expect(child, "was never pasted here")
    done(child, "Was `illiad-barcode-lookup` made in the console? [y] yes, it was made / [n] it was not made / [s] skip / [q] stop: ")
    paste(child, values["sandbox"])
    expect(child, "Apply complete: 1 change(s) applied, 0 failed.")
    finish(child, 0)
elif scenario == "revoke":
    child = spawn("apply", "--store", "alma-production")
    approve(child)
    expect(child, "revoke alma-production/illiad-barcode-lookup")
    expect(child, "delete the key `illiad-barcode-lookup` (Alma production)")
    done(child)
    expect(child, "Apply complete: 1 change(s) applied, 0 failed.")
    finish(child, 0)
elif scenario == "audit":
    child = spawn("audit", "--store", "alma-sandbox")
    expect(child, "`illiad-barcode-lookup` (sandbox, owner jdoe): ")
    done(child, "Is it in the console, exactly so? [y] yes, as listed / [n] no, it is not there / [s] skip / [q] stop: ")
    expect(child, "Audit of alma-sandbox: 1 as listed, 0 not in the console, 0 skipped.")
    finish(child, 0)
elif scenario == "import":
    # `keyward import --store X` on a filled-in template: each `value: paste` key's current
    # value at the hidden prompt (wrong shapes and a value already pasted for another key
    # refused and asked again), the undelivered key only named.
    child = spawn("import", "--store", "alma-sandbox")
    expect(child, "[1/3] alma-sandbox/course-reserves (owner jdoe): ")
    paste(child, values["openathens"])
    expect(child, "refused: that is not an Alma key")
    paste(child, "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ")
    expect(child, "refused: that is an age private key")
    paste(child, "")
    expect(child, "refused: nothing was pasted")
    paste(child, values["import_a"])
    expect(child, "[2/3] alma-sandbox/ill-requests (owner asmith): ")
    paste(child, values["import_a"])
    expect(child, "refused: that value is already recorded for `course-reserves`")
    paste(child, values["import_b"])
    expect(child, "[3/3] alma-sandbox/old-report (owner asmith): ")
    expect(child, "undelivered: its recipients get a value at the next rotation.")
    expect(child, "Imported 3 key(s) from alma-sandbox: 2 delivered")
    finish(child, 0)
else:
    raise SystemExit(f"unknown scenario {scenario}")
