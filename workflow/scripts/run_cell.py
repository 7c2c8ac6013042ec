"""Snakemake script for the cell rules: measure one cell (cell_<backend>_<gpu>), or the serving
cells of one mode against one server (serving_<backend>_<gpu>); one result file per cell."""

from cudagraph_bench.cells import cell_from_path, job_spec
from cudagraph_bench.runner import run_cell, run_shared_server_cells

# The job sees the same config files as the planning process (Snakemake passes
# them on), so the spec is built here rather than shipped as a params function:
# that keeps planning a 2,000-cell study fast.
outs = list(snakemake.output)  # noqa: F821
specs = [job_spec(snakemake.config, cell_from_path(out)) for out in outs]  # noqa: F821
with open(snakemake.log[0], "a") as log:  # noqa: F821
    if snakemake.rule.startswith("serving_"):  # noqa: F821
        run_shared_server_cells(specs, outs, log)
    else:
        run_cell(specs[0], outs[0], log)
