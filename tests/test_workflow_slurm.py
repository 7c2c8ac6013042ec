"""The slurm profile against a real single-node Slurm cluster (tests/slurm_cluster).

Every cell is a real sbatch job submitted by the submitit executor plugin; sacct
is the witness for what was submitted where.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests/configs/slurm_tiny.yaml"
CELLS = [
    "results/raw/h200/graph_pool/latency/eager/bs1.json",
    "results/raw/h200/graph_pool/startup/eager/single.json",
    "results/raw/l40s/graph_pool/latency/eager/bs1.json",
    "results/raw/l40s/graph_pool/startup/eager/single.json",
]


def command(*extra: str, config: Path = TINY) -> list[str]:
    # The README's command, plus the test study.
    # configfiles go last: their nargs="+" would swallow a target after them.
    return [sys.executable, "-m", "snakemake", *extra, "--profile", "profiles/slurm",
            "--configfiles", "config/config.yaml", str(config)]  # fmt: skip


def run(workdir: Path, *extra: str, env=None, check=True, config: Path = TINY) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(*extra, config=config), cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


def submitted(stderr: str) -> dict[str, str]:
    """result path -> job id, from the executor's progress lines."""
    out = {}
    for line in stderr.splitlines():
        if line.startswith("submitted "):
            path, job = line[len("submitted ") :].split(" as job ")
            out[path] = job.strip()
    return out


def sacct(job_ids) -> dict[str, dict]:
    """job id -> {State, Partition, AllocTRES, JobName} (allocations only, no steps)."""
    ids = ",".join(job_ids)
    for _ in range(30):  # sacct lags the jobs by a second or two
        out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", ids, "-o", "JobID,State,Partition,AllocTRES,JobName"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        rows = {}
        for line in out.splitlines():
            jid, state, part, tres, name = line.split("|")
            rows[jid] = {"State": state.split()[0], "Partition": part, "AllocTRES": tres, "JobName": name}
        if len(rows) == len(job_ids) and all(r["Partition"] for r in rows.values()):
            return rows
        time.sleep(1)
    return rows


def job_name(path: str) -> str:
    """The Slurm job name the executor gives a cell: cgb.<rule>.<wildcards...>."""
    gpu, backend, workload, mode, point = Path(path).with_suffix("").parts[2:]
    return f"cgb.cell_{backend}_{gpu}.{workload}.{mode}.{point}"


def jobs_named(name_part: str) -> list[str]:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-S", "now-1hour", "-o", "JobID,JobName%200"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return [line.split("|")[0] for line in out.splitlines() if name_part in line.split("|")[1]]


def wait_for(predicate, timeout=120, what="condition"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def registry(workdir: Path) -> dict:
    try:
        return json.loads((workdir / ".snakemake/submitit/jobs.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def test_every_cell_is_a_sbatch_job_on_its_partition(slurm_cluster, workdir):
    proc = run(workdir)
    jobs = submitted(proc.stderr)
    assert sorted(jobs) == CELLS
    rows = sacct(jobs.values())
    for path, jid in jobs.items():
        gpu = path.split("/")[2]
        assert rows[jid]["State"] == "COMPLETED", rows[jid]
        assert rows[jid]["Partition"] == f"gpu-{gpu}"
        assert f"gres/gpu:{'h200' if gpu == 'h200' else 'l40s'}=1" in rows[jid]["AllocTRES"].lower()
        result = json.loads((workdir / path).read_text())
        assert result["status"] == "ok"
        assert result["provenance"]["slurm_job_id"] == jid
    assert (workdir / "results/tables/headline.md").exists()
    assert (workdir / "results/figures/fig2_speedup.pdf").exists()
    assert "scheduler status queries" in proc.stderr


def test_scancel_fails_one_cell_and_the_rerun_submits_only_it(slurm_cluster, workdir):
    victim = "results/raw/h200/graph_pool/startup/eager/single.json"
    env = {**os.environ, "CGB_INJECT_FAILURE": "h200.graph_pool.startup.eager.single:sleep60"}
    proc = subprocess.Popen(command(), cwd=workdir, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    jid = wait_for(lambda: registry(workdir).get(victim, {}).get("job_id"), what="the victim's job id")
    wait_for(lambda: sacct([jid]).get(jid, {}).get("State") == "RUNNING", what="the victim to run")
    subprocess.run(["scancel", jid], check=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0  # one cell failed (keep-going: the others finished)
    assert f"cell job {jid} failed: Slurm state CANCELLED" in err
    assert not (workdir / victim).exists()
    assert all((workdir / p).exists() for p in CELLS if p != victim)
    before = len(jobs_named(job_name(victim)))

    again = run(workdir)
    assert list(submitted(again.stderr)) == [victim]
    assert len(jobs_named(job_name(victim))) == before + 1
    assert json.loads((workdir / victim).read_text())["status"] == "ok"
    assert (workdir / "results/tables/headline.md").exists()


def test_killed_snakemake_reattaches_instead_of_resubmitting(slurm_cluster, workdir):
    names = {path: job_name(path) for path in CELLS}
    earlier = {path: set(jobs_named(name)) for path, name in names.items()}  # from other tests
    env = {**os.environ, "CGB_INJECT_FAILURE": "sleep25"}
    proc = subprocess.Popen(command(), cwd=workdir, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reg = wait_for(lambda: len(registry(workdir)) == len(CELLS) and registry(workdir), what="all cells submitted")
    first_ids = {path: rec["job_id"] for path, rec in reg.items()}
    proc.send_signal(signal.SIGKILL)  # a login-node disconnect: no clean-up at all
    proc.wait()
    # The status grid sees the orphaned jobs in the queue, with their ids.
    grid = subprocess.run([sys.executable, "-m", "cudagraph_bench", "status", "--config", "config/config.yaml",
                           str(TINY)], cwd=workdir, capture_output=True, text=True, check=True).stdout  # fmt: skip
    for jid in first_ids.values():
        assert jid in grid, grid
    assert "running" in grid.lower() or "pending" in grid.lower(), grid
    # Snakemake leaves its lock behind after SIGKILL; the README says to unlock first.
    run(workdir, "--unlock")
    again = run(workdir, env={"CGB_INJECT_FAILURE": "sleep25"})
    assert submitted(again.stderr) == {}
    assert again.stderr.count("re-attached") == len(CELLS)
    for path, jid in first_ids.items():
        assert json.loads((workdir / path).read_text())["provenance"]["slurm_job_id"] == jid
        assert set(jobs_named(names[path])) - earlier[path] == {jid}


@pytest.mark.parametrize(
    "key, value, message",
    [("partition", "gpu h200", "partition"), ("gres", "gpu:H200:all", "gres")],
)
def test_bad_partition_or_gres_is_refused_before_any_sbatch(slurm_cluster, workdir, key, value, message):
    text = TINY.read_text().replace({"partition": "partition: gpu-h200", "gres": "gres: gpu:H200:1"}[key],
                                    f'{key}: "{value}"')  # fmt: skip
    bad = workdir / "bad.yaml"
    bad.write_text(text)
    proc = run(workdir, check=False, config=bad)
    assert proc.returncode != 0
    assert message in proc.stderr and value in proc.stderr
    assert "submitted" not in proc.stderr
    assert not (workdir / ".snakemake/submitit/jobs.json").exists()


def test_partition_the_cluster_lacks_fails_at_submission_with_sbatchs_message(slurm_cluster, workdir):
    bad = workdir / "nosuch.yaml"
    bad.write_text(TINY.read_text().replace("partition: gpu-l40s", "partition: gpu-nosuch"))
    proc = run(workdir, check=False, config=bad)
    assert proc.returncode != 0
    assert "submission refused" in proc.stderr and "invalid partition" in proc.stderr.lower()
    assert all((workdir / p).exists() for p in CELLS if "/h200/" in p)


def test_cuda_oom_inside_the_job_is_status_oom(slurm_cluster, workdir):
    target = "results/raw/l40s/graph_pool/latency/eager/bs1.json"
    run(workdir, target, env={"CGB_INJECT_FAILURE": "oom"})
    result = json.loads((workdir / target).read_text())
    assert result["status"] == "oom"
    assert result["provenance"]["slurm_job_id"]


def test_ctrl_c_cancels_the_jobs_this_run_submitted(slurm_cluster, workdir):
    env = {**os.environ, "CGB_INJECT_FAILURE": "sleep60"}
    proc = subprocess.Popen(command(), cwd=workdir, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reg = wait_for(lambda: len(registry(workdir)) == len(CELLS) and registry(workdir), what="all cells submitted")
    ids = [rec["job_id"] for rec in reg.values()]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Cancelled 4 job(s) this run submitted" in err, err[-6000:]
    states = wait_for(lambda: (s := sacct(ids)) and all(r["State"] == "CANCELLED" for r in s.values()) and s,
                      what="every job CANCELLED in sacct")  # fmt: skip
    assert sorted(states) == sorted(ids)
    assert registry(workdir) == {}  # nothing left to re-attach to
