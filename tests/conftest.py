"""Shared test setup: the Slurm cluster fixture, a study copy. The package is importable as
installed by setup_env.sh (editable)."""

import shutil
from pathlib import Path

import pytest
from slurm_cluster.conftest_fixture import in_ci, skip_reason, slurm_cluster  # noqa: F401 (the fixture, for every test)

REPO = Path(__file__).resolve().parents[1]


def pytest_report_header(config) -> str:
    """Say up front what happens to the Slurm tests in this run."""
    reason = skip_reason()
    if in_ci():
        return "slurm tests: CI=true: they fail if the test cluster cannot start" + (f" ({reason})" if reason else "")
    if reason:
        return f"slurm tests: skipped here: {reason}"
    return "slurm tests: against the test cluster of tests/slurm_cluster (skipped if start.sh refuses)"


# What a study needs to run somewhere else: a copy, so tests never touch the
# repository's own results/ and .snakemake/.
_WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles", "envs")


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in _WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh copy of the workflow (no results) to run Snakemake in."""
    return copy_workflow(tmp_path / "study")
