"""A throw-away copy of the workflow for a benchmark to run Snakemake in (shared by the benchmarks)."""

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "workflow", "config", "profiles", "envs")


def copy_workflow(dest: Path, config: dict, config_name: str) -> Path:
    """Copy the workflow into dest and write `config` there as config_name; returns dest."""
    for name in WORKFLOW_PARTS:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    (dest / config_name).write_text(yaml.safe_dump(config))
    return dest
