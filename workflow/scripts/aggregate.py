"""Snakemake script for rule `summary`: every result file -> results/summary.csv."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from cudagraph_bench import aggregate  # noqa: E402

# Every result under results/raw, not only this study's cells: earlier GPUs'
# committed results belong in the same table.
_, df = aggregate.aggregate(".")
aggregate.write_summary(df, snakemake.output[0])  # noqa: F821
print(f"summary: {len(df)} cells -> {snakemake.output[0]}")  # noqa: F821
