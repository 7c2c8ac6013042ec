"""cudagraph-bench: what CUDA graphs buy in LLM decoding.

Data flow, one module per stage:
config (validated by Snakemake) -> cells.py (the matrix, cell <-> path)
-> runner.py (one job per cell) -> results.py (one JSON per cell)
-> aggregate.py (one tidy table) -> tables.py / figures.py.
"""
