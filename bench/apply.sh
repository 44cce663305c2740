#!/usr/bin/env bash
# Issue 17's apply rows: `keyward apply --auto-approve` of N new keys with two recipients
# each (embedded SQLite stores, real age sealing, durable deliveries), beside the same
# repository's no-change `keyward plan` right after it, in one run. Goals: 10,000 keys
# <= 12x the no-change plan; 1,000 keys <= 0.5 s. Prints a Markdown section and appends it
# to docs/benchmarks.md (or $REPORT) unless NO_REPORT=1.
#
#   bench/apply.sh                      # 1,000 and 10,000 keys, 3 rounds each
#   ROUNDS=5 SIZES="1000" bench/apply.sh
#
# Each round generates a fresh repository (examples/gen_repo, 3 stores, 50 files), applies
# it (timed, peak RSS), checks that the plan is then empty, and times PLANS no-change plans
# (their median is the round's plan figure). Medians of the rounds. Not a test: numbers
# vary with the machine's load; read the ratio.
#
# The rounds' repositories are removed only when the script ends. Removing one between
# rounds made every later apply slower (1,000 keys: 0.43, 0.63, 0.86, 1.07 s; sys time
# 1.0 -> 2.4 s): ext4 skips inodes freed in the last minutes when it allocates new ones
# (perf: recently_deleted under ext4_create/ext4_mkdir, 24% of the samples), so an apply
# right after a big `rm -rf` pays for it. Leave a few minutes after deleting many files on
# the same filesystem before running this.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"1000 10000"}
PLANS=${PLANS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
[ -x /usr/bin/time ] || { echo "bench/apply.sh: needs GNU time at /usr/bin/time (apt-get install time)" >&2; exit 2; }
cargo build --release --bin keyward --example gen_repo >&2
BIN="$TARGET/release/keyward"
GEN="$TARGET/release/examples/gen_repo"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

secs() { # command... -> wall seconds (monotonic), output dropped
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>>"$WORK/log.txt"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

rows=""
for n in $SIZES; do
  : >"$WORK/apply-$n.txt"; : >"$WORK/plan-$n.txt"; : >"$WORK/rss-$n.txt"
  for r in $(seq "$ROUNDS"); do
    repo="$WORK/repo-$n-$r"
    "$GEN" --keys "$n" --stores 3 --files 50 --two-recipients --seed $((11 + r)) "$repo" 2>>"$WORK/log.txt"
    /usr/bin/time -f '%e %M' -o "$WORK/time.txt" "$BIN" -C "$repo" apply --auto-approve >/dev/null 2>>"$WORK/log.txt"
    read -r wall rss <"$WORK/time.txt"
    # %e has 10 ms resolution: enough for applies of 0.1 s and more.
    echo "$wall" >>"$WORK/apply-$n.txt"
    echo "$rss" >>"$WORK/rss-$n.txt"
    if ! "$BIN" -C "$repo" plan --detailed-exitcode >/dev/null 2>>"$WORK/log.txt"; then
      echo "bench/apply.sh: the plan after applying $n keys is not empty" >&2; exit 1
    fi
    p=$(for _ in $(seq "$PLANS"); do secs "$BIN" -C "$repo" plan; echo; done | median)
    echo "$p" >>"$WORK/plan-$n.txt"
    echo "round $r, $n keys: apply ${wall} s (${rss} KB), no-change plan ${p} s" >&2
  done
  a=$(median <"$WORK/apply-$n.txt"); p=$(median <"$WORK/plan-$n.txt"); m=$(median <"$WORK/rss-$n.txt")
  ratio=$(awk -v a="$a" -v p="$p" 'BEGIN { printf "%.1f", a / p }')
  if [ "$n" = 10000 ]; then
    goal="<= 12x the no-change plan"
    verdict=$(awk -v x="$ratio" 'BEGIN { print (x <= 12) ? "met" : "**NOT met**" }')
  elif [ "$n" = 1000 ]; then
    goal="<= 0.5 s"
    verdict=$(awk -v a="$a" 'BEGIN { print (a <= 0.5) ? "met" : "**NOT met**" }')
  else
    goal="-"; verdict="-"
  fi
  rows="$rows| $(echo "$n" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta') new keys x 2 recipients | $a s | $((m / 1024)) MB | $p s | ${ratio}x | $goal | $verdict |
"
done

section=$(cat <<EOF

### Apply in bulk (issue 17), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, keyward $(git rev-parse --short HEAD 2>/dev/null || echo '?')

Command: \`ROUNDS=$ROUNDS SIZES="$SIZES" PLANS=$PLANS bench/apply.sh\` (release build; 3 embedded
SQLite stores; medians of $ROUNDS rounds, each on a fresh repository; the plan figure is the
median of $PLANS no-change plans of the same repository right after its apply; load average
at the end $(cut -d' ' -f1-3 /proc/loadavg)).

| work | apply | apply peak RSS | no-change plan, same repo | apply / plan | goal | verdict |
|---|---:|---:|---:|---:|---|---|
$rows
EOF
)
echo "$section"
if [ "${NO_REPORT:-0}" != 1 ]; then echo "$section" >>"${REPORT:-docs/benchmarks.md}"; fi
