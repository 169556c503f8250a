#!/usr/bin/env bash
# Start a single-node SLURM cluster on localhost with two fake GPUs:
# munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd, in that order.
#
# Idempotent: a daemon that already runs is left alone (and not recorded, so stop.sh
# will not stop what this script did not start). Daemons started here are recorded in
# $SLURM_TEST_STATE (default /run/pipeline-test-slurm) for stop.sh.
#
# Partitions: "cpu" and "gpu" (the node is in both, 2 GPUs on it) and the default
# partition "batch", where a job lands that names no partition.
# Needs root and the packages of install.sh. Exits non-zero, with the tail of the
# failing daemon's log, if the cluster does not come up.
set -euo pipefail

STATE=${SLURM_TEST_STATE:-/run/pipeline-test-slurm}
LOGDIR=/var/log/slurm
PIDDIR=/run/slurm
CONF=/etc/slurm
CLUSTER=pipeline-test
MARK="# Written by the pipeline's tests/slurm/start.sh (single-node test cluster)."
TIMEOUT=${SLURM_TEST_START_TIMEOUT:-60}

die() { echo "slurm test cluster: $*" >&2; exit 1; }
say() { echo "slurm test cluster: $*"; }

[[ $EUID -eq 0 ]] || die "start.sh needs root"
for tool in munged mariadbd slurmdbd slurmctld slurmd sinfo sacctmgr; do
    command -v "$tool" >/dev/null || die "$tool is missing: run tests/slurm/install.sh first"
done

mkdir -p "$STATE" "$LOGDIR" "$PIDDIR" /run/munge /run/mysqld /var/log/munge /var/log/mysql
chown slurm:slurm "$LOGDIR" "$PIDDIR"
chown munge:munge /run/munge /var/log/munge
chown mysql:mysql /run/mysqld /var/log/mysql

# ---- helpers ---------------------------------------------------------------
# Debian's slurmctld/slurmd are symlinks to *-wlm binaries: compare /proc/PID/comm
# against both names.
comm_matches() { # pid name
    local comm
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    [[ $comm == "$2" || $comm == "$2-wlm" ]]
}

running() { # name: is any process of that name alive?
    local dir
    for dir in /proc/[0-9]*; do
        comm_matches "${dir#/proc/}" "$1" && return 0
    done
    return 1
}

launch() { # name command...: start in its own session, record its pid
    local name=$1
    shift
    if running "$name"; then
        say "$name already running, left alone"
        return 0
    fi
    # setsid: a Ctrl-C in the caller's terminal must not reach the daemons.
    setsid "$@" </dev/null >>"$LOGDIR/$name.out" 2>&1 &
    echo $! >"$STATE/$name.pid"
    say "started $name (pid $!)"
}

wait_until() { # description log command...: poll until the command succeeds
    local what=$1 log=$2
    shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "---- tail of $log" >&2
            tail -n 30 "$log" >&2 2>/dev/null || true
            die "$what did not come up within ${TIMEOUT}s"
        fi
        sleep 0.5
    done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_managed() { # path mode owner: write stdin to path unless someone else's file is there
    local path=$1 mode=$2 owner=$3 tmp
    if [[ -e $path ]] && ! grep -qF "$MARK" "$path"; then
        die "refusing to overwrite $path: it was not written by this script"
    fi
    tmp=$(mktemp "$path.XXXXXX")
    { echo "$MARK"; cat; } >"$tmp"
    chmod "$mode" "$tmp"
    chown "$owner" "$tmp"
    mv -f "$tmp" "$path"
}

# ---- configuration -----------------------------------------------------------
# Fake GPUs: device files that exist (slurmd waits forever on missing ones); nothing
# isolates them, but jobs get CUDA_VISIBLE_DEVICES as on a real GPU node.
mkdir -p "$STATE/dev"
for i in 0 1; do ln -sfn /dev/null "$STATE/dev/nvidia$i"; done

read -r cpus mem < <(slurmd -C | awk '/^NodeName/ {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    print v["CPUs"], v["RealMemory"] }')
[[ -n $cpus && -n $mem ]] || die "could not read the node's CPUs and memory from 'slurmd -C'"
# Rules ask for up to 8 GB (training); advertise at least 16 GB so every rule is
# schedulable on small CI machines. Nothing enforces memory or CPUs here (no cgroups),
# and config_overrides keeps the node from being drained for advertising more.
if ((mem < 16384)); then mem=16384; fi
# Training and sampling take 2 CPUs each: advertise at least 4 so that two GPU jobs run
# side by side (one per fake GPU) on a 2-core CI machine, as they would on a GPU node.
if ((cpus < 4)); then cpus=4; fi

write_managed "$CONF/slurm.conf" 0644 root:root <<EOF
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$PIDDIR/slurmctld.pid
SlurmdPidFile=$PIDDIR/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SlurmdParameters=config_overrides
# No cgroups on the test machine. No CPU binding either: the node advertises more CPUs than
# the machine has (see above), and task/affinity then maps a 2-CPU job onto one real core and
# intermittently fails its step ("failed to distribute tasks", "Unable to layout tasks on
# given cpus"), which Snakemake's retries hid as extra submissions.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a per-CPU default a job without --mem takes the whole node.
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=batch Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=localhost MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
EOF

write_managed "$CONF/gres.conf" 0644 root:root <<EOF
AutoDetect=off
NodeName=localhost Name=gpu File=$STATE/dev/nvidia[0-1]
EOF

# slurmdbd refuses a config file that others can read.
write_managed "$CONF/slurmdbd.conf" 0600 slurm:slurm <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$PIDDIR/slurmdbd.pid
LogFile=$LOGDIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db
EOF

# ---- daemons -----------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
launch munged setpriv --reuid=munge --regid=munge --clear-groups munged --foreground
wait_until munged /var/log/munge/munged.log bash -c 'munge -n | unmunge'

launch mariadbd mariadbd --user=mysql --skip-networking --innodb-buffer-pool-size=1G \
    --innodb-lock-wait-timeout=900 --log-error=/var/log/mysql/error.log
wait_until mariadbd /var/log/mysql/error.log mariadb-admin --no-defaults ping
# slurmdbd runs as the OS user slurm and logs in as the database user slurm through
# the socket: no password anywhere.
mariadb --no-defaults -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

launch slurmdbd slurmdbd -D
wait_until slurmdbd "$LOGDIR/slurmdbd.log" port_open 6819
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

launch slurmctld slurmctld -D
wait_until slurmctld "$LOGDIR/slurmctld.log" bash -c 'scontrol ping | grep -q UP'

launch slurmd slurmd -D -N localhost
node_ready() {
    local state
    state=$(sinfo -h -n localhost -o %t | head -n 1)
    case $state in
        idle* | mix* | alloc*) return 0 ;;
        # A node drained by an earlier bad registration stays drained across restarts.
        drain* | drng* | down* | inval*) scontrol update nodename=localhost state=resume 2>/dev/null ;;
    esac
    return 1
}
wait_until slurmd "$LOGDIR/slurmd.log" node_ready
say "up: $(sinfo -h -o '%P %D %t %G' | tr '\n' ';')"
