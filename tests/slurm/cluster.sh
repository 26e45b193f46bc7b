#!/usr/bin/env bash
# A one-node SLURM cluster on this machine: phasescan's SLURM tests run against it, and a user
# tries the SLURM path with it (docs/scale-out.md). Debian's packages, run as root, no systemd:
# munge (authentication), MariaDB and slurmdbd (accounting: submitit reads a job's state with
# sacct, and without it a cancelled job never reads as finished), slurmctld and slurmd. Every
# file (configs, databases, spools, logs, PID files) lives under one state folder.
#
#   eval "$(tests/slurm/cluster.sh up)"   # install if needed, start, wait for the node; prints
#                                         # the `export SLURM_CONF=...` that sbatch/sacct need
#   tests/slurm/cluster.sh status         # which daemons run (exit 1 if any does not)
#   tests/slurm/cluster.sh down           # cancel the jobs, stop every daemon by its PID
#
# PHASESCAN_SLURM_DIR: the state folder (default ${TMPDIR:-/tmp}/phasescan-slurm). `up` is
# idempotent: daemons already running are kept, a stopped one is started again with its state.
# Ports: slurmctld 6817, slurmd 6818, slurmdbd 6819 (SLURM's defaults), MariaDB 127.0.0.1:3316.
set -euo pipefail

STATE=${PHASESCAN_SLURM_DIR:-${TMPDIR:-/tmp}/phasescan-slurm}
CLUSTER=phasescan
PARTITION=debug
DB_PORT=3316
PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)
COMMANDS=(munged munge mariadbd mariadb-install-db mariadb slurmdbd slurmctld slurmd sbatch sacct sacctmgr)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)  # start order; `down` stops in reverse

export SLURM_CONF=$STATE/etc/slurm.conf
MUNGE_SOCKET=$STATE/run/munge.socket
DB_SOCKET=$STATE/run/mariadb.socket

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

pid_file() { echo "$STATE/run/$1.pid"; }

running() {  # running DAEMON: its PID file names a live process of that name
    local pid
    pid=$(cat "$(pid_file "$1")" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]]
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND (quick to fail) every 0.5 s for SECONDS
    local until=$((SECONDS + $1)) seconds=$1 what=$2
    shift 2
    while ((SECONDS < until)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    die "$what did not come up in ${seconds} s (logs: $STATE/log/)"
}

install_packages() {
    local missing=()
    for command in "${COMMANDS[@]}"; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    ((${#missing[@]} == 0)) && return
    [[ $(id -u) == 0 ]] || die "not installed: ${missing[*]}; installing them needs root"
    command -v apt-get >/dev/null || die "not installed: ${missing[*]}, and no apt-get to install ${PACKAGES[*]}"
    say "installing ${PACKAGES[*]} from Debian's packages"
    # The packages' init scripts would start daemons of their own, with the system's paths:
    # a policy-rc.d that denies every start, unless the machine has one already.
    local policy=/usr/sbin/policy-rc.d own_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
    fi
    local status=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; } \
        >"$STATE/log/apt.log" 2>&1 || status=$?
    [[ -n $own_policy ]] && rm -f "$policy"
    ((status == 0)) || die "apt-get failed (exit $status); see $STATE/log/apt.log"
}

write_configs() {
    mkdir -p "$STATE"/{etc,run,log,munge,mariadb,spool/slurmctld,spool/slurmd}
    chmod 700 "$STATE/munge"
    [[ -s $STATE/munge/munge.key ]] || mungekey --create --keyfile="$STATE/munge/munge.key"
    chmod 600 "$STATE/munge/munge.key"
    [[ -s $STATE/etc/db.password ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/etc/db.password")

    # The node as slurmd sees this machine (CPUs, sockets, memory), so jobs ask for what exists.
    local node
    node=$(slurmd -C | grep '^NodeName=')
    cat >"$SLURM_CONF" <<EOF
# Written by tests/slurm/cluster.sh: a one-node cluster for phasescan's SLURM path.
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups (a container's may be read-only): processes tracked by their parent PIDs.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# For the connection to slurmdbd this names munge's socket (AuthInfo does not reach it).
AccountingStoragePass=$MUNGE_SOCKET
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job that names no memory gets this much per CPU, not the whole node (which would run the
# shards of an array one at a time).
DefMemPerCPU=2048
MpiDefault=none
ReturnToService=2
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmdbd refuses a config that others can read: it holds the database password.
    (umask 077; cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$STATE/etc/db.password")
StorageLoc=slurm_acct_db
PidFile=$(pid_file slurmdbd)
LogFile=$STATE/log/slurmdbd.log
EOF
    )
    chmod 600 "$STATE/etc/slurmdbd.conf"
}

munge_works() { munge -n --socket="$MUNGE_SOCKET" | unmunge --socket="$MUNGE_SOCKET"; }
db() { mariadb --no-defaults --socket="$DB_SOCKET" -u root "$@"; }
slurmdbd_works() { timeout 10 sacctmgr -n -P list cluster; }
node_idle() { [[ $(timeout 10 sinfo -h -N -o %T) == idle ]]; }

start_munged() {
    munged --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$(pid_file munged)" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munge.seed" --force
    wait_for 10 munge munge_works
}

start_mariadbd() {
    if [[ ! -d $STATE/mariadb/mysql ]]; then
        mariadb-install-db --no-defaults --user=root --datadir="$STATE/mariadb" --skip-test-db \
            --auth-root-authentication-method=socket >"$STATE/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
    fi
    setsid mariadbd --no-defaults --user=root --datadir="$STATE/mariadb" --socket="$DB_SOCKET" \
        --pid-file="$(pid_file mariadbd)" --bind-address=127.0.0.1 --port=$DB_PORT \
        --skip-name-resolve --log-error="$STATE/log/mariadb.log" </dev/null >/dev/null 2>&1 &
    wait_for 30 MariaDB db -e "select 1"
    local password
    password=$(cat "$STATE/etc/db.password")
    db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
           ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
           GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
    slurmdbd
    wait_for 30 slurmdbd slurmdbd_works
    # The cluster must be known to accounting before slurmctld registers with it.
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
}

start_slurmctld() {
    slurmctld
    wait_for 30 slurmctld timeout 10 scontrol ping
}

start_slurmd() {
    slurmd
    wait_for 60 "the node (idle in sinfo)" node_idle
}

up() {
    local t0=$SECONDS
    mkdir -p "$STATE/log"
    install_packages
    write_configs
    for daemon in "${DAEMONS[@]}"; do
        if running "$daemon"; then
            say "$daemon: running (PID $(cat "$(pid_file "$daemon")"))"
        else
            "start_$daemon"
            say "$daemon: started (PID $(cat "$(pid_file "$daemon")"))"
        fi
    done
    # A node left down or drained by an earlier run: back to service.
    node_idle || scontrol update nodename="$(sinfo -h -N -o %N)" state=resume 2>/dev/null || true
    wait_for 30 "the node (idle in sinfo)" node_idle
    say "up in $((SECONDS - t0)) s: partition $PARTITION, $(sinfo -h -N -o '%c CPUs, %m MB')"
    echo "export SLURM_CONF=$SLURM_CONF"
}

down() {
    if running slurmctld; then
        scancel --full --user=root 2>/dev/null || true
        for ((i = 0; i < 60; i++)); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    for ((d = ${#DAEMONS[@]} - 1; d >= 0; d--)); do
        local daemon=${DAEMONS[d]} pid
        running "$daemon" || continue
        pid=$(cat "$(pid_file "$daemon")")
        kill -TERM "$pid"
        for ((i = 0; i < 60; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "$daemon (PID $pid) did not stop in 30 s: killed"
            kill -KILL "$pid"
        fi
        say "$daemon: stopped (PID $pid)"
    done
}

status() {
    local all=0
    for daemon in "${DAEMONS[@]}"; do
        if running "$daemon"; then
            say "$daemon: running (PID $(cat "$(pid_file "$daemon")"))"
        else
            say "$daemon: not running"
            all=1
        fi
    done
    return $all
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: cluster.sh up|down|status (got '${1:-}'); state folder: $STATE" ;;
esac
