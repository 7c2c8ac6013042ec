"""Snakemake script for rule `figures`: the result files -> results/figures/*."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

import pandas as pd  # noqa: E402
from cudagraph_bench import aggregate as agg  # noqa: E402
from cudagraph_bench.figures import code_commit, write_figures  # noqa: E402

records, df = agg.aggregate(".")
capture = pd.concat([agg.parse_capture_details(records), agg.read_capture_studies(".")], ignore_index=True)
write_figures(
    df,
    Path(snakemake.output[0]).parent,  # noqa: F821
    capture=capture,
    capture_sizes=snakemake.params.capture_sizes,  # noqa: F821
    code_commit=code_commit(),
)
