"""Orchestration overhead of the slurm profile on the local test cluster (goal: <= 2 s per cell).

Runs an N-cell study (each cell sleeps a fixed time inside its job, so cell
runtime is known) through `snakemake --profile profiles/slurm`, then prints
(wall time - longest cell runtime) / N and the number of sacct calls the
executor made. Needs root: it starts tests/slurm_cluster (or reuses a running
one with CGB_SLURM_REUSE=1).
Usage: python benchmarks/slurm_overhead_bench.py [--cells 8] [--sleep 5]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "workflow"))


def study(n: int) -> dict:
    base = yaml.safe_load((REPO / "tests/configs/slurm_tiny.yaml").read_text())
    base["study"]["workloads"] = ["startup"]
    gpus = {}
    for i in range(n):
        g = dict(base["gpu_types"]["h200" if i % 2 == 0 else "l40s"])
        gpus[f"g{i:03d}"] = g
    base["gpu_types"] = {**base["gpu_types"], **gpus}
    base["study"]["gpus"] = list(gpus)
    return base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=5.0, help="seconds each cell sleeps inside its job")
    args = ap.parse_args()
    from slurm_cluster.cluster import start_cluster, stop_cluster

    cluster = start_cluster()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
                src = REPO / name
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
            (work / "bench.yaml").write_text(yaml.safe_dump(study(args.cells)))
            # (config is rebuilt below for the target list)
            env = {**os.environ, "CGB_INJECT_FAILURE": f"sleep{args.sleep}"}
            from cudagraph_bench.cells import iter_cells

            config = study(args.cells)
            targets = [c.path for c in iter_cells(config)]  # the cells only: no aggregation in the timing
            cmd = [sys.executable, "-m", "snakemake", *targets, "--profile", "profiles/slurm",
                   "--configfiles", "config/config.yaml", "bench.yaml"]  # fmt: skip
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"study failed:\n{proc.stderr[-6000:]}")
            # Longest cell runtime: the job's own start/end stamps in the result files.
            longest = 0.0
            for f in (work / "results/raw").rglob("*.json"):
                p = json.loads(f.read_text())["provenance"]
                from datetime import datetime

                d = datetime.fromisoformat(p["finished_utc"]) - datetime.fromisoformat(p["started_utc"])
                longest = max(longest, d.total_seconds())
            m = re.search(r"scheduler status queries: (\d+)", proc.stderr)
            sacct = int(m.group(1)) if m else -1
    finally:
        if os.environ.get("CGB_SLURM_REUSE") != "1":
            stop_cluster()
    n = args.cells
    print(f"cells: {n}, wall: {wall:.1f} s, longest cell: {longest:.1f} s, sacct calls: {sacct}")
    print(f"orchestration overhead: {(wall - longest) / n:.2f} s per cell (goal <= 2 s)")
    _ = cluster


if __name__ == "__main__":
    main()
