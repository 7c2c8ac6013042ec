"""Snakemake script for rule `tables`: {results_dir}/summary.csv -> {results_dir}/tables/*."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake


from cudagraph_bench import tables  # noqa: E402
from cudagraph_bench.aggregate import read_summary  # noqa: E402
from cudagraph_bench.results import code_commit  # noqa: E402

# summary.csv only: it holds every value exactly, with each cell's provenance and checksum.
df = read_summary(snakemake.input[0])  # noqa: F821
tables.write_tables(df, Path(snakemake.output[0]).parent, code_commit=code_commit())  # noqa: F821
