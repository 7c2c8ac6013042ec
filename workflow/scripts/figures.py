"""Snakemake script for rule `figures`: {results_dir}/summary.csv, the cudagraph cells' capture
details and the other cells' launch sequences -> {results_dir}/figures/*."""

from pathlib import Path

from cudagraph_bench import aggregate as agg
from cudagraph_bench.figures import write_figures
from cudagraph_bench.queue_model import cell_sequences
from cudagraph_bench.results import code_identity

df = agg.read_summary(snakemake.input.summary)  # noqa: F821
# Figure 4's data is in the result files' details, not in the table: read the
# inputs that hold it, and refuse any that is not the file the summary was built from.
records = agg.read_results(".", list(snakemake.input.capture))  # noqa: F821
agg.check_records_match(records, df, snakemake.input.summary)  # noqa: F821
capture = agg.parse_capture_details(records)
launch_records = agg.read_results(".", list(snakemake.input.launches))  # noqa: F821
agg.check_records_match(launch_records, df, snakemake.input.summary)  # noqa: F821
write_figures(
    df,
    Path(snakemake.output[0]).parent,  # noqa: F821
    capture=capture,
    sequences=cell_sequences(agg.parse_launch_details(launch_records)),
    capture_sizes=snakemake.params.capture_sizes,  # noqa: F821
    code=code_identity(),
)
