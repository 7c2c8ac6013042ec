"""Snakemake script for rule `cell`: measure one cell, write its result file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from cudagraph_bench.runner import run_cell  # noqa: E402

with open(snakemake.log[0], "a") as log:  # noqa: F821
    run_cell(snakemake.params.spec, snakemake.output[0], log)  # noqa: F821
