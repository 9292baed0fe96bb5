#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, for the sweep runner's end-to-end test.
#
#   tests/slurm/cluster.sh start DIR    # generate a config under DIR, start munged, slurmctld, slurmd; wait until idle
#   source DIR/env                      # SLURM_CONF for the client commands (sbatch, squeue, scontrol, ...)
#   tests/slurm/cluster.sh stop DIR     # cancel its jobs, stop the three daemons started for DIR (pid files)
#   tests/slurm/cluster.sh check        # exit 0 when this machine can run it (the tools are installed, root)
#
# Everything lives in DIR: the munge key and socket, slurm.conf, state and spool folders, pid files and daemon logs.
# Daemons listen on free loopback ports only (SlurmctldHost=localhost), so nothing is reachable from outside and
# several clusters can coexist. Needs root (slurmd starts jobs as their user) and Debian's slurm-wlm + munge
# packages (apt-get install slurm-wlm munge). The node is this machine: all its CPUs, 80 % of its memory, one
# partition `cpu`. ProctrackType=proctrack/linuxproc (no cgroups needed inside a container) and TaskPlugin=task/none.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR | $0 check" >&2; exit 2; }

check() {
    for tool in munged mungekey slurmctld slurmd sinfo sbatch srun squeue scancel; do  # the test's clients too
        command -v "$tool" >/dev/null || { echo "error: $tool not found: apt-get install -y slurm-wlm munge" >&2; exit 3; }
    done
    [[ $(id -u) -eq 0 ]] || { echo "error: the test cluster runs slurmd, which needs root" >&2; exit 3; }
}

if [[ $# -eq 1 && $1 == check ]]; then check; exit 0; fi
[[ $# -eq 2 ]] || usage
action=$1
dir=$(realpath -m "$2")

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop_pid_file() {  # stop the daemon whose pid is in $1 (SIGTERM, then SIGKILL after 10 s)
    local file=$1 pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

start() {
    check
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chmod 700 "$dir/munge"
    mungekey --create --force --keyfile="$dir/munge/munge.key" >/dev/null
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed"

    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat > "$dir/slurm.conf" <<EOF
ClusterName=sweeptest
SlurmctldHost=localhost
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/socket,cred_expire=5
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    echo "export SLURM_CONF=$dir/slurm.conf" > "$dir/env"
    export SLURM_CONF=$dir/slurm.conf
    slurmctld -c -i
    slurmd -N localhost
    for _ in $(seq 150); do  # up to 30 s for the node to register
        if [[ $(sinfo --noheader --nodes=localhost --format=%t 2>/dev/null) == idle* ]]; then
            echo "SLURM test cluster up: SLURM_CONF=$SLURM_CONF ($cpus CPUs, partition cpu)"
            return 0
        fi
        sleep 0.2
    done
    echo "error: the node did not become idle; logs: $dir/slurmctld.log $dir/slurmd.log" >&2
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    exit 1
}

stop() {
    if [[ -f $dir/slurmctld.pid ]] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
        export SLURM_CONF=$dir/slurm.conf  # cancel what still runs: job steps outlive slurmd
        scancel --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 100); do [[ -z $(squeue --noheader 2>/dev/null) ]] && break; sleep 0.2; done
    fi
    stop_pid_file "$dir/slurmd.pid"
    stop_pid_file "$dir/slurmctld.pid"
    stop_pid_file "$dir/munged.pid"
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
