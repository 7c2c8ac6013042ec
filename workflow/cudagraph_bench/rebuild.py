"""The one driver of the analysis (verb `rebuild`): result files -> the tidy table (summary.csv)
-> derived frames -> tables and figures, in that order, without a GPU, Slurm or vLLM.

    raw/*.json --aggregate--> summary.csv --derived--> launch model --tables--> tables/
                                                                     --figures--> figures/

The Snakemake rules run the same steps one rule each (workflow/rules/aggregate.smk).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from . import queue_model as Q
from . import tables as T
from .aggregate import aggregate, parse_capture_details, parse_launch_details, read_summary, write_summary
from .cells import DEFAULT_RESULTS_DIR
from .derived import launch_model
from .figures import write_figures
from .outputs import FIGURES_DIR, SUMMARY_FILE, TABLES_DIR


def rebuild(
    root: str | os.PathLike = ".",
    *,
    results_dir: str = DEFAULT_RESULTS_DIR,
    capture_sizes: Sequence[int] = (),
    code: tuple | None = None,
) -> dict[str, list[Path]]:
    """Every output of ROOT/RESULTS_DIR from its raw/ only: summary.csv, the tables, the figures
    (no GPU, Slurm or vLLM). Paths inside the outputs stay relative to ROOT; `code`, the
    (commit, dirty) of the code building them (results.code_identity), goes into each sidecar.

    Tables and figures are drawn from summary.csv as written, exactly as the Snakemake rules
    draw them, so both give the same bytes. Returns {"summary": [...], "tables": [...],
    "figures": [...]} of paths written. Raises ResultFileError / AggregationError naming a bad
    result file.
    """
    root = Path(root)
    records, df = aggregate(root, results_dir=results_dir)
    out = root / results_dir
    summary = write_summary(df, out / SUMMARY_FILE)
    df = read_summary(summary)
    sequences = Q.cell_sequences(parse_launch_details(records))
    model = launch_model(df, sequences=sequences)  # once, for tables and figures
    return {
        "summary": [summary],
        "tables": T.write_tables(df, out / TABLES_DIR, code=code, model=model),
        "figures": write_figures(
            df,
            out / FIGURES_DIR,
            capture=parse_capture_details(records),
            sequences=sequences,
            capture_sizes=capture_sizes,
            code=code,
            model=model,
        ),
    }
