"""Snakemake script for rule `summary`: its input result files -> {results_dir}/summary.csv."""

from cudagraph_bench import aggregate

# Exactly the rule's inputs: this study's cells and every other result under
# {results_dir}/raw (earlier GPUs' results belong in the same table).
_, df = aggregate.aggregate(".", list(snakemake.input))  # noqa: F821
aggregate.write_summary(df, snakemake.output[0])  # noqa: F821
print(f"summary: {len(df)} cells -> {snakemake.output[0]}")  # noqa: F821
