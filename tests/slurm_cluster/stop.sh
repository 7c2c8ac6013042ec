#!/usr/bin/env bash
# Stops what start.sh started: cancels the jobs, then slurmd, slurmctld,
# slurmdbd, MariaDB and munged (only if start.sh started it), and puts back
# the configs start.sh moved aside from /etc/slurm. Idempotent: with
# nothing running it does nothing. The state dir stays, logs included, for
# post-mortems; the next start.sh wipes it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/_common.sh
source "$HERE/_common.sh"

any_alive() {
    local pid
    for pid in "$@"; do
        kill -0 "$pid" 2>/dev/null && return 0
    done
    return 1
}

# stop_pids NAME=PIDFILE...: SIGTERM them all, wait (SIGKILL after 15 s).
# The name check keeps a stale pid file from killing an unrelated process
# that reused the pid.
stop_pids() {
    local arg name pidfile pid i pids=() names=()
    for arg in "$@"; do
        name=${arg%%=*} pidfile=${arg#*=}
        [[ -s $pidfile ]] || continue
        pid=$(<"$pidfile")
        rm -f "$pidfile"
        [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]] || continue
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid") names+=("$name")
    done
    for ((i = 0; i < 150; i++)); do
        any_alive "${pids[@]}" || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        if kill -0 "${pids[i]}" 2>/dev/null; then
            log "${names[i]} did not stop on SIGTERM within 15 s; killing it"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
    done
}

# Cancel the jobs while slurmctld and slurmd still run, so their processes
# are killed too (slurmstepd outlives slurmd otherwise).
cancel_jobs() {
    local jobs i
    timeout 5 scontrol ping 2>/dev/null | grep -q "is UP" || return 0
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null) || return 0
    [[ -n $jobs ]] || return 0
    log "cancelling jobs: ${jobs//$'\n'/ }"
    # shellcheck disable=SC2086  # one job id per word
    timeout 10 scancel $jobs 2>/dev/null || true
    # A cancelled job leaves squeue after its processes are gone (KillWait=5).
    for ((i = 0; i < 100; i++)); do
        [[ -z $(timeout 5 squeue -h -t running,completing -o %A 2>/dev/null) ]] && break
        sleep 0.1
    done
}

# Our daemons may have been started with another CGB_SLURM_STATE than the
# current one: stop those recorded in our slurm.conf too.
dirs=("$STATE")
recorded=$(recorded_state_dir)
[[ -n $recorded && $recorded != "$STATE" ]] && dirs+=("$recorded")

ours=0
for d in "${dirs[@]}"; do
    [[ -s $d/run/slurmctld.pid ]] && ours=1
done
# Only cancel jobs on a cluster that start.sh started.
if ((ours)) && [[ -n $recorded ]]; then
    cancel_jobs
fi

# All at once: each takes 1.5-3 s to exit; one after the other took 10 s.
# What they might still want to write (slurmctld's last records to slurmdbd)
# is wiped by the next start anyway.
for d in "${dirs[@]}"; do
    stop_pids slurmd="$d/run/slurmd.pid" slurmctld="$d/run/slurmctld.pid" \
        slurmdbd="$d/run/slurmdbd.pid" mariadbd="$d/run/mariadbd.pid" \
        munged="$d/run/munged.pid"
done
rm -f /dev/cgbgpu[0-9]*
# The configs start.sh moved aside (another test cluster's) go back in place.
restore_confs
