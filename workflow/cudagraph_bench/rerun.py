"""Measure again the cells whose recorded status is error or oom.

Their result files move aside to {results_dir}/superseded/<time>/... (kept, never
deleted), so Snakemake sees them missing and runs exactly those cells again.
"""

from __future__ import annotations

import time
from pathlib import Path

from .cells import DEFAULT_RESULTS_DIR
from .results import ResultFileError, load_result

FAILED_STATUSES = ("error", "oom")


def set_aside_failed(
    paths: list[str], root: str | Path = ".", statuses=FAILED_STATUSES, results_dir: str = DEFAULT_RESULTS_DIR
) -> list[str]:
    """Move each existing result in `paths` (under RESULTS_DIR/raw) whose status is in `statuses` to
    RESULTS_DIR/superseded/<time>/; a file that is not a valid result (results.load_result) counts
    as an error. Returns 'old -> new' lines."""
    root = Path(root)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for rel in paths:
        src = root / rel
        if not src.exists():
            continue
        try:
            status = load_result(src, root)["status"]
        except ResultFileError:
            status = "error"  # unreadable or not a valid result: measuring again is the only way forward
        if status not in statuses:
            continue
        dst = root / results_dir / "superseded" / stamp / Path(rel).relative_to(f"{results_dir}/raw")
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.replace(dst)
        moved.append(f"{rel} ({status}) -> {dst.relative_to(root)}")
    return moved
