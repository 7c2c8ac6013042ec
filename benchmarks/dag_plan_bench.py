"""How long `snakemake -n` takes to plan a 2,000-cell study (goal: < 5 s).

Builds a study config with 2,000+ cells (many GPU types and batch sizes) in a
temporary copy of the workflow and times the dry run, start to finish, in one go.
Usage: python benchmarks/dag_plan_bench.py [--cells 2000]
"""

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from cudagraph_bench.cells import iter_cells
from workdir import copy_workflow

REPO = Path(__file__).resolve().parents[1]


def study(target: int) -> dict:
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    base = config["gpu_types"]["h100"]
    config["study"]["batch_sizes"] = [1, 2, 4, 8, 16, 32, 64, 128]
    gpus = []
    while len(list(iter_cells(config))) < target:
        name = f"gpu{len(gpus):03d}"
        config["gpu_types"][name] = copy.deepcopy(base)
        gpus.append(name)
        config["study"]["gpus"] = gpus
    return config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=2000)
    ap.add_argument("--profile", action="store_true", help="write a cProfile of the dry run to /tmp/dag.prof")
    args = ap.parse_args()
    config = study(args.cells)
    n = len(list(iter_cells(config)))
    with tempfile.TemporaryDirectory() as tmp:
        work = copy_workflow(Path(tmp), config, "big.yaml")
        # Exactly `snakemake -n`: it prints every planned job (the output is captured, not shown).
        cmd = [sys.executable, "-m", "snakemake", "-n", "--configfile", "big.yaml"]
        if "--profile" in sys.argv:
            cmd = [sys.executable, "-m", "cProfile", "-o", "/tmp/dag.prof", *cmd[1:]]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"dry run failed:\n{proc.stderr[-3000:]}")
    print(f"snakemake -n over {n} cells: {elapsed:.2f} s (goal < 5 s)")


if __name__ == "__main__":
    main()
