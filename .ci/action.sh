#!/usr/bin/env bash
# The step of action.yml that runs keyward (a file, so tests/action.rs runs it for real).
# In: COMMAND (plan | apply | expiring), ARGS (split at whitespace), PLAN_PATH (default
# $RUNNER_TEMP/keyward-plan.json), PLAN_ARTIFACT (apply: a downloaded plan in
# $RUNNER_TEMP/keyward-plan-artifact/ is applied exactly). Out ($GITHUB_OUTPUT): exitcode,
# has-changes, plan-path, saved (plan), markdown (plan: the comment's file). Always exits 0:
# the action's last step fails the job on keyward's 1 or 3, after the comment and artifact.
set -uo pipefail
out="${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
summary="${GITHUB_STEP_SUMMARY:-/dev/null}"
tmp="${RUNNER_TEMP:-${TMPDIR:-/tmp}}"
mkdir -p "$tmp"
plan="${PLAN_PATH:-$tmp/keyward-plan.json}"
read -r -a args <<< "${ARGS:-}"
# CI has no terminal; NO_COLOR keeps escapes out of logs and comments.
export NO_COLOR=1

code=0
has=false
case "${COMMAND:-}" in
    plan)
        md="$tmp/keyward-plan.md"
        rm -f "$plan" "$md"
        # On a pull request the stores' connection settings must come from the base (a PR
        # must not choose where the token goes): add --base when the workflow did not.
        if [ "${GITHUB_EVENT_NAME:-}" = pull_request ] && [ -n "${GITHUB_BASE_REF:-}" ] \
            && [[ " ${args[*]:-} " != *" --base"* ]]; then
            args+=(--base "origin/$GITHUB_BASE_REF")
        fi
        keyward plan --format markdown --detailed-exitcode --out "$plan" "${args[@]}" > "$md"
        code=$?
        [ "$code" -eq 2 ] && has=true
        saved=false
        [ -s "$plan" ] && saved=true
        [ -s "$md" ] && cat "$md" >> "$summary"
        {
            echo "saved=$saved"
            echo "plan-path=$plan"
            if [ -s "$md" ]; then echo "markdown=$md"; else echo "markdown="; fi
        } >> "$out"
        ;;
    apply)
        # --commit-deliveries needs an author; a runner has none configured.
        if ! git config user.name >/dev/null 2>&1; then
            export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-keyward}" GIT_COMMITTER_NAME="${GIT_COMMITTER_NAME:-keyward}"
            export GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-keyward@users.noreply.github.com}"
            export GIT_COMMITTER_EMAIL="${GIT_COMMITTER_EMAIL:-keyward@users.noreply.github.com}"
        fi
        file=()
        if [ -n "${PLAN_ARTIFACT:-}" ]; then
            saved_plan=$(find "$tmp/keyward-plan-artifact" -maxdepth 1 -name '*.json' 2>/dev/null | head -n 1)
            if [ -z "$saved_plan" ]; then
                echo "::error::no saved plan in the artifact '$PLAN_ARTIFACT'"
                echo "exitcode=1" >> "$out"
                exit 0
            fi
            file=("$saved_plan")
            plan="$saved_plan"
        fi
        log="$tmp/keyward-apply.log"
        keyward apply --auto-approve "${args[@]}" "${file[@]}" | tee "$log"
        code=${PIPESTATUS[0]}
        if [ "$code" -eq 0 ] && ! grep -q '^No changes\.' "$log"; then has=true; fi
        if [ ${#file[@]} -gt 0 ]; then echo "plan-path=$plan" >> "$out"; else echo "plan-path=" >> "$out"; fi
        ;;
    expiring)
        md="$tmp/keyward-expiring.md"
        keyward expiring "${args[@]}" | tee "$md"
        code=${PIPESTATUS[0]}
        cat "$md" >> "$summary"
        [ "$code" -eq 2 ] && has=true
        echo "plan-path=" >> "$out"
        ;;
    *)
        echo "::error::command must be plan, apply or expiring (got '${COMMAND:-}')"
        code=1
        ;;
esac
echo "exitcode=$code" >> "$out"
echo "has-changes=$has" >> "$out"
exit 0
