# Shared by start.sh and stop.sh (sourced, not run).
# shellcheck shell=bash disable=SC2034  # the variables are used by the sourcing scripts

# Debian puts the daemons and sacctmgr in /usr/sbin, which a CI shell may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# Everything the cluster writes (configs, state, spool, logs, the MariaDB data)
# lives here, so start.sh can wipe it and every run starts from nothing.
STATE=${CGB_SLURM_STATE:-/tmp/cgb-slurm}
# Slurm commands (and submitit, which calls plain sbatch/sacct) read this path.
SLURM_CONF_FILE=/etc/slurm/slurm.conf
# First line of every config we write: lets us overwrite our own, never a real one.
MARKER="# Written by cgb-bench tests/slurm_cluster/start.sh; state dir:"

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
