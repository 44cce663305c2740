#!/usr/bin/env bash
# keyward's benchmark harness (not part of .ci/run).
#
#   bench/run.sh            full run: 1k / 10k / 100k keys; rewrites the generated block of
#                           docs/benchmarks.md (between the bench:begin/end markers only)
#   bench/run.sh --quick    small run (1k / 10k, fewer repetitions); prints the table and
#                           leaves docs/ alone
#
# What it does: builds release once (keyward + examples gen_repo and floor), generates
# repos with examples/gen_repo, populates their stores (the real `keyward apply` for 1k
# keys, the bench-only bulk path `floor populate` for 10k and 100k), checks that a re-plan
# shows no changes, then times the no-change `keyward plan` with hyperfine next to its
# floors (`floor parse`: spec::load alone; `floor list`: opening the stores and listing
# them alone) in the same run, measures peak RSS with /usr/bin/time, and times the real
# `keyward apply --auto-approve` of 1,000 new keys with two recipients each.
#
# Environment: BENCH_DIR (scratch directory, default a new /tmp/keyward-bench.*; it is
# kept, so the repos can be inspected), CARGO_TARGET_DIR (default target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=0
for a in "$@"; do
    case "$a" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown argument: $a" >&2; exit 1 ;;
    esac
done

need() { command -v "$1" >/dev/null 2>&1; }
if ! need hyperfine; then
    if [ "$(id -u)" = 0 ] && need apt-get; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >/dev/null
    else
        echo "hyperfine is needed (apt-get install hyperfine)" >&2; exit 1
    fi
fi
[ -x /usr/bin/time ] || { echo "GNU time is needed at /usr/bin/time (apt-get install time)" >&2; exit 1; }
need python3 || { echo "python3 is needed to write the report" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
echo "== building release (once)" >&2
cargo build --release --quiet --bin keyward --example gen_repo --example floor
BIN=$CARGO_TARGET_DIR/release/keyward
GEN=$CARGO_TARGET_DIR/release/examples/gen_repo
FLOOR=$CARGO_TARGET_DIR/release/examples/floor

WORK=${BENCH_DIR:-$(mktemp -d /tmp/keyward-bench.XXXXXX)}
mkdir -p "$WORK"
RESULTS=$WORK/results
rm -rf "$RESULTS"; mkdir -p "$RESULTS"
echo "== scratch directory: $WORK" >&2

if [ $QUICK = 1 ]; then
    SIZES="1000 10000"; RUNS=3; APPLY_RUNS=1
else
    SIZES="1000 10000 100000"; RUNS=10; APPLY_RUNS=3
fi
export NO_COLOR=1 KEYWARD_ACTOR=bench

# --- plan: generate, populate, check, time -------------------------------------------
for n in $SIZES; do
    repo=$WORK/plan-$n
    rm -rf "$repo"
    "$GEN" --keys "$n" --stores 3 --files 50 --seed 7 "$repo" 2>>"$RESULTS/log.txt"
    if [ "$n" -le 1000 ]; then
        echo "== plan-$n: populating with the real keyward apply" >&2
        /usr/bin/time -f '%e %M' -o "$RESULTS/populate-$n.time" \
            "$BIN" -C "$repo" apply --auto-approve >/dev/null 2>"$RESULTS/populate-$n.err"
        echo apply >"$RESULTS/populate-$n.how"
    else
        echo "== plan-$n: populating with the bulk path (floor populate)" >&2
        /usr/bin/time -f '%e %M' -o "$RESULTS/populate-$n.time" \
            "$FLOOR" populate "$repo" 2>"$RESULTS/populate-$n.err"
        echo bulk >"$RESULTS/populate-$n.how"
    fi
    # The measured plan must be the no-change plan.
    if ! "$BIN" -C "$repo" plan --detailed-exitcode >"$RESULTS/plan-$n.out" 2>&1; then
        echo "plan-$n: the re-plan after populating is not empty (see $RESULTS/plan-$n.out)" >&2
        exit 1
    fi
    r=$RUNS; [ "$n" -ge 100000 ] && r=$(( RUNS / 2 ))
    echo "== plan-$n: timing plan and floors ($r runs each)" >&2
    hyperfine --style none --warmup 1 --runs "$r" -N \
        --export-json "$RESULTS/hyperfine-$n.json" \
        -n plan "$BIN -C $repo plan" \
        -n parse "$FLOOR parse $repo" \
        -n yaml "$FLOOR yaml $repo" \
        -n list "$FLOOR list $repo" >/dev/null
    for what in plan parse yaml list; do
        case $what in
            plan) cmd=("$BIN" -C "$repo" plan) ;;
            *) cmd=("$FLOOR" "$what" "$repo") ;;
        esac
        /usr/bin/time -f '%e %M' -o "$RESULTS/rss-$what-$n.time" "${cmd[@]}" >/dev/null 2>&1
    done
    "$FLOOR" phases "$repo" 2>"$RESULTS/phases-$n.txt"
done

# --- apply: 1,000 new keys, two recipients each -----------------------------------------
for i in $(seq 1 $APPLY_RUNS); do
    repo=$WORK/apply-1000
    rm -rf "$repo"
    "$GEN" --keys 1000 --stores 3 --files 50 --two-recipients --seed 11 "$repo" 2>>"$RESULTS/log.txt"
    echo "== apply-1000: run $i" >&2
    sync
    /usr/bin/time -f '%e %M' -o "$RESULTS/apply-$i.time" \
        "$BIN" -C "$repo" apply --auto-approve >/dev/null 2>"$RESULTS/apply-$i.err"
    envelopes=$(find "$repo/deliveries" -name '*.age' | wc -l)
    echo "$envelopes" >"$RESULTS/apply-$i.envelopes"
    "$BIN" -C "$repo" plan --detailed-exitcode >/dev/null 2>&1 \
        || { echo "apply-1000: re-plan after apply is not empty" >&2; exit 1; }
done

# --- report --------------------------------------------------------------------------
{
    echo "nproc=$(nproc)"
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "mem=$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "fs=$(df -T "$WORK" | awk 'NR==2 {print $2}')"
    echo "rustc=$(rustc --version)"
    echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
    echo "date=$(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "quick=$QUICK"
    echo "sizes=$SIZES"
    echo "runs=$RUNS"
    echo "apply_runs=$APPLY_RUNS"
} >"$RESULTS/machine.txt"

python3 bench/report.py "$RESULTS" >"$RESULTS/report.md"
if [ $QUICK = 1 ]; then
    cat "$RESULTS/report.md"
else
    python3 bench/report.py --splice docs/benchmarks.md "$RESULTS/report.md"
    cat "$RESULTS/report.md"
    echo "== wrote docs/benchmarks.md" >&2
fi
