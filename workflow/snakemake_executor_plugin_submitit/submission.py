"""Snakemake job resources -> submitit executor parameters.

Cells carry their GPU type's Slurm settings as one Snakemake resource (see
cudagraph_bench.cells.slurm_settings). This module is the one place that
maps them onto submitit's parameters, and it rejects keys it does not know.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import submitit
from snakemake_interface_common.exceptions import WorkflowError

LAUNCHERS = ("local", "slurm")

# The one resource this executor reads: a JSON object of Slurm settings per job
# (see cudagraph_bench.cells.slurm_settings). Its keys -> submitit parameters.
RESOURCE = "slurm"
_SETTINGS = {
    "partition": "slurm_partition",
    "gres": "slurm_gres",
    "account": "slurm_account",
    "qos": "slurm_qos",
    "constraint": "slurm_constraint",
    "time_min": "timeout_min",
    "cpus": "cpus_per_task",
    "mem_gb": "mem_gb",
    "extra_sbatch": "slurm_additional_parameters",
    "gpus": "gpus_per_node",
}
# The settings contract: every key the resource may carry, and its value when absent.
SETTING_DEFAULTS = {key: ({} if key == "extra_sbatch" else 1 if key == "gpus" else "") for key in _SETTINGS}
# Resources Snakemake itself sets on every job; not ours to interpret.
_SNAKEMAKE_KEYS = {"_cores", "_nodes", "_job_count", "mem_mb", "mem_mib", "disk_mb", "disk_mib", "tmpdir", "mem",
                   "disk", "threads", "runtime"}  # fmt: skip

_JOB_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def job_name(rule: str, wildcards: dict) -> str:
    """A Slurm job name that names the cell, e.g. cgb.cell_vllm_h200.latency.eager.bs1."""
    parts = ["cgb", rule, *(str(v) for v in wildcards.values())]
    return _JOB_NAME_BAD.sub("_", ".".join(parts))[:200]


def parameters(resources: dict, launcher: str, name: str) -> dict:
    """submitit update_parameters() keyword arguments for one job.

    Raises WorkflowError naming an unknown resource or setting, with the valid ones.
    """
    unknown = sorted(k for k in resources if k != RESOURCE and k not in _SNAKEMAKE_KEYS)
    if unknown:
        raise WorkflowError(f"submitit executor: unknown resource(s) {unknown}; it reads only {RESOURCE!r}")
    try:
        settings = json.loads(resources.get(RESOURCE) or "{}")
    except json.JSONDecodeError as e:
        raise WorkflowError(f"submitit executor: resource {RESOURCE!r} is not a JSON object: {e}") from e
    bad = sorted(set(settings) - set(_SETTINGS))
    if bad:
        raise WorkflowError(f"submitit executor: unknown Slurm setting(s) {bad}; valid: {', '.join(sorted(_SETTINGS))}")
    params: dict = {"name": name}
    if settings.get("time_min"):
        params["timeout_min"] = int(settings["time_min"])
    if launcher == "local":
        # One machine: partitions, accounts and memory limits do not apply. The GPUs do:
        # submitit's local launcher sets the job's CUDA_VISIBLE_DEVICES to exactly the GPUs
        # asked for (none unless told), taken from the ones this process may use.
        gpus = int(settings.get("gpus", SETTING_DEFAULTS["gpus"]))
        params["gpus_per_node"] = gpus
        visible = _visible_gpus()
        if gpus and visible is not None:
            if gpus > len(visible):
                raise WorkflowError(
                    f"submitit executor: a cell asks for {gpus} GPU(s) (gpu_types.*.gpus) but "
                    f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r} leaves {len(visible)}"
                )
            params["visible_gpus"] = visible
        return params
    for key, param in _SETTINGS.items():
        value = settings.get(key)
        # Slurm gives the job its GPUs through gres (and sets CUDA_VISIBLE_DEVICES itself).
        if value in (None, "", {}) or key in ("time_min", "gpus"):
            continue
        params[param] = int(value) if key in ("cpus", "mem_gb") else value
    return params


def _visible_gpus() -> list[int] | None:
    """The GPU indices this process's CUDA_VISIBLE_DEVICES allows, or None when it is unset
    (or names GPUs by UUID, which submitit cannot pass on: then its own 0..n-1 are used)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not all(v.isdigit() for v in items):
        return None
    return [int(v) for v in items]


def assign_gpus(params: dict, in_use: set[int]) -> list[int] | None:
    """The GPUs a local job gets: the first `gpus_per_node` of the ones this process may use
    (params["visible_gpus"], else the node's device nodes /dev/nvidia0..N) that no running cell
    holds; they replace params["visible_gpus"], since submitit's local launcher takes the first
    ones it is given. None where the job asks for no GPU or the node's GPUs cannot be listed
    (submitit's own 0..n-1 then). WorkflowError if too few are free: cells run at once (--jobs)
    never share a GPU."""
    wanted = params.get("gpus_per_node", 0)
    pool = params.get("visible_gpus")
    if pool is None:
        nodes = (d.name.removeprefix("nvidia") for d in Path("/dev").glob("nvidia[0-9]*"))
        pool = sorted(int(n) for n in nodes if n.isdigit())
    if not wanted or not pool:
        return None
    free = [g for g in pool if g not in in_use]
    if len(free) < wanted:
        raise WorkflowError(
            f"submitit executor: a cell needs {wanted} GPU(s) but running cells hold {sorted(in_use)} of the "
            f"{len(pool)} this run may use ({pool}); cells at once never share a GPU: run with --jobs at most "
            f"{len(pool) // wanted}"
        )
    params["visible_gpus"] = free[:wanted]
    return free[:wanted]


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
    params = dict(params)
    visible = params.pop("visible_gpus", None)
    executor.update_parameters(**params)
    if visible is not None:
        # The local launcher's own parameter, which AutoExecutor does not pass through.
        executor._executor.update_parameters(visible_gpus=tuple(visible))
    return executor.submit(fn, *args)


def slurm_job(folder: str, job_id: str) -> submitit.SlurmJob:
    """A handle on a Slurm job submitted by an earlier run (for re-attaching)."""
    return submitit.SlurmJob(folder=folder, job_id=job_id)
