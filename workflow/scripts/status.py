"""Snakemake script for rule `status`: {results_dir}/summary.csv -> the cell grid in {results_dir}/status.md."""

from cudagraph_bench.aggregate import read_summary
from cudagraph_bench.cells import results_dir_of
from cudagraph_bench.status_grid import write_status

# Every cell has its result by now: the states come from summary.csv (no result file,
# job registry or queue is read).
config = snakemake.config  # noqa: F821
write_status(config, ".", results_dir=results_dir_of(config), summary=read_summary(snakemake.input[0]))  # noqa: F821
