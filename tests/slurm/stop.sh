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

# With a slurm.conf but no controller, every SLURM client call waits ~9 s for it, and
# the executor plugin runs `scontrol show config` whenever snakemake starts (even for
# local runs). Remove the configuration start.sh wrote once no controller is left;
# start.sh writes it again.
controller_running=0
for dir in /proc/[0-9]*; do
    if comm_matches "${dir#/proc/}" slurmctld; then controller_running=1; break; fi
done
if [[ $controller_running -eq 0 ]]; then
    for conf in /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf; do
        if [[ -f $conf ]] && grep -qF "# Written by the pipeline's tests/slurm/start.sh" "$conf"; then
            rm -f "$conf"
        fi
    done
fi
exit 0
