"""The whole study through Snakemake + the submitit executor on this machine (local launcher).

These run the real `snakemake` CLI with the repository's local profile on a
copy of the workflow, a tiny study (tests/configs/local_tiny.yaml).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cudagraph_bench.cells import iter_cells

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests/configs/local_tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
LOCAL = "results/local"  # config/local.yaml's results_dir: everything the local profile writes
RAW = f"{LOCAL}/raw/local"


def snakemake_cmd(*args: str) -> list[str]:
    # configfiles last but one: their nargs="+" would swallow a target after them.
    return [
        *SNAKEMAKE,
        *args,
        "--profile",
        "profiles/local",
        "--configfiles",
        "config/config.yaml",
        "config/local.yaml",
        str(TINY),
    ]


class Started:
    """A `snakemake` run started now and read later (wait()), so that other tests run meanwhile.
    Its output goes to files: a pipe nobody reads yet would fill and stall it."""

    def __init__(self, workdir: Path, *args: str, env: dict | None = None, timeout: float = 900):
        self.cmd = snakemake_cmd(*args)
        self.timeout = timeout
        self._out, self._err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            self.cmd, cwd=workdir, stdout=self._out, stderr=self._err, text=True, env={**os.environ, **(env or {})}
        )
        self._started = time.monotonic()
        self._done: subprocess.CompletedProcess | None = None

    def wait(self, check: bool = True) -> subprocess.CompletedProcess:
        if self._done is None:
            try:
                self.proc.wait(timeout=max(1.0, self.timeout - (time.monotonic() - self._started)))
            except subprocess.TimeoutExpired:
                self.stop()
                raise
            self._out.seek(0)
            self._err.seek(0)
            self._done = subprocess.CompletedProcess(self.cmd, self.proc.returncode, self._out.read(), self._err.read())
            self._out.close()
            self._err.close()
        proc = self._done
        if check and proc.returncode != 0:
            raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return proc

    def stop(self) -> None:
        """End a run nobody waited for (its tests were deselected or the session was interrupted):
        Snakemake cancels its jobs on SIGTERM."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def snakemake(workdir: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    return Started(workdir, *args, env=env).wait(check=check)


def submitted(proc: subprocess.CompletedProcess) -> list[str]:
    """Result files the executor submitted a job for, from its progress lines."""
    return sorted(
        line.split("submitted ", 1)[1].split(" as job")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("submitted ")
    )


def tiny_config() -> dict:
    import yaml
    from cudagraph_bench.cells import check_config

    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for extra in (REPO / "config/local.yaml", TINY):
        override = yaml.safe_load(extra.read_text())
        for key, value in override.items():
            if isinstance(value, dict) and key in ("study",):
                config[key].update(value)
            else:
                config[key] = value
    check_config(config)
    return config


def committed_outputs(root: Path) -> dict[str, bytes]:
    """Every file under ROOT/results outside results/local: the committed results and paper outputs."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted((root / "results").rglob("*"))
        if p.is_file() and not p.relative_to(root).as_posix().startswith(f"{LOCAL}/")
    }


# The tiny study takes minutes and mostly one core: it starts in the background with the module's
# first test, the tests that need no finished study (a fresh workdir each) run meanwhile, the tests
# that read it wait for it, and the tests that change it each get a copy (changed_studies).


def _module_needs_study(request) -> bool:
    return any(
        "finished_study" in item.fixturenames
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    )


@pytest.fixture(scope="module", autouse=True)
def study_started(request, tmp_path_factory):
    """Starts the tiny study (see finished_study) if any selected test of this module reads it."""
    if not _module_needs_study(request):
        yield None
        return
    from conftest import copy_workflow

    workdir = copy_workflow(tmp_path_factory.mktemp("local") / "study")
    shutil.copytree(REPO / "results", workdir / "results", ignore=shutil.ignore_patterns("local", "status.md"))
    before = committed_outputs(workdir)
    run = Started(workdir)
    try:
        yield workdir, run, before
    finally:
        run.stop()


@pytest.fixture(scope="module")
def finished_study(study_started):
    """One full run of the tiny study, shared by the tests that only read it: in a copy of the
    workflow that also holds the repository's committed results and paper outputs."""
    workdir, run, before = study_started
    proc = run.wait()
    return workdir, proc, before


# -- no finished study needed: these run while the study runs --


def test_bad_config_fails_before_any_job(workdir):
    bad = workdir / "bad.yaml"
    bad.write_text("study:\n  batch_sizes: [1, -4]\n")
    proc = subprocess.run(
        [
            *SNAKEMAKE,
            "--profile",
            "profiles/local",
            "--configfiles",
            "config/config.yaml",
            "config/local.yaml",
            str(bad),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "batch_sizes" in proc.stderr
    assert "submitted" not in proc.stderr
    assert not (workdir / "results").exists()


def test_a_local_run_left_in_the_committed_raw_folder_stops_the_committed_study(workdir):
    """results/raw/local (where the local profile wrote before results/local) would be mixed into the
    paper outputs: the study refuses to plan, naming it and where it belongs."""
    stale = workdir / "results/raw/local/graph_pool/latency/eager/bs1.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    proc = subprocess.run([*SNAKEMAKE, "-n"], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "results/raw/local/" in out and "results/local/raw/" in out
    assert snakemake(workdir, "-n").returncode == 0  # the local profile (results/local) is not concerned


def test_lint_is_clean(workdir):
    proc = subprocess.run([*SNAKEMAKE, "--lint"], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_injected_oom_is_a_result_not_a_crash(workdir):
    target = f"{RAW}/graph_pool/latency/eager/bs1.json"
    proc = snakemake(workdir, target, env={"CGB_INJECT_FAILURE": "oom"})
    r = json.loads((workdir / target).read_text())
    assert r["status"] == "oom" and "out of memory" in r["reason"]
    assert submitted(proc) == [target]


def test_rerun_errors_measures_failed_cells_again_and_keeps_the_old(workdir):
    target = f"{RAW}/graph_pool/startup/eager/single.json"
    snakemake(workdir, target, env={"CGB_INJECT_FAILURE": "error"})
    assert json.loads((workdir / target).read_text())["status"] == "error"
    dry = snakemake(workdir, target, "-n", "--config", "rerun_errors=True", check=False)
    assert dry.returncode != 0 and "python -m cudagraph_bench rerun-errors" in dry.stderr + dry.stdout
    assert json.loads((workdir / target).read_text())["status"] == "error"  # a dry run moves nothing
    verb = subprocess.run(
        [sys.executable, "-m", "cudagraph_bench", "rerun-errors", "--config", "config/config.yaml",
         "config/local.yaml", str(TINY)],
        cwd=workdir, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(workdir / "workflow")},
    )  # fmt: skip
    assert verb.returncode == 0 and f"moved aside: {target} (error)" in verb.stdout, verb.stderr
    proc = snakemake(workdir, target)
    assert submitted(proc) == [target]
    assert json.loads((workdir / target).read_text())["status"] == "ok"
    kept = list((workdir / LOCAL / "superseded").rglob("single.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["status"] == "error"


# -- the finished study, read only --


def test_full_local_run_produces_results_tables_and_figures(finished_study):
    workdir, proc, _ = finished_study
    cells = list(iter_cells(tiny_config()))
    assert sorted(submitted(proc)) == sorted(c.path_in(LOCAL) for c in cells)
    statuses = {}
    for c in cells:
        r = json.loads((workdir / c.path_in(LOCAL)).read_text())
        statuses[(c.backend, c.mode)] = r["status"]
        if r["status"] == "ok":
            assert r["metrics"], c.path
            assert r["provenance"]["cpu_model"]
    # CPU eager cells are measured; cudagraph needs CUDA; vLLM is not installed here.
    assert statuses[("graph_pool", "eager")] == "ok"
    assert statuses[("graph_pool", "cudagraph")] == "unsupported"
    assert statuses[("vllm", "eager")] == "unsupported"
    # the serving cells of one mode were one job (one server), each with its own result file
    jobs = {}
    for line in proc.stderr.splitlines():
        if line.startswith("submitted ") and "/vllm/serving_" in line:
            path, job = line.split("submitted ", 1)[1].split(" as job ")
            jobs.setdefault(job, []).append(path.split("/raw/", 1)[1])
    assert sorted(sorted(v) for v in jobs.values()) == [
        [f"local/vllm/{w}/{mode}/single.json" for w in ("serving_a", "serving_b")] for mode in ("cudagraph", "eager")
    ]
    serving = json.loads((workdir / f"{RAW}/vllm/serving_b/eager/single.json").read_text())
    assert serving["status"] == "unsupported" and len(serving["details"]["shared_server"]["cells"]) == 2
    lat = json.loads((workdir / f"{RAW}/graph_pool/latency/eager/bs4.json").read_text())
    assert lat["metrics"]["decode_step_ms_median"] > 0
    assert lat["metrics"]["output_tokens_per_s"] > 0
    for name in (
        "summary.csv",
        "status.md",
        "tables/headline.md",
        "tables/metrics.tex",
        "figures/fig1_latency_throughput.pdf",
        "figures/fig2_speedup.png",
    ):
        assert (workdir / LOCAL / name).stat().st_size > 0, name
    summary = (workdir / LOCAL / "summary.csv").read_text()
    assert summary.count("\n") == len(cells) + 1  # the local cells only, never the committed H100 results
    headline = (workdir / LOCAL / "tables/headline.md").read_text()
    assert "unsupported" in headline and "| local | tiny |" in headline and "h100" not in headline


def test_a_local_run_never_touches_the_committed_outputs(finished_study):
    workdir, proc, before = finished_study
    assert committed_outputs(workdir) == before
    assert f"outputs in {LOCAL}/" in proc.stdout + proc.stderr  # the closing summary names where they are


def test_second_run_does_nothing(finished_study):
    workdir, _, _ = finished_study
    proc = snakemake(workdir)
    assert submitted(proc) == []
    assert "Nothing to be done" in proc.stderr


def test_report_builds_with_every_figure(finished_study):
    workdir, _, _ = finished_study
    snakemake(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    assert len(html) > 10000
    for fig in ("fig1_latency_throughput", "fig2_speedup", "fig6_roofline"):
        assert fig in html, fig


# -- the finished study changed: each test in its own copy, their runs started together --
# Each test's change is made and its Snakemake run started (start_<test>) when the first of them
# needs the finished study; the test then waits for its run and checks it.


def raw_mtimes(workdir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (workdir / "results").rglob("*.json") if "/raw/" in p.as_posix()}


def start_deleting_one_result(workdir: Path) -> dict:
    victim = f"{RAW}/graph_pool/latency/eager/bs1.json"
    before = raw_mtimes(workdir)
    (workdir / victim).unlink()
    return {"victim": victim, "before": before, "run": Started(workdir)}


def test_deleting_one_result_reruns_exactly_that_cell(changed_study):
    workdir, victim, before = changed_study["workdir"], changed_study["victim"], changed_study["before"]
    proc = changed_study["run"].wait()
    assert submitted(proc) == [victim]
    after = raw_mtimes(workdir)
    assert {p for p in after if after[p] != before.get(p)} == {workdir / victim}


def start_missing_serving_rate(workdir: Path) -> dict:
    victim, kept = (f"{RAW}/vllm/{w}/eager/single.json" for w in ("serving_b", "serving_a"))
    before = raw_mtimes(workdir)
    kept_bytes = (workdir / kept).read_bytes()
    (workdir / victim).unlink()
    run = Started(workdir, victim)  # the cell only: the outputs built from it are not this test's
    return {"victim": victim, "kept": kept, "before": before, "kept_bytes": kept_bytes, "run": run}


def test_a_missing_serving_rate_is_measured_alone_and_the_other_kept(changed_study):
    """The serving cells of one mode are one job (one server): with one rate's file gone, that job
    runs again, Snakemake keeps the other rate's file (update()) and the job writes only the
    missing one."""
    workdir, victim, kept = changed_study["workdir"], changed_study["victim"], changed_study["kept"]
    before, kept_bytes = changed_study["before"], changed_study["kept_bytes"]
    proc = changed_study["run"].wait()
    assert submitted(proc) == sorted([kept, victim])  # one job, shown as its two cells
    after = raw_mtimes(workdir)
    # Snakemake touches every output of a finished job; the kept rate's measurement is unchanged
    assert {p for p in after if after[p] != before.get(p)} == {workdir / victim, workdir / kept}
    assert (workdir / kept).read_bytes() == kept_bytes


def start_corrupt_result(workdir: Path) -> dict:
    victim = workdir / f"{RAW}/vllm/startup/eager/single.json"
    good = victim.read_text()
    # Newer and with another checksum than recorded: the summary reruns and must refuse it.
    victim.write_text(good[: len(good) // 2])
    return {"run": Started(workdir)}


def test_corrupt_result_is_named(changed_study):
    proc = changed_study["run"].wait(check=False)
    assert proc.returncode != 0
    assert f"{RAW}/vllm/startup/eager/single.json" in proc.stderr + proc.stdout


CHANGES = {
    "test_deleting_one_result_reruns_exactly_that_cell": start_deleting_one_result,
    "test_a_missing_serving_rate_is_measured_alone_and_the_other_kept": start_missing_serving_rate,
    "test_corrupt_result_is_named": start_corrupt_result,
}


@pytest.fixture(scope="module")
def changed_studies(request, finished_study, tmp_path_factory):
    """For each selected test of CHANGES: a copy of the finished study (mtimes kept: Snakemake sees
    it as finished), changed and its Snakemake run started, all at once."""
    workdir, _, _ = finished_study
    names = {item.name for item in request.session.items if getattr(item, "module", None) is request.module}
    started = {}
    try:
        for name, start in CHANGES.items():
            if name in names:
                copy = Path(shutil.copytree(workdir, tmp_path_factory.mktemp("changed") / "study", symlinks=True))
                started[name] = {"workdir": copy, **start(copy)}
        yield started
    finally:
        for state in started.values():
            state["run"].stop()


@pytest.fixture
def changed_study(request, changed_studies) -> dict:
    """This test's changed copy of the study: its workdir, what start_<test> recorded, its run."""
    return changed_studies[request.node.name]
