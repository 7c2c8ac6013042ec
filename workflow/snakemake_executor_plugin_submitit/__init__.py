"""A Snakemake executor that submits each job through submitit (Slurm or local).

Snakemake's one main process submits, polls (one sacct for all jobs) and
cancels; the rule body runs inside the submitted job. Select it with
`executor: submitit` and `submitit-launcher: local|slurm` in a profile.
"""

import os
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

from . import status, submission
from .job import SnakemakeJob, job_argv
from .progress import Progress
from .registry import DEFAULT_FOLDER, REGISTRY_FILE, JobRegistry


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    launcher: str = field(
        default="local",
        metadata={"help": "Where jobs run: 'slurm' (sbatch through submitit) or 'local' (processes on this machine)."},
    )
    folder: str = field(
        default=DEFAULT_FOLDER,
        metadata={"help": "Folder for submitit's job files and logs, and the job registry (jobs.json)."},
    )
    min_poll_s: float = field(
        default=1.0,
        metadata={"help": "First interval between status polls, in seconds; doubles while nothing changes."},
    )
    max_poll_s: float = field(
        default=30.0,
        metadata={"help": "Longest interval between status polls, in seconds."},
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    # Env vars travel with the job's environment (sbatch --export=ALL), not as a
    # shell prefix, so the job command stays a plain argv.
    pass_envvar_declarations_to_cmd=False,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)


class Executor(RemoteExecutor):
    def __post_init__(self):
        self.settings: ExecutorSettings = self.workflow.executor_settings
        self.folder = Path(self.settings.folder).resolve()
        self.registry = JobRegistry(self.folder / REGISTRY_FILE)
        self.executor = submission.make_executor(self.settings.launcher, self.folder / "jobs")
        self.progress = Progress(self.logger)
        self.sacct_calls = 0
        self.gpus_held: dict[str, list[int]] = {}  # local launcher: job id -> the GPUs its cell runs on
        # Every job this run submitted or re-attached to and has not seen finish, by job id. Ctrl-C
        # cancels these, not just Snakemake's active_jobs: while a status check is under way,
        # Snakemake takes the jobs it polls out of that list (RemoteExecutor._wait_for_jobs), so a
        # Ctrl-C during a poll would leave them running on the cluster.
        self.live: dict[str, SubmittedJobInfo] = {}
        self._live_lock = threading.Lock()
        self._poll_s = self.settings.min_poll_s
        self.next_seconds_between_status_checks = self._poll_s

    # -- submission ---------------------------------------------------------------

    def run_job(self, job: JobExecutorInterface):
        # one key per result file: a job of several cells (one server for a mode's serving cells)
        # counts, shows and is recorded as each of them
        keys = [str(o) for o in job.output]
        attached = self._reattach(job, keys[0])
        if attached is not None:
            for key in keys:
                self.progress.attached(key, attached.job_id)
            self._report_live(
                SubmittedJobInfo(job, external_jobid=attached.job_id, aux={"submitit_job": attached, "keys": keys})
            )
            return
        name = submission.job_name(job.rule.name if hasattr(job, "rule") else job.name, dict(job.wildcards))
        params = submission.parameters(dict(job.resources), self.settings.launcher, name)
        argv = job_argv(self.format_job_exec(job))
        try:
            gpus = None
            if self.settings.launcher == "local":
                gpus = submission.assign_gpus(params, {g for held in self.gpus_held.values() for g in held})
            sjob = submission.submit(self.executor, params, SnakemakeJob(), argv, os.getcwd())
        except Exception as e:  # sbatch refused it (unknown partition, GRES, account, ...), or no GPU free
            msg = f"submission refused: {str(e).strip()}"
            for key in keys:
                self.progress.failed(key, None, msg)
            self.report_job_error(SubmittedJobInfo(job), msg=msg)
            return
        if gpus:
            self.gpus_held[sjob.job_id] = gpus
        for key in keys:
            self.registry.record(key, sjob.job_id, self.settings.launcher, str(self.folder / "jobs"))
            self.progress.submitted(key, sjob.job_id)
        self._report_live(SubmittedJobInfo(job, external_jobid=sjob.job_id, aux={"submitit_job": sjob, "keys": keys}))
        self._poll_s = self.settings.min_poll_s

    def _report_live(self, info: SubmittedJobInfo) -> None:
        """Hand a submitted (or re-attached) job to Snakemake, and keep it among the live ones."""
        with self._live_lock:
            self.live[info.external_jobid] = info
        self.report_job_submission(info)

    def _finished(self, job_id: str) -> None:
        with self._live_lock:
            self.live.pop(job_id, None)

    def _reattach(self, job: JobExecutorInterface, key: str):
        """A Slurm job this cell already has in the queue (from a run that died), or None."""
        rec = self.registry.get(key)
        if rec is None or rec["launcher"] != "slurm" or self.settings.launcher != "slurm":
            return None
        old = submission.slurm_job(rec["folder"], rec["job_id"])
        self.sacct_calls += status.poll_slurm([old])
        state = status.state_of(old)
        kind, _ = status.classify(old, state) if state != "UNKNOWN" else (status.FAILED, state)
        if kind == status.RUNNING:
            return old
        self.registry.forget(key)
        return None

    # -- polling --------------------------------------------------------------------

    async def check_active_jobs(self, active_jobs: list[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            # Also guards a race: Snakemake's status thread starts before __post_init__ runs.
            return
        jobs = [info.aux["submitit_job"] for info in active_jobs]
        async with self.status_rate_limiter:
            self.sacct_calls += status.poll_slurm(jobs)
        changed = False
        for info in active_jobs:
            sjob, keys = info.aux["submitit_job"], info.aux["keys"]
            state = status.state_of(sjob)
            kind, reason = status.classify(sjob, state)
            for key in keys:
                changed |= self.progress.update(key, sjob.job_id, state, kind)
            if kind == status.RUNNING:
                yield info
                continue
            self._finished(sjob.job_id)
            self.gpus_held.pop(sjob.job_id, None)
            if kind == status.SUCCESS:
                for key in keys:
                    self.registry.forget(key)
                self.report_job_success(info)
            else:
                for key in keys:
                    self.registry.forget(key)
                    self.progress.failed(key, sjob.job_id, reason)
                self.report_job_error(
                    info,
                    msg=f"cell job {sjob.job_id} failed: {reason}",
                    aux_logs=[str(sjob.paths.stdout), str(sjob.paths.stderr)],
                )
        # A cell running for long shows its elapsed time (at most every 30 s).
        self.progress.tick()
        # Back off while nothing changes (each Slurm poll is an sacct call on a shared
        # controller); poll fast again when something does. Local polls are free.
        if changed or self.settings.launcher == "local":
            self._poll_s = self.settings.min_poll_s
        else:
            self._poll_s = min(self._poll_s * 2, self.settings.max_poll_s)
        self.next_seconds_between_status_checks = self._poll_s

    # -- cancellation -----------------------------------------------------------------

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]):
        """Cancel every job of this run that has not finished: self.live, of which Snakemake's
        active_jobs are a part (it lacks those a status check under way holds)."""
        with self._live_lock:
            unfinished = list(self.live.values())
            self.live.clear()
        ids = []
        for info in unfinished:
            sjob = info.aux["submitit_job"]
            try:
                sjob.cancel(check=False)
            except Exception as e:  # noqa: BLE001 - cancel the rest regardless
                self.logger.warning(f"could not cancel job {sjob.job_id}: {e}")
                continue
            for key in info.aux["keys"]:
                self.registry.forget(key)
            self.gpus_held.pop(sjob.job_id, None)
            ids.append(sjob.job_id)
        if ids:
            self.logger.info(f"Cancelled {len(ids)} job(s) this run submitted: {', '.join(ids)}")

    def shutdown(self):
        super().shutdown()
        if hasattr(self, "progress"):  # Snakemake may shut down an executor it never used
            self.progress.summary(self.sacct_calls)


__all__ = ["ExecutorSettings", "common_settings", "Executor", "WorkflowError"]
