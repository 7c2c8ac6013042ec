"""The submitit executor plugin's pure parts: resources -> submitit parameters, the job argv, the registry."""

import functools
import json
import os

import pytest
from snakemake_executor_plugin_submitit import submission
from snakemake_executor_plugin_submitit.job import SnakemakeJob, job_argv
from snakemake_executor_plugin_submitit.registry import JobRegistry
from snakemake_interface_common.exceptions import WorkflowError

SETTINGS = {
    "partition": "gpu-h200",
    "gres": "gpu:H200:1",
    "account": "gts-pi",
    "qos": "inferno",
    "constraint": "",
    "time_min": 90,
    "cpus": 8,
    "mem_gb": 64,
    "extra_sbatch": {"exclusive": True},
}
RES = {"slurm": json.dumps(SETTINGS), "_cores": 1, "tmpdir": "/tmp", "mem_mb": 1000}


def test_slurm_parameters_map_every_setting():
    p = submission.parameters(RES, "slurm", "cgb.cell.x")
    assert p == {
        "name": "cgb.cell.x",
        "timeout_min": 90,
        "slurm_partition": "gpu-h200",
        "slurm_gres": "gpu:H200:1",
        "slurm_account": "gts-pi",
        "slurm_qos": "inferno",
        "cpus_per_task": 8,
        "mem_gb": 64,
        "slurm_additional_parameters": {"exclusive": True},
    }


def test_local_parameters_keep_the_time_limit_and_the_gpus(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert submission.parameters(RES, "local", "n") == {"name": "n", "timeout_min": 90, "gpus_per_node": 1}
    two = {"slurm": json.dumps({**SETTINGS, "gpus": 2})}
    assert submission.parameters(two, "local", "n")["gpus_per_node"] == 2


def test_slurm_gets_its_gpus_from_gres_not_from_gpus_per_node():
    p = submission.parameters({"slurm": json.dumps({**SETTINGS, "gpus": 1})}, "slurm", "n")
    assert "gpus_per_node" not in p and p["slurm_gres"] == "gpu:H200:1"


def _job_env(tmp_path, settings: dict, name: str) -> str | None:
    """CUDA_VISIBLE_DEVICES as a real local submitit job, built by the plugin, sees it."""
    ex = submission.make_executor("local", tmp_path / name)
    params = submission.parameters({"slurm": json.dumps(settings)}, "local", name)
    job = submission.submit(ex, params, functools.partial(os.getenv, "CUDA_VISIBLE_DEVICES"))
    return job.result()


def test_the_local_job_environment_exposes_the_cells_gpus(tmp_path, monkeypatch):
    # Without gpus_per_node, submitit's local launcher sets CUDA_VISIBLE_DEVICES="" and the
    # job sees no GPU at all (how an H200 run once recorded every cell "no CUDA device").
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert _job_env(tmp_path, {**SETTINGS, "gpus": 1}, "one") == "0"
    assert _job_env(tmp_path, {**SETTINGS, "gpus": 2}, "two") == "0,1"
    assert _job_env(tmp_path, {**SETTINGS, "gpus": 0}, "none") == ""
    # the GPUs this process was given are the ones handed on
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert _job_env(tmp_path, {**SETTINGS, "gpus": 1}, "given") == "3"


def test_cells_run_at_once_get_gpus_of_their_own(tmp_path, monkeypatch):
    """With --jobs 2 on a two-GPU machine each cell gets its own GPU (submitit's local launcher
    alone would give both the first one), a freed GPU is taken again, and a third cell at once
    is refused with the --jobs that fits."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    one = {"slurm": json.dumps({**SETTINGS, "gpus": 1})}
    a = submission.parameters(one, "local", "a")
    b = submission.parameters(one, "local", "b")
    assert submission.assign_gpus(a, set()) == [2] and a["visible_gpus"] == [2]
    assert submission.assign_gpus(b, {2}) == [3]
    with pytest.raises(WorkflowError, match=r"hold \[2, 3\].*--jobs at most 2"):
        submission.assign_gpus(submission.parameters(one, "local", "c"), {2, 3})
    assert submission.assign_gpus(submission.parameters(one, "local", "d"), {3}) == [2]
    # the job itself sees the GPU it was assigned
    ex = submission.make_executor("local", tmp_path / "b")
    job = submission.submit(ex, b, functools.partial(os.getenv, "CUDA_VISIBLE_DEVICES"))
    assert job.result() == "3"
    # a cell without GPUs takes none
    none = submission.parameters({"slurm": json.dumps({**SETTINGS, "gpus": 0})}, "local", "e")
    assert submission.assign_gpus(none, {2, 3}) is None


def test_more_gpus_than_this_process_may_use_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(WorkflowError, match=r"asks for 1 GPU.*CUDA_VISIBLE_DEVICES=''"):
        submission.parameters({"slurm": json.dumps({**SETTINGS, "gpus": 1})}, "local", "n")


def test_unknown_resource_or_setting_is_refused_with_the_valid_ones():
    with pytest.raises(WorkflowError, match=r"unknown resource\(s\) \['partition'\]"):
        submission.parameters({**RES, "partition": "x"}, "slurm", "n")
    bad = json.dumps({**SETTINGS, "partion": "x"})
    with pytest.raises(WorkflowError, match=r"unknown Slurm setting\(s\) \['partion'\].*partition"):
        submission.parameters({"slurm": bad}, "slurm", "n")


def test_parameters_are_accepted_by_submitit(tmp_path):
    ex = submission.make_executor("local", tmp_path)
    ex.update_parameters(**submission.parameters(RES, "slurm", "n"))  # slurm_* ignored by the local cluster


def test_unknown_launcher_is_refused(tmp_path):
    with pytest.raises(WorkflowError, match="launcher 'pbs'"):
        submission.make_executor("pbs", tmp_path)


def test_job_name_is_one_safe_word():
    name = submission.job_name("cell", {"gpu": "h200", "backend": "vllm", "point": "bs 1"})
    assert name == "cgb.cell.h200.vllm.bs_1"


def test_job_argv_runs_without_a_shell_unless_snakemake_chains_commands():
    assert job_argv("/venv/bin/python -m snakemake --target-jobs 'cell:gpu=h200,point=bs1'") == [
        "/venv/bin/python",
        "-m",
        "snakemake",
        "--target-jobs",
        "cell:gpu=h200,point=bs1",
    ]
    assert job_argv("cd /x && python -m snakemake")[:2] == ["bash", "-c"]


def test_job_raises_when_snakemake_fails(tmp_path):
    assert SnakemakeJob()(["true"], str(tmp_path)) == 0
    with pytest.raises(RuntimeError, match="exited with status 3"):
        SnakemakeJob()(["bash", "-c", "exit 3"], str(tmp_path))


def test_registry_survives_a_restart(tmp_path):
    reg = JobRegistry(tmp_path / "jobs.json")
    reg.record("results/raw/a.json", "123", "slurm", "/f")
    again = JobRegistry(tmp_path / "jobs.json")
    assert again.get("results/raw/a.json") == {"job_id": "123", "launcher": "slurm", "folder": "/f"}
    again.forget("results/raw/a.json")
    assert JobRegistry(tmp_path / "jobs.json").get("results/raw/a.json") is None


def test_the_registry_is_written_by_the_one_atomic_write_a_group_can_read(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("snakemake_executor_plugin_submitit.registry.write_atomic", lambda *a: calls.append(a))
    JobRegistry(tmp_path / "jobs.json").record("results/raw/a.json", "1", "local", "/f")
    assert len(calls) == 1 and calls[0][0] == tmp_path / "jobs.json"
    monkeypatch.undo()
    old = os.umask(0o002)  # a group's project directory
    try:
        JobRegistry(tmp_path / "g" / "jobs.json").record("results/raw/a.json", "1", "local", "/f")
    finally:
        os.umask(old)
    assert (tmp_path / "g" / "jobs.json").stat().st_mode & 0o777 == 0o664
    assert [p.name for p in (tmp_path / "g").iterdir()] == ["jobs.json"]  # no temporary file left


def test_damaged_registry_is_kept_aside(tmp_path):
    (tmp_path / "jobs.json").write_text("{not json")
    reg = JobRegistry(tmp_path / "jobs.json")
    assert reg.get("x") is None
    assert (tmp_path / "jobs.damaged.json").read_text() == "{not json"


def test_ctrl_c_during_a_status_check_cancels_the_jobs_it_holds(tmp_path, caplog):
    """Snakemake's status thread takes the jobs it polls out of active_jobs until the poll returns
    (RemoteExecutor._wait_for_jobs); a Ctrl-C in that window hands cancel_jobs only the jobs
    submitted since. Every unfinished job of the run must be cancelled all the same: this was the
    Slurm test's flaky 'Cancelled 1 job(s)' under load."""
    import logging
    import threading
    from types import SimpleNamespace

    from snakemake_executor_plugin_submitit import Executor
    from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo

    class FakeJob:
        def __init__(self, job_id):
            self.job_id, self.cancelled = job_id, False

        def cancel(self, check):
            self.cancelled = True

    ex = Executor.__new__(Executor)  # the parts cancel_jobs uses, without a workflow to build it
    ex.logger = logging.getLogger("test-executor")
    ex.registry = JobRegistry(tmp_path / "jobs.json")
    ex.gpus_held, ex.live, ex._live_lock = {}, {}, threading.Lock()
    ex.workflow = SimpleNamespace(scheduler=SimpleNamespace(submit_callback=lambda job: None))
    ex.active_jobs, ex.lock = [], threading.Lock()
    jobs = [FakeJob(str(i)) for i in range(4)]
    for j in jobs:
        ex.registry.record(f"results/cell{j.job_id}.json", j.job_id, "slurm", str(tmp_path))
        ex._report_live(SubmittedJobInfo(SimpleNamespace(register=lambda external_jobid: None), external_jobid=j.job_id,
                                         aux={"submitit_job": j, "keys": [f"results/cell{j.job_id}.json"]}))  # fmt: skip
    polled = list(ex.active_jobs)  # a status check under way holds jobs 0..2; job 3 came after it began
    ex.active_jobs[:] = ex.active_jobs[3:]
    ex._finished(polled[0].external_jobid)  # the poll saw job 0 finish
    with caplog.at_level(logging.INFO, logger="test-executor"):
        ex.cancel_jobs(list(ex.active_jobs))  # what RemoteExecutor.cancel() passes on Ctrl-C
    assert [j.cancelled for j in jobs] == [False, True, True, True]
    assert "Cancelled 3 job(s) this run submitted" in caplog.text
    assert ex.live == {} and [ex.registry.get(f"results/cell{i}.json") for i in range(1, 4)] == [None] * 3
