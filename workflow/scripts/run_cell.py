"""Snakemake script for the cell rules (cell_<backend>_<gpu>): measure one cell, write its result file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from cudagraph_bench.cells import cell_from_path, job_spec  # noqa: E402
from cudagraph_bench.runner import run_cell  # noqa: E402

# The job sees the same config files as the planning process (Snakemake passes
# them on), so the spec is built here rather than shipped as a params function:
# that keeps planning a 2,000-cell study fast.
out = snakemake.output[0]  # noqa: F821
spec = job_spec(snakemake.config, cell_from_path(out))  # noqa: F821
with open(snakemake.log[0], "a") as log:  # noqa: F821
    run_cell(spec, out, log)
