#!/usr/bin/env bash
# Stop the daemons that tests/slurm/start.sh started (recorded in $SLURM_TEST_STATE),
# in reverse start order; with arguments, only the daemons named (e.g. slurmd slurmctld).
# Daemons it did not start are left running. Idempotent.
set -euo pipefail

STATE=${SLURM_TEST_STATE:-/run/pipeline-test-slurm}
say() { echo "slurm test cluster: $*"; }

comm_matches() { # pid name (Debian's slurm daemons may show as <name>-wlm)
    local comm
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    [[ $comm == "$2" || $comm == "$2-wlm" ]]
}

recorded_pid() { # name: the recorded pid if that process still runs
    local file=$STATE/$1.pid pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    if comm_matches "$pid" "$1"; then echo "$pid"; else rm -f "$file"; return 1; fi
}

stop() { # name
    local pid
    pid=$(recorded_pid "$1") || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        comm_matches "$pid" "$1" || break
        sleep 0.5
    done
    if comm_matches "$pid" "$1"; then
        kill -KILL "$pid" 2>/dev/null || true
        say "killed $1 (pid $pid) after 30 s"
    else
        say "stopped $1 (pid $pid)"
    fi
    rm -f "$STATE/$1.pid"
}

# Jobs of a test cluster we are about to take down would otherwise outlive it.
if [[ " ${*:-slurmctld} " == *" slurmctld "* ]] && recorded_pid slurmctld >/dev/null; then
    jobs=$(squeue -h -o %A 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        scancel $jobs 2>/dev/null || true
        sleep 2
    fi
fi

wanted=" ${*:-slurmd slurmctld slurmdbd mariadbd munged} "
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    [[ $wanted == *" $name "* ]] && stop "$name"
done
exit 0
