"""Job states: one scheduler query per poll for all jobs, and what each state means.

submitit's Slurm watcher asks `sacct` about every registered job in one call;
we force exactly one such call per poll and then read each job from its cache.
"""

from __future__ import annotations

import submitit

RUNNING, SUCCESS, FAILED = "running", "success", "failed"

# Slurm states that are not final, as a user sees them: waiting for a node, or on one. The
# one definition: the progress line and the status grid import these. PREEMPTED / REQUEUED:
# submitit requeues the job.
PENDING_STATES = frozenset(
    {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SUSPENDED", "PREEMPTED", "RESV_DEL_HOLD"}
)
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"})
_SLURM_ACTIVE = PENDING_STATES | RUNNING_STATES | {"READY", "UNKNOWN"}


def poll_slurm(jobs: list[submitit.Job]) -> int:
    """Refresh the states of all Slurm jobs with one sacct call. Returns the number of calls made (0 or 1)."""
    slurm_jobs = [j for j in jobs if isinstance(j, submitit.SlurmJob)]
    if not slurm_jobs:
        return 0
    watcher = slurm_jobs[0].watcher
    for j in slurm_jobs:
        watcher.register_job(j.job_id)
    before = watcher.num_calls
    watcher.update()
    return watcher.num_calls - before


def state_of(job: submitit.Job) -> str:
    """The scheduler's word for the job, from the cache the last poll filled."""
    if isinstance(job, submitit.SlurmJob):
        return job.watcher.get_state(job.job_id, mode="cache").split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return job.state


def classify(job: submitit.Job, state: str) -> tuple[str, str]:
    """(RUNNING | SUCCESS | FAILED, reason) for a job in `state`.

    A finished job succeeded only if submitit's result pickle says the call
    returned: a COMPLETED Slurm state alone does not prove the rule ran.
    """
    if isinstance(job, submitit.SlurmJob):
        if state.upper() in _SLURM_ACTIVE:
            return RUNNING, state
        if state.upper() != "COMPLETED":
            return FAILED, f"Slurm state {state}"
    elif state == "RUNNING":
        return RUNNING, state
    elif state == "INTERRUPTED":
        return FAILED, "the local job was interrupted (signal)"
    exc = job.exception()
    if exc is None:
        return SUCCESS, state
    return FAILED, _last_line(str(exc))


def _last_line(text: str) -> str:
    """The last non-empty line of a traceback: the exception's own message."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else text
