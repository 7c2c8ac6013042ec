"""What keeps CI honest: the linters run, skip reasons are printed, the Slurm tests fail under
CI=true instead of skipping, a slurm.conf left by another test cluster is moved aside and put
back, and the benchmarks import no test code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMON_SH = REPO / "tests/slurm_cluster/_common.sh"
MARKER = "# Written by cgb-bench tests/slurm_cluster/start.sh; state dir:"
# A slurm.conf another test cluster left behind: its controller is this machine, its daemons are gone.
LEFTOVER = "# another project's test cluster\nClusterName=other\nSlurmctldHost=localhost\nNodeName=n1 CPUs=1\n"


# -- .ci/run and pytest's options ----------------------------------------------------------------


def ci_commands() -> list[str]:
    lines = (REPO / ".ci/run").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "echo"))]


def test_ci_runs_the_linters_before_the_readme_test_command():
    cmds = ci_commands()

    def where(pattern: str) -> int:
        hits = [i for i, c in enumerate(cmds) if re.search(pattern, c)]
        assert hits, f"{pattern!r} not in .ci/run: {cmds}"
        return hits[0]

    setup = where(r"bash workflow/scripts/setup_env\.sh --test")
    pytest_ = where(r"\.venv/bin/python -m pytest$")
    for linter in (
        r"ruff check workflow tests benchmarks",
        r"ruff format --check workflow tests benchmarks",
        r"snakefmt --check Snakefile workflow/rules",
    ):
        assert setup < where(linter) < pytest_, linter
    assert "set -euo pipefail" in cmds  # a failing linter stops CI


def test_pytest_always_reports_skip_reasons():
    addopts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    chars = re.search(r"-r(\w+)", addopts)
    assert chars and "s" in chars[1] and "f" in chars[1] and "E" in chars[1], addopts


# -- benchmarks/ holds timers of the product, no test code ---------------------------------------


@pytest.mark.parametrize("bench", sorted(p.name for p in (REPO / "benchmarks").glob("*.py")))
def test_benchmarks_import_no_test_code(bench):
    source = (REPO / "benchmarks" / bench).read_text()
    test_modules = {"tests", "conftest", "helpers_results", "slurm_cluster"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        assert not {n.split(".")[0] for n in names} & test_modules, f"{bench} imports {names}"
    assert not re.search(r"""sys\.path\.\w+\(.*["']tests["']""", source), f"{bench} puts tests/ on sys.path"


def test_only_the_snakefile_puts_the_package_on_sys_path():
    """The package is importable as installed (setup_env.sh, editable) or through PYTHONPATH
    (workflow/offline/run.sh); the Snakefile's rules alone add workflow/ themselves, so that a
    checkout's Snakefile plans with that checkout's code."""
    found = []
    for path in [*REPO.glob("workflow/**/*.py"), *REPO.glob("benchmarks/*.py"), *REPO.glob("tests/**/*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*sys\.path\.(insert|append)\(", line):
                found.append(f"{path.relative_to(REPO)}:{n}")
    assert found == [], found
    assert "sys.path.insert" in (REPO / "workflow" / "rules" / "common.smk").read_text()


# -- the fixture: skip outside CI, fail under CI --------------------------------------------------


def run_fixture(tmp_path: Path, ci: str | None, refuse: str | None, reason: str | None) -> subprocess.CompletedProcess:
    """A pytest run of one test that asks for slurm_cluster, with start.sh refusing (`refuse`) or a
    precondition missing (`reason`), faked."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(f"""
        from slurm_cluster import conftest_fixture as f
        from slurm_cluster.cluster import ClusterRefused

        def start_cluster(**kw):
            raise ClusterRefused({refuse!r})

        f.start_cluster = start_cluster
        f.skip_reason = lambda: {reason!r}
        from slurm_cluster.conftest_fixture import slurm_cluster  # noqa: F401
        """)
    )
    (tmp_path / "test_needs_slurm.py").write_text("def test_submit(slurm_cluster):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH")]))
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-rfEs", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


WHY = "/etc/slurm/slurm.conf was not written by start.sh, and Slurm daemons it did not start run here: slurmctld(7)"


def test_outside_ci_a_cluster_that_cannot_start_skips_with_the_reason(tmp_path):
    proc = run_fixture(tmp_path, None, WHY, None)
    assert proc.returncode == 0, proc.stdout
    assert "1 skipped" in proc.stdout and f"start.sh refused: {WHY}" in proc.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_cluster_that_cannot_start_fails_with_the_reason(tmp_path, ci):
    proc = run_fixture(tmp_path, ci, WHY, None)
    assert proc.returncode == 1, proc.stdout
    assert not re.search(r"\d+ skipped", proc.stdout) and "1 error" in proc.stdout
    assert f"the Slurm test cluster cannot start: start.sh refused: {WHY}" in proc.stdout


def test_under_ci_a_missing_precondition_fails_too(tmp_path):
    proc = run_fixture(tmp_path, "true", None, "the Slurm test cluster needs root")
    assert proc.returncode == 1 and not re.search(r"\d+ skipped", proc.stdout), proc.stdout
    assert "cannot start: the Slurm test cluster needs root" in proc.stdout
    proc = run_fixture(tmp_path, "false", None, "the Slurm test cluster needs root")
    assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout


# -- /etc/slurm: a leftover config is moved aside and put back; one in use is never touched --------


def sh(etc: Path, script: str, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    """Run `script` after sourcing _common.sh, with the configs in `etc` instead of /etc/slurm."""
    env = {**os.environ, "CGB_SLURM_ETC": str(etc)}
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    return subprocess.run(["bash", "-c", f'set -euo pipefail; source "{COMMON_SH}"\n{script}'], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


NO_DAEMONS = "slurm_daemons() { :; }\n"  # whatever runs on this machine


def test_a_leftover_config_is_moved_aside_and_put_back_exactly(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "slurm.conf").write_text(LEFTOVER)
    (etc / "gres.conf").write_text("Name=gpu File=/dev/null\n")
    (etc / "plugstack.conf").write_text("include x\n")
    proc = sh(
        etc, NO_DAEMONS + "if conf_in_use; then echo IN-USE; else echo LEFTOVER; fi; aside_in_the_way || echo CLEAR"
    )
    assert proc.stdout.split() == ["LEFTOVER", "CLEAR"], proc.stderr
    # start.sh: set aside, then write its own three configs.
    script = 'set_aside_confs; for f in "${CONF_FILES[@]}"; do echo "$MARKER /tmp/x" > "$SLURM_ETC/$f"; done'
    assert sh(etc, script).returncode == 0
    assert (etc / "slurm.conf.cgb-orig").read_text() == LEFTOVER
    assert (etc / "gres.conf.cgb-orig").read_text() == "Name=gpu File=/dev/null\n"
    assert not (etc / "slurmdbd.conf.cgb-orig").exists()
    assert all((etc / f).read_text().startswith(MARKER) for f in ("slurm.conf", "gres.conf", "slurmdbd.conf"))
    # stop.sh: /etc/slurm as start.sh found it (its slurmdbd.conf had no original: gone).
    proc = sh(etc, "restore_confs")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in etc.iterdir()) == ["gres.conf", "plugstack.conf", "slurm.conf"]
    assert (etc / "slurm.conf").read_text() == LEFTOVER
    assert "put back" in proc.stderr


def test_our_own_configs_stay_when_nothing_was_moved_aside(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "slurm.conf").write_text(MARKER + "\nClusterName=cgb\n")
    assert sh(etc, NO_DAEMONS + "conf_in_use && exit 9; set_aside_confs; restore_confs").returncode == 0
    assert sorted(p.name for p in etc.iterdir()) == ["slurm.conf"]


def test_a_config_in_use_is_never_taken_over(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "slurm.conf").write_text(LEFTOVER)
    # A Slurm daemon start.sh did not start runs here.
    proc = sh(etc, 'slurm_daemons() { echo "slurmctld(4242)"; }; conf_in_use')
    assert proc.returncode == 0 and "slurmctld(4242)" in proc.stdout
    # A login node's: the controller is another machine, and it answers.
    (etc / "slurm.conf").write_text(LEFTOVER.replace("localhost", "ctl.cluster.example(10.1.2.3)"))
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "scontrol").write_text('#!/bin/sh\necho "Slurmctld(primary) at ctl.cluster.example is UP"\n')
    (stub / "scontrol").chmod(0o755)
    proc = sh(etc, NO_DAEMONS + "conf_in_use", path_prefix=stub)
    assert proc.returncode == 0 and "its controller (ctl.cluster.example(10.1.2.3)) answers" in proc.stdout
    # The same, when that controller is gone: a leftover.
    (stub / "scontrol").write_text('#!/bin/sh\necho "Slurmctld(primary) at ctl.cluster.example is DOWN"\n')
    assert sh(etc, NO_DAEMONS + "conf_in_use", path_prefix=stub).returncode == 1


def test_an_earlier_copy_in_the_way_stops_the_move_and_is_never_overwritten(tmp_path):
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "slurm.conf").write_text(LEFTOVER)
    (etc / "slurm.conf.cgb-orig").write_text("# older\n")
    proc = sh(etc, "aside_in_the_way")
    assert proc.returncode == 0 and "slurm.conf.cgb-orig is in the way" in proc.stdout
    # stop.sh never puts a copy back over a config it did not write.
    assert sh(etc, "restore_confs").returncode == 0
    assert (etc / "slurm.conf").read_text() == LEFTOVER and (etc / "slurm.conf.cgb-orig").read_text() == "# older\n"


@pytest.mark.parametrize(
    "host, local",
    [("localhost", True), ("vm(127.0.0.1)", None), ("ctl(10.0.0.1)", False), ("", False)],
)
def test_which_controllers_are_this_machine(tmp_path, host, local):
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"SlurmctldHost={host}\n" if host else "ClusterName=x\n")
    if local is None:  # named by this machine's own name
        host = f"{os.uname().nodename.split('.')[0]}(127.0.0.1)"
        conf.write_text(f"SlurmctldHost={host}\n")
        local = True
    proc = sh(tmp_path, f'controllers_are_local "{conf}"')
    assert (proc.returncode == 0) == local, (host, proc.stderr)
