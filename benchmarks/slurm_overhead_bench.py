"""Orchestration overhead of the slurm profile (goal: <= 2 s per cell).

Runs an N-cell study (each cell sleeps a fixed time inside its job, so cell
runtime is known) through `snakemake --profile profiles/slurm`, then prints
(wall time - longest cell runtime) / N and the number of sacct calls the
executor made.

Needs a running Slurm with accounting (sacct) whose partitions and GRES are
those of config/config.yaml's GPU types (--gpu-types, default h200 and l40s).
The repository's one-node test cluster is one; start it as root, run, stop it:

    eval "$(sudo tests/slurm_cluster/start.sh)"   # exports CGB_SLURM_ACCOUNT, CGB_SLURM_QOS, ...
    python benchmarks/slurm_overhead_bench.py [--cells 8] [--sleep 5]
    sudo tests/slurm_cluster/stop.sh

Account and QOS come from --account/--qos, else $CGB_SLURM_ACCOUNT/$CGB_SLURM_QOS
(what start.sh exports), else config/config.yaml's.
"""

import argparse
import copy
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml
from cudagraph_bench.cells import iter_cells, results_dir_of
from workdir import copy_workflow

REPO = Path(__file__).resolve().parents[1]


START_HINT = (
    "start one first, e.g. the repository's test cluster (as root): "
    'eval "$(sudo tests/slurm_cluster/start.sh)"; stop it afterwards with sudo tests/slurm_cluster/stop.sh'
)


def require_slurm() -> None:
    """Exit with a hint unless a Slurm controller answers and sacct works."""
    for cmd in (["scontrol", "ping"], ["sacct", "-n", "-X", "-S", "now"]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as e:
            sys.exit(f"no usable Slurm here ({' '.join(cmd)}: {e}); {START_HINT}")
        if proc.returncode != 0 or (cmd[0] == "scontrol" and "is UP" not in proc.stdout):
            sys.exit(f"no usable Slurm here ({' '.join(cmd)}: {(proc.stdout + proc.stderr).strip()}); {START_HINT}")


def study(n: int, gpu_types: list[str], account: str | None, qos: str | None) -> dict:
    """config/config.yaml with a study of n graph_pool startup cells of the tiny model, each on its own GPU type
    (g000, g001, ...: copies of gpu_types in turn, sized to fit a small node)."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    gpus = {}
    for i in range(n):
        g = copy.deepcopy(config["gpu_types"][gpu_types[i % len(gpu_types)]])
        g.update(cpus=1, mem_gb=1, time_min=10, device_match="")  # the job measures on the node's CPU
        if account is not None:
            g["account"] = account
        if qos is not None:
            g["qos"] = qos
        gpus[f"g{i:03d}"] = g
    config["gpu_types"].update(gpus)
    config["study"].update(gpus=list(gpus), backends=["graph_pool"], modes=["eager"], workloads=["startup"],
                           model="tiny")  # fmt: skip
    # The least measuring: the sleep is the cell's runtime.
    config["measurement"].update(warmup_steps=1, timed_steps=3, warmup_repeats=0, repeats=1)
    config["graph_pool"]["capture_sizes"] = [1]
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=5.0, help="seconds each cell sleeps inside its job")
    ap.add_argument("--gpu-types", nargs="+", default=["h200", "l40s"], help="keys of config/config.yaml's gpu_types")
    ap.add_argument("--account", default=os.environ.get("CGB_SLURM_ACCOUNT"))
    ap.add_argument("--qos", default=os.environ.get("CGB_SLURM_QOS"))
    args = ap.parse_args()
    require_slurm()
    config = study(args.cells, args.gpu_types, args.account, args.qos)
    results_dir = results_dir_of(config)
    targets = [c.path_in(results_dir) for c in iter_cells(config)]  # the cells only: no aggregation in the timing
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_workflow(Path(tmp), config, "bench.yaml")
        env = {**os.environ, "CGB_INJECT_FAILURE": f"sleep{args.sleep}"}
        cmd = [sys.executable, "-m", "snakemake", *targets, "--profile", "profiles/slurm",
               "--configfiles", "config/config.yaml", "bench.yaml"]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"study failed:\n{proc.stderr[-6000:]}")
        # Longest cell runtime: the job's own start/end stamps in the result files.
        longest = 0.0
        for target in targets:
            p = json.loads((work / target).read_text())["provenance"]
            d = datetime.fromisoformat(p["finished_utc"]) - datetime.fromisoformat(p["started_utc"])
            longest = max(longest, d.total_seconds())
        m = re.search(r"scheduler status queries: (\d+)", proc.stderr)
        sacct = int(m.group(1)) if m else -1
    n = args.cells
    print(f"cells: {n}, wall: {wall:.1f} s, longest cell: {longest:.1f} s, sacct calls: {sacct}")
    print(f"orchestration overhead: {(wall - longest) / n:.2f} s per cell (goal <= 2 s)")


if __name__ == "__main__":
    main()
