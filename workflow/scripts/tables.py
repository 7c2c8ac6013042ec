"""Snakemake script for rule `tables`: {results_dir}/summary.csv and the launch sequences of the
cells that launch kernel by kernel -> {results_dir}/tables/*."""

from pathlib import Path

from cudagraph_bench import aggregate as agg
from cudagraph_bench import tables
from cudagraph_bench.derived import launch_model
from cudagraph_bench.results import code_identity

# summary.csv holds every value exactly, with each cell's provenance and checksum; the queue
# model's launch sequences are in the result files' details: read those inputs, and refuse any
# that is not the file the summary was built from.
df = agg.read_summary(snakemake.input.summary)  # noqa: F821
records = agg.read_results(".", list(snakemake.input.launches))  # noqa: F821
agg.check_records_match(records, df, snakemake.input.summary)  # noqa: F821
tables.write_tables(
    df,
    Path(snakemake.output[0]).parent,  # noqa: F821
    model=launch_model(df, agg.parse_launch_details(records)),
    code=code_identity(),
)
