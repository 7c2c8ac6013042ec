"""Snakemake job resources -> submitit executor parameters.

Cells carry their GPU type's Slurm settings as Snakemake resources (see
cudagraph_bench.cells.slurm_resources). This module is the one place that
maps them onto submitit's parameters, and it rejects keys it does not know.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import submitit
from snakemake_interface_common.exceptions import WorkflowError

LAUNCHERS = ("local", "slurm")

# Resource -> submitit Slurm parameter. Empty strings mean "cluster default".
_SLURM_KEYS = {
    "slurm_partition": "slurm_partition",
    "gres": "slurm_gres",
    "slurm_account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
}
# Resources Snakemake itself sets on every job; not ours to interpret.
_SNAKEMAKE_KEYS = {"_cores", "_nodes", "_job_count", "mem_mib", "disk_mb", "disk_mib", "tmpdir", "mem", "disk", "threads"}
_OURS = set(_SLURM_KEYS) | {"runtime", "cpus_per_task", "mem_mb", "slurm_extra"}
VALID_RESOURCES = tuple(sorted(_OURS))

_JOB_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def job_name(rule: str, wildcards: dict) -> str:
    """A Slurm job name that names the cell, e.g. cgb.cell.h200.vllm.latency.eager.bs1."""
    parts = ["cgb", rule, *(str(v) for v in wildcards.values())]
    return _JOB_NAME_BAD.sub("_", ".".join(parts))[:200]


def parameters(resources: dict, launcher: str, name: str) -> dict:
    """submitit update_parameters() keyword arguments for one job.

    Raises WorkflowError naming an unknown resource key, with the valid ones.
    """
    unknown = sorted(k for k in resources if k not in _OURS and k not in _SNAKEMAKE_KEYS)
    if unknown:
        raise WorkflowError(
            f"submitit executor: unknown resource(s) {unknown}; valid: {', '.join(VALID_RESOURCES)}"
        )
    params: dict = {"name": name}
    runtime = resources.get("runtime")
    if runtime:
        params["timeout_min"] = int(runtime)
    if launcher == "local":
        # One machine: partitions, accounts and memory limits do not apply.
        return params
    for key, param in _SLURM_KEYS.items():
        value = str(resources.get(key, "") or "")
        if value:
            params[param] = value
    if resources.get("cpus_per_task"):
        params["cpus_per_task"] = int(resources["cpus_per_task"])
    if resources.get("mem_mb"):
        params["mem_gb"] = max(1, math.ceil(int(resources["mem_mb"]) / 1000))
    extra = json.loads(resources.get("slurm_extra") or "{}")
    if extra:
        params["slurm_additional_parameters"] = extra
    return params


def make_executor(launcher: str, folder: Path) -> submitit.AutoExecutor:
    """A submitit executor for the launcher ('local' or 'slurm').

    AutoExecutor translates the generic names (timeout_min, mem_gb, ...) and
    applies slurm_* parameters only under Slurm.
    """
    if launcher not in LAUNCHERS:
        raise WorkflowError(f"submitit executor: launcher {launcher!r} is not one of {LAUNCHERS}")
    try:
        # A time limit is an infrastructure failure: never requeue it (submitit
        # requeues a Checkpointable up to 3 times by default). Preemption still requeues.
        return submitit.AutoExecutor(folder=folder, cluster=launcher, slurm_max_num_timeout=0)
    except RuntimeError as e:  # SlurmExecutor found no srun on PATH
        raise WorkflowError(
            "submitit executor: launcher 'slurm' needs the Slurm commands (srun, sbatch, sacct) on PATH; "
            "run on a login node, or use the local profile (--profile profiles/local)",
            e,
        ) from e


def submit(executor: submitit.AutoExecutor, params: dict, fn, *args) -> submitit.Job:
    """Set this job's parameters and submit fn(*args). sbatch's own error message reaches the caller."""
    executor.update_parameters(**params)
    return executor.submit(fn, *args)


def slurm_job(folder: str, job_id: str) -> submitit.SlurmJob:
    """A handle on a Slurm job submitted by an earlier run (for re-attaching)."""
    return submitit.SlurmJob(folder=folder, job_id=job_id)
