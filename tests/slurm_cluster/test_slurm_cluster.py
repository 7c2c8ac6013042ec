"""The test cluster behaves like the real ones the pipeline submits to:
GPU partitions with typed GRES, an enforced account/QOS, sacct that records
COMPLETED and CANCELLED jobs, and a clean restart."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from .cluster import MARKER, ClusterInfo, start_cluster, stop_cluster

pytestmark = pytest.mark.slurm


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
    return proc


def sbatch(c: ClusterInfo, *args: str) -> str:
    return run(
        c.sbatch, "--parsable", f"--account={c.account}", f"--qos={c.qos}", "--output=/dev/null", *args
    ).stdout.strip()


def wait_sacct(c: ClusterInfo, job: str, state: str, timeout: float = 60) -> dict[str, str]:
    """Poll sacct until the job's allocation is in `state`; return its fields."""
    fields = ("State", "Partition", "Account", "QOS", "AllocTRES")
    deadline = time.monotonic() + timeout
    row: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = run(c.sacct, "-n", "-P", "-X", "-j", job, "-o", ",".join(fields)).stdout
        if out.strip():
            row = dict(zip(fields, out.splitlines()[0].split("|"), strict=True))
            # "CANCELLED by 0" for a cancelled job. The partition of a short job
            # can reach sacct a few seconds after its final state does.
            if row["State"].split()[0] == state and row["Partition"]:
                return row
        time.sleep(0.2)
    pytest.fail(f"job {job} not {state} in sacct after {timeout} s; last: {row}")


def test_gpu_jobs_run_on_every_gpu_partition(slurm_cluster: ClusterInfo) -> None:
    c = slurm_cluster
    jobs = {p: sbatch(c, "-p", p, f"--gres={c.gres(p)}", "--mem=1G", "--wrap", "sleep 1") for p in c.gpu_partitions}
    for p, job in jobs.items():
        row = wait_sacct(c, job, "COMPLETED")
        assert row["Partition"] == p
        assert (row["Account"], row["QOS"]) == (c.account, c.qos)
        assert f"gres/gpu:{c.gpu_partitions[p].lower()}=1" in row["AllocTRES"]


def test_job_without_gres_runs_on_default_partition(slurm_cluster: ClusterInfo) -> None:
    job = run(slurm_cluster.sbatch, "--parsable", "--output=/dev/null", "--wrap", "true").stdout.strip()
    assert wait_sacct(slurm_cluster, job, "COMPLETED")["Partition"] == "debug"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["-p", "nosuch"], "invalid partition"),
        (["-p", "gpu-h200", "--account=nosuch"], "Invalid account"),
        (["-p", "gpu-h200", "--qos=nosuch"], "Invalid qos"),
    ],
)
def test_bad_submission_refused_at_once(slurm_cluster: ClusterInfo, args: list[str], error: str) -> None:
    start = time.monotonic()
    proc = run(slurm_cluster.sbatch, *args, "--wrap", "true", check=False)
    assert proc.returncode != 0
    assert error.lower() in proc.stderr.lower()
    assert time.monotonic() - start < 10


def test_cancelled_job_is_cancelled_in_sacct(slurm_cluster: ClusterInfo) -> None:
    c = slurm_cluster
    job = sbatch(c, "-p", "gpu-h100", f"--gres={c.gres('gpu-h100')}", "--wrap", "sleep 300")
    wait_sacct(c, job, "RUNNING")
    run(c.scancel, job)
    wait_sacct(c, job, "CANCELLED")


# What another test cluster leaves in /etc/slurm: its controller is this machine, its daemons are gone.
LEFTOVER = "# left by another project's test cluster\nClusterName=other\nSlurmctldHost=localhost\nNodeName=n1 CPUs=1\n"


def test_a_slurm_conf_left_by_another_test_cluster_is_moved_aside_and_put_back(slurm_cluster: ClusterInfo) -> None:
    """Such a slurm.conf made every Slurm test skip once; now start.sh moves it aside and stop.sh
    puts it back. Leaves the cluster stopped: second to last in this module, before the test
    that restarts it (a later fixture user starts one anyway)."""
    conf = slurm_cluster.slurm_conf
    aside = Path(f"{conf}.cgb-orig")
    stop_cluster()  # puts back what the session's start moved aside, if anything
    fake = not conf.exists() or conf.read_text().startswith(MARKER)  # else the machine has one: use it
    try:
        if fake:
            conf.write_text(LEFTOVER)
        before = conf.read_bytes()
        c = start_cluster(fresh=True)
        assert conf.read_text().startswith(MARKER) and aside.read_bytes() == before
        wait_sacct(c, sbatch(c, "-p", "debug", "--wrap", "true"), "COMPLETED")
        stop_cluster()
        assert conf.read_bytes() == before and not aside.exists()
    finally:
        stop_cluster(check=False)
        if fake and conf.exists() and conf.read_text() == LEFTOVER:
            conf.unlink()


def test_restart_gives_a_fresh_working_cluster(slurm_cluster: ClusterInfo) -> None:
    # Last in this module: it restarts the session's cluster.
    c = start_cluster(fresh=True)
    assert c.partitions == slurm_cluster.partitions
    job = sbatch(c, "-p", "gpu-a100", f"--gres={c.gres('gpu-a100')}", "--wrap", "true")
    assert job == "1"  # the state was wiped: job ids start over
    wait_sacct(c, job, "COMPLETED")
