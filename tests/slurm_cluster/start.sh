#!/usr/bin/env bash
# Starts a real one-node Slurm cluster with accounting: munge, MariaDB,
# slurmdbd, slurmctld, slurmd. Waits until the node has registered and sacct
# works, then prints `export VAR=value` lines on stdout, so a caller can do
#   eval "$(sudo tests/slurm_cluster/start.sh)"
# Progress and errors go to stderr. A running cluster is stopped first, and
# the state dir (CGB_SLURM_STATE, default /tmp/cgb-slurm) is wiped: every
# start is a fresh cluster with job ids from 1 and an empty accounting DB.
# A config in /etc/slurm that start.sh did not write is moved aside while the
# cluster runs and put back by stop.sh; one that a Slurm in use reads is never
# touched: start.sh then refuses, with exit status 3 (as for a port that is
# taken, or when not root).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/_common.sh
source "$HERE/_common.sh"

T_START=$(date +%s)
RUN=$STATE/run   # pid files
LOGS=$STATE/log
DB=$STATE/mariadb # owned by the mysql user: data, socket, its log

tail_logs() {
    local f
    for f in "$LOGS"/*.log "$LOGS"/*.out "$DB"/mariadbd.log /var/log/munge/munged.log; do
        [[ -s $f ]] || continue
        printf '\n----- last lines of %s -----\n' "$f" >&2
        tail -n 25 "$f" >&2
    done
    # Why a node is not IDLE (e.g. INVAL and a GRES reason) is only in slurmctld.
    if timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
        printf '\n----- scontrol show node %s -----\n' "$NODE" >&2
        timeout 5 scontrol show node "$NODE" >&2 || true
    fi
}

die() {
    log "ERROR: $*"
    tail_logs
    log "stopping what was started (logs stay in $STATE)"
    "$HERE/stop.sh" >&2 || true
    exit 1
}

# wait_for WHAT PIDFILE CMD...: run CMD until it succeeds. Fails after
# $TIMEOUT s, or at once when the daemon behind PIDFILE has died.
wait_for() {
    local what=$1 pidfile=$2 deadline=$((SECONDS + TIMEOUT)) pid
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [[ -n $pidfile && -s $pidfile ]]; then
            pid=$(<"$pidfile")
            kill -0 "$pid" 2>/dev/null || die "$what died while starting"
        fi
        ((SECONDS < deadline)) || die "$what not up after ${TIMEOUT}s"
        sleep 0.2
    done
}

# A daemon that forks itself (Slurm's) must leave its pid file behind.
wait_pidfile() {
    local what=$1 pidfile=$2 deadline=$((SECONDS + TIMEOUT))
    until [[ -s $pidfile ]]; do
        ((SECONDS < deadline)) || die "$what wrote no pid file $pidfile"
        sleep 0.1
    done
}

refuse() {
    log "refused: $*"
    exit "$EXIT_REFUSED"
}

[[ $(id -u) -eq 0 ]] || refuse "start.sh must run as root"

case $STATE in
    /*) ;;
    *) log "CGB_SLURM_STATE must be an absolute path, got '$STATE'"; exit 1 ;;
esac
[[ $STATE != / ]] || { log "CGB_SLURM_STATE must not be /"; exit 1; }

# Only wipe a state dir that is empty or ours.
if [[ -d $STATE && ! -e $STATE/.cgb-slurm-state ]] && [[ -n $(ls -A "$STATE") ]]; then
    refuse "$STATE is not empty and not a cgb-slurm state dir; refusing to wipe it"
fi

# Stops a cluster started earlier and puts back the configs it moved aside.
"$HERE/stop.sh" >&2

# Never take over the slurm.conf of a Slurm in use (a login node's, a real
# controller's); one left behind by a test cluster that is gone is moved aside
# below. CGB_SLURM_FORCE=1 moves it aside regardless.
if why=$(conf_in_use); then
    if [[ ${CGB_SLURM_FORCE:-0} != 1 ]]; then
        refuse "$why; the test cluster will not take it over (CGB_SLURM_FORCE=1 moves it aside, stop.sh puts it back)"
    fi
    log "CGB_SLURM_FORCE=1: $why; moving it aside anyway"
fi

if why=$(aside_in_the_way); then
    refuse "$why"
fi

"$HERE/install.sh" >&2

# Daemons this script no longer knows about (state dir deleted by hand, a
# real Slurm) would make ours fail to bind; say so plainly.
for port in 6817 6818 6819 "$DB_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        refuse "port $port on 127.0.0.1 is taken (another slurmctld/slurmd/slurmdbd/MariaDB?)"
    fi
done

rm -rf "$STATE"
mkdir -p "$RUN" "$LOGS" "$STATE/ctld" "$STATE/spool"
touch "$STATE/.cgb-slurm-state"
# From here on, any failure shows the daemons' logs and stops what started.
set -E
trap 'die "command failed at start.sh line $LINENO"' ERR
trap 'die "interrupted"' INT TERM
set_aside_confs
# MariaDB runs as mysql and must reach its dir through $STATE.
chmod 755 "$STATE"
install -d -o mysql -g mysql -m 0750 "$DB"

# --- configs -----------------------------------------------------------------
mkdir -p "$SLURM_ETC"
hostname_short=$(hostname -s)
gres_conf="AutoDetect=off"
node_gres=""
i=0
for type in H200 H100 A100 L40S; do
    # Fake GPUs: slurmd drops GRES without File=, and File= must be a
    # character device. Symlinks to /dev/null are enough.
    ln -sfn /dev/null "/dev/cgbgpu$i"
    ln -sfn /dev/null "/dev/cgbgpu$((i + 1))"
    gres_conf+=$'\n'"NodeName=$NODE Name=gpu Type=$type File=/dev/cgbgpu[$i-$((i + 1))]"
    node_gres+="${node_gres:+,}gpu:$type:2"
    i=$((i + 2))
done

partition_lines=""
for p in "${PARTITIONS[@]}"; do
    default=NO
    [[ $p == debug ]] && default=YES
    partition_lines+="PartitionName=$p Nodes=$NODE Default=$default MaxTime=INFINITE State=UP"$'\n'
done

cat >"$STATE/slurm.conf" <<EOF
$MARKER $STATE
ClusterName=$CLUSTER
# The controller is this machine; the address avoids any DNS lookup.
SlurmctldHost=$hostname_short(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
SwitchType=switch/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in containers/CI: track job processes through /proc.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
# The node claims 8 CPUs and 16000 MB whatever the machine has, so 8 one-CPU
# jobs run at once even on a 2-core machine.
SlurmdParameters=config_overrides
# Start a submitted job at once (~1 s from sbatch to running instead of ~3 s).
SchedulerParameters=batch_sched_delay=0
MailProg=/bin/true
# Keep finished jobs visible to squeue/scontrol for an hour (sacct keeps them anyway).
MinJobAge=3600
# scancel'ed jobs get SIGKILL 5 s after SIGTERM (default 30), so tests stay quick.
KillWait=5
ReturnToService=2
InactiveLimit=0
GresTypes=gpu
# Accounting in slurmdbd: sacct works, and a bad account/QOS is refused by sbatch.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos
AccountingStorageTRES=gres/gpu,gres/gpu:h200,gres/gpu:h100,gres/gpu:a100,gres/gpu:l40s
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=8 RealMemory=16000 Gres=$node_gres State=UNKNOWN
$partition_lines
EOF

cat >"$STATE/gres.conf" <<EOF
$MARKER $STATE
$gres_conf
EOF

cat >"$STATE/slurmdbd.conf" <<EOF
$MARKER $STATE
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOGS/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=cgb
StorageLoc=slurm_acct_db
EOF

# Slurm finds gres.conf and slurmdbd.conf next to slurm.conf.
install -m 0644 "$STATE/slurm.conf" "$SLURM_ETC/slurm.conf"
install -m 0644 "$STATE/gres.conf" "$SLURM_ETC/gres.conf"
# slurmdbd refuses a config readable by others (it holds the DB password).
install -m 0600 "$STATE/slurmdbd.conf" "$SLURM_ETC/slurmdbd.conf"

# --- munge -------------------------------------------------------------------
if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running; using it"
else
    log "starting munged"
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    # munged refuses to run as root. --force: ignore a stale socket left by a killed munged.
    runuser -u munge -- munged --force </dev/null >>"$LOGS/munged.out" 2>&1 \
        || die "munged did not start"
    wait_pidfile munged /run/munge/munged.pid
    cp /run/munge/munged.pid "$RUN/munged.pid"
    wait_for munged "$RUN/munged.pid" bash -c 'munge -n </dev/null | unmunge'
fi

# --- MariaDB -----------------------------------------------------------------
log "starting MariaDB on 127.0.0.1:$DB_PORT"
# Sizes: the least that slurmdbd does not log an error about (the buffer pool
# is allocated lazily: MariaDB stays near 120 MB).
db_opts=(--innodb-buffer-pool-size=512M --innodb-log-file-size=64M
         --innodb-lock-wait-timeout=900
         --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0
         --skip-name-resolve)
# The DB is thrown away with the state dir, so skip its fsyncs: they are
# most of its start-up time (and of slurmdbd's table creation) on a VM disk.
nosync=()
if command -v eatmydata >/dev/null; then nosync=(eatmydata); fi
"${nosync[@]}" mariadb-install-db --no-defaults --user=mysql --datadir="$DB/data" --skip-test-db \
    "${db_opts[@]}" >"$LOGS/mariadb-install.txt" 2>&1 \
    || { tail -n 20 "$LOGS/mariadb-install.txt" >&2; die "mariadb-install-db failed"; }
# No --defaults: ignore the machine's my.cnf. setsid: a Ctrl-C in the caller's
# terminal must not kill it.
setsid "${nosync[@]}" mariadbd --no-defaults --user=mysql --datadir="$DB/data" \
    --socket="$DB/mariadbd.sock" --pid-file="$DB/mariadbd.pid" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --log-error="$DB/mariadbd.log" \
    "${db_opts[@]}" </dev/null >>"$LOGS/mariadbd.out" 2>&1 &
echo $! >"$RUN/mariadbd.pid"
wait_for MariaDB "$RUN/mariadbd.pid" mariadb-admin --socket="$DB/mariadbd.sock" ping
# root reaches it through the socket (unix_socket auth); slurmdbd over TCP.
mariadb --socket="$DB/mariadbd.sock" -e "
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'cgb';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" \
    || die "could not create the slurm DB user"

# --- slurmdbd and the accounts -----------------------------------------------
log "starting slurmdbd"
slurmdbd </dev/null >>"$LOGS/slurmdbd.out" 2>&1 || die "slurmdbd did not start"
wait_pidfile slurmdbd "$RUN/slurmdbd.pid"
wait_for slurmdbd "$RUN/slurmdbd.pid" timeout 10 sacctmgr -n show cluster

acct() {
    sacctmgr -i "$@" >>"$LOGS/sacctmgr.log" 2>&1 || die "sacctmgr $* failed"
}
# slurmctld reads the associations at start, so they must exist before it.
acct add cluster "$CLUSTER"
acct add qos "$QOS"
acct add account "$ACCOUNT" cluster="$CLUSTER" description="cgb-bench tests" organization=cgb
users=(root)
# `sudo start.sh` on a laptop: let the invoking user submit too.
if [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then users+=("$SUDO_USER"); fi
for u in "${users[@]}"; do
    acct add user "$u" account="$ACCOUNT" cluster="$CLUSTER" qos=normal,"$QOS" defaultqos=normal
    # root starts out in account "root": make jobs without --account use ours.
    acct modify user "$u" set defaultaccount="$ACCOUNT"
done

# --- slurmctld, slurmd ---------------------------------------------------------
log "starting slurmctld"
slurmctld </dev/null >>"$LOGS/slurmctld.out" 2>&1 || die "slurmctld did not start"
wait_pidfile slurmctld "$RUN/slurmctld.pid"
wait_for slurmctld "$RUN/slurmctld.pid" bash -c 'timeout 10 scontrol ping | grep -q "is UP"'

log "starting slurmd"
slurmd -N "$NODE" </dev/null >>"$LOGS/slurmd.out" 2>&1 || die "slurmd did not start"
wait_pidfile slurmd "$RUN/slurmd.pid"

# The node counts as up only once slurmd has registered in *this* run: sinfo
# would report a state saved earlier before that. Compare SlurmdStartTime.
node_ready() {
    local line state started
    line=$(timeout 10 scontrol -o show node "$NODE") || return 1
    state=$(sed -n 's/.* State=\([^ ]*\).*/\1/p' <<<"$line")
    started=$(sed -n 's/.* SlurmdStartTime=\([^ ]*\).*/\1/p' <<<"$line")
    [[ $state == IDLE ]] || return 1
    [[ -n $started && $started != None ]] || return 1
    (($(date -d "$started" +%s) >= T_START))
}
wait_for "node $NODE (slurmd)" "$RUN/slurmd.pid" node_ready

# slurmctld registers with slurmdbd in the background; jobs only reach sacct after.
ctld_registered() {
    [[ -n $(timeout 10 sacctmgr -n -P show cluster "$CLUSTER" format=controlhost) ]]
}
wait_for "slurmctld registration in slurmdbd" "$RUN/slurmctld.pid" ctld_registered
wait_for sacct "$RUN/slurmdbd.pid" timeout 10 sacct -n -X -a

log "cluster up in $(($(date +%s) - T_START)) s; logs in $LOGS"
IFS=,
# Also kept in the state dir, for callers that reuse a running cluster.
tee "$STATE/env" <<EOF
export SLURM_CONF=$SLURM_CONF_FILE
export CGB_SLURM_STATE=$STATE
export CGB_SLURM_CLUSTER=$CLUSTER
export CGB_SLURM_NODE=$NODE
export CGB_SLURM_PARTITIONS=${PARTITIONS[*]}
export CGB_SLURM_DEFAULT_PARTITION=debug
export CGB_SLURM_ACCOUNT=$ACCOUNT
export CGB_SLURM_QOS=$QOS
EOF
