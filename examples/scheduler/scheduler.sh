#!/bin/sh
# Run on every host: the host elected leader of PREFIX/election takes jobs from the queue
# PREFIX/jobs and runs them one at a time; the others wait as standbys and take over when the
# leader's `waypost elect` exits (host death, session expiry, Ctrl-C).
#
#   examples/scheduler/scheduler.sh [PREFIX]          # default PREFIX: scheduler
#   waypost queue push scheduler/jobs 'echo hello from $(hostname)'
#
# Environment: WAYPOST (the CLI, default "waypost"), WAYPOST_HTTP_ADDR (the agent), POP_TIMEOUT
# (how long one pop waits before re-checking leadership, default 10s). Each job runs with
# WAYPOST_LEADER_FENCE set to the election's fencing token, for guarded KV writes (?fence=).
set -u
PREFIX=${1:-scheduler}
WAYPOST=${WAYPOST:-waypost}
POP_TIMEOUT=${POP_TIMEOUT:-10s}
log=$(mktemp)
elect_pid=""

cleanup() {
    [ -n "$elect_pid" ] && kill "$elect_pid" 2>/dev/null
    rm -f "$log" "$log.err"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

while :; do
    : > "$log"
    $WAYPOST elect -name "$(hostname)-$$" "$PREFIX/election" > "$log" 2>&1 &
    elect_pid=$!
    # standby until elected (or until the campaign fails, e.g. the agent is down)
    until grep -q '^Elected leader:' "$log"; do
        if ! kill -0 "$elect_pid" 2>/dev/null; then
            cat "$log" >&2; sleep 2; continue 2
        fi
        sleep 0.5
    done
    WAYPOST_LEADER_FENCE=$(sed -n 's/^Elected leader: .* (fence token \(.*\))$/\1/p' "$log")
    export WAYPOST_LEADER_FENCE
    echo "leader: running jobs from $PREFIX/jobs" >&2
    # lead while our elect process lives; each pop claims a job exactly once across all hosts
    while kill -0 "$elect_pid" 2>/dev/null; do
        job=$($WAYPOST queue pop -timeout "$POP_TIMEOUT" "$PREFIX/jobs" 2>"$log.err"); rc=$?
        [ "$rc" -eq 2 ] && continue                        # queue empty: re-check leadership
        if [ "$rc" -ne 0 ]; then cat "$log.err" >&2; sleep 1; continue; fi
        echo "running: $job" >&2
        sh -c "$job" || echo "job failed ($?): $job" >&2
    done
    echo "lost leadership; campaigning again" >&2
    wait "$elect_pid" 2>/dev/null
    elect_pid=""
done
