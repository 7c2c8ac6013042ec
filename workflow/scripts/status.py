"""Snakemake script for rule `status`: the cell grid -> results/status.md."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821 - injected by Snakemake

from cudagraph_bench.status_grid import write_status  # noqa: E402

write_status(snakemake.config, ".")  # noqa: F821
