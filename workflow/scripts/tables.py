"""Snakemake script for rule `tables`: results/summary.csv -> results/tables/*."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake


from cudagraph_bench import tables  # noqa: E402
from cudagraph_bench.aggregate import aggregate  # noqa: E402
from cudagraph_bench.figures import code_commit  # noqa: E402

# Re-read the result files (not the CSV): the tables keep exact values and provenance.
_, df = aggregate(".")
tables.write_tables(df, Path(snakemake.output[0]).parent, code_commit=code_commit())  # noqa: F821
