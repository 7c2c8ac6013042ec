# Shared by start.sh and stop.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034  # the variables are used by the sourcing scripts

# Debian puts the daemons and sacctmgr in /usr/sbin, which a CI shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# Everything the cluster writes (configs, state, spool, logs, the MariaDB data)
# lives here, so start.sh can wipe it and every run starts from nothing.
STATE=${CGB_SLURM_STATE:-/tmp/cgb-slurm}
# Slurm commands (and submitit, which calls plain sbatch/sacct) read /etc/slurm.
# CGB_SLURM_ETC points elsewhere only for the tests of these functions
# (tests/test_ci_policy.py): Slurm itself reads /etc/slurm.
SLURM_ETC=${CGB_SLURM_ETC:-/etc/slurm}
SLURM_CONF_FILE=$SLURM_ETC/slurm.conf
# First line of every config we write: lets us overwrite our own, never a real one.
MARKER="# Written by cgb-bench tests/slurm_cluster/start.sh; state dir:"
# The configs start.sh writes into $SLURM_ETC. One it did not write (another
# test cluster's, left behind) is moved to NAME$ASIDE while ours is there, and
# put back by stop.sh.
CONF_FILES=(slurm.conf gres.conf slurmdbd.conf)
ASIDE=.cgb-orig
# start.sh's exit status when it will not take over this machine (a Slurm in
# use, ports taken, not root): cluster.py turns it into ClusterRefused, which
# the pytest fixture skips on (fails under CI=true).
EXIT_REFUSED=3

NODE=cgb-node
CLUSTER=cgb
ACCOUNT=cgb-test
QOS=inferno
PARTITIONS=(debug gpu-h200 gpu-h100 gpu-a100 gpu-l40s)
# MariaDB on its own port and socket, so a MariaDB the machine already runs is untouched.
DB_PORT=${CGB_SLURM_DB_PORT:-16819}
# Seconds each daemon gets to come up before start.sh gives up.
TIMEOUT=${CGB_SLURM_TIMEOUT:-60}

log() { printf '[cgb-slurm %s] %s\n' "$(date +%T.%2N)" "$*" >&2; }

# The state dir the running cluster was started with (it may differ from
# $STATE when the caller changed CGB_SLURM_STATE in between).
recorded_state_dir() {
    local first
    [[ -r $SLURM_CONF_FILE ]] || return 0
    first=$(head -n 1 "$SLURM_CONF_FILE")
    [[ $first == "$MARKER "* ]] && printf '%s\n' "${first#"$MARKER "}"
    return 0
}

# is_ours FILE: FILE exists and start.sh wrote it.
is_ours() {
    [[ -r $1 ]] && head -n 1 "$1" | grep -qF "$MARKER"
}

# The Slurm daemons running on this machine, as "name(pid)" words. Called
# after stop.sh has stopped ours, so any of them belongs to another Slurm.
slurm_daemons() {
    local f comm pid out=()
    for f in /proc/[0-9]*/comm; do
        read -r comm 2>/dev/null <"$f" || continue
        case $comm in
            slurmctld | slurmd | slurmdbd)
                pid=${f#/proc/} pid=${pid%/comm}
                out+=("$comm($pid)")
                ;;
        esac
    done
    printf '%s\n' "${out[*]}"
}

# The controllers a slurm.conf names (SlurmctldHost=name(addr), ControlMachine=name), one a line.
conf_controllers() {
    sed -n -E 's/^[[:space:]]*(SlurmctldHost|ControlMachine|ControlAddr)[[:space:]]*=[[:space:]]*([^[:space:]#]+).*/\2/Ip' "$1"
}

# controllers_are_local FILE: every controller FILE names is this machine.
controllers_are_local() {
    local c name addr x any=0
    while read -r c; do
        [[ -n $c ]] || continue
        any=1
        name=${c%%(*} addr=""
        [[ $c == *"("*")"* ]] && { addr=${c#*(} addr=${addr%)}; }
        for x in "$name" "$addr"; do
            [[ -n $x ]] || continue
            case $x in
                localhost | localhost.* | 127.* | ::1 | "$(hostname -s 2>/dev/null)" | "$(hostname 2>/dev/null)") ;;
                *) return 1 ;;
            esac
        done
    done < <(conf_controllers "$1")
    ((any))
}

# conf_in_use: why $SLURM_CONF_FILE (not ours) belongs to a Slurm in use, on
# stdout, and status 0; status 1 when it was left behind by a cluster that is
# gone (a test cluster: its controller is this machine or does not answer,
# and no Slurm daemon runs here). Call it after stop.sh.
conf_in_use() {
    local daemons
    [[ -e $SLURM_CONF_FILE ]] && ! is_ours "$SLURM_CONF_FILE" || return 1
    daemons=$(slurm_daemons)
    if [[ -n $daemons ]]; then
        echo "$SLURM_CONF_FILE was not written by start.sh, and Slurm daemons it did not start run here: $daemons"
        return 0
    fi
    controllers_are_local "$SLURM_CONF_FILE" && return 1
    # A login node's slurm.conf names a remote controller that answers.
    if command -v scontrol >/dev/null &&
        SLURM_CONF=$SLURM_CONF_FILE timeout 10 scontrol ping 2>/dev/null | grep -q "is UP"; then
        echo "$SLURM_CONF_FILE was not written by start.sh, and its controller ($(conf_controllers "$SLURM_CONF_FILE" | paste -sd,)) answers: a Slurm in use"
        return 0
    fi
    return 1
}

# aside_in_the_way: a config start.sh would move aside whose NAME$ASIDE (from
# an earlier move) is still there, on stdout, and status 0; else status 1.
aside_in_the_way() {
    local f
    for f in "${CONF_FILES[@]}"; do
        f=$SLURM_ETC/$f
        if [[ -e $f ]] && ! is_ours "$f" && [[ -e $f$ASIDE ]]; then
            echo "$f was not written by start.sh, and $f$ASIDE is in the way of moving it aside; put one of them elsewhere"
            return 0
        fi
    done
    return 1
}

# set_aside_confs: move each config in $SLURM_ETC that start.sh did not write
# to NAME$ASIDE (stop.sh puts them back). Check aside_in_the_way first.
set_aside_confs() {
    local f
    for f in "${CONF_FILES[@]}"; do
        f=$SLURM_ETC/$f
        if [[ -e $f ]] && ! is_ours "$f"; then
            mv "$f" "$f$ASIDE"
            log "moved $f (not written by start.sh) aside to $f$ASIDE; stop.sh puts it back"
        fi
    done
}

# restore_confs: undo set_aside_confs: put every NAME$ASIDE back, and remove
# our configs that had no original, so $SLURM_ETC is as start.sh found it.
# Does nothing when nothing was moved aside (then our configs stay).
restore_confs() {
    local f any=0
    for f in "${CONF_FILES[@]}"; do
        [[ -e $SLURM_ETC/$f$ASIDE ]] && any=1
    done
    ((any)) || return 0
    for f in "${CONF_FILES[@]}"; do
        f=$SLURM_ETC/$f
        if [[ -e $f$ASIDE ]]; then
            if [[ -e $f ]] && ! is_ours "$f"; then
                log "not putting back $f$ASIDE: $f exists and was not written by start.sh"
                continue
            fi
            mv -f "$f$ASIDE" "$f"
            log "put back $f"
        elif is_ours "$f"; then
            rm -f "$f"
        fi
    done
}
