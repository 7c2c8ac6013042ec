"""The names of the paper outputs, without importing pandas or matplotlib.

The Snakefile lists these as rule outputs when it is parsed (on every run and
inside every cell job), so this module must stay cheap to import.
"""

from __future__ import annotations

import os
from pathlib import Path

# Under a results folder: the tidy table, the status grid, and the folders of tables and figures.
SUMMARY_FILE = "summary.csv"
STATUS_FILE = "status.md"
TABLES_DIR = "tables"
FIGURES_DIR = "figures"
TABLE_NAMES = ("headline", "metrics", "launch_model", "launch_kinds", "vllm_modes")
TABLE_FORMATS = ("csv", "md", "tex", "json")
FIGURE_NAMES = (
    "fig1_latency_throughput",
    "fig2_speedup",
    "fig3_startup",
    "fig4_capture_cost",
    "fig5_padding",
    "fig6_roofline",
    "fig7_launch_cost",
    "fig8_vllm_modes",
)
FIGURE_FORMATS = ("pdf", "png", "json")


def table_outputs(out_dir: str | os.PathLike) -> list[str]:
    """Every file `tables.write_tables` writes (for Snakemake outputs)."""
    return [f"{Path(out_dir).as_posix()}/{name}.{ext}" for name in TABLE_NAMES for ext in TABLE_FORMATS]


def figure_outputs(out_dir: str | os.PathLike) -> list[str]:
    """Every file `figures.write_figures` writes (for Snakemake outputs)."""
    return [f"{Path(out_dir).as_posix()}/{name}.{ext}" for name in FIGURE_NAMES for ext in FIGURE_FORMATS]
