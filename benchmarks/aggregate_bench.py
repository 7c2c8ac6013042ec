"""Time the aggregation of 10,000 result files (goal: under 5 s).

Generates valid, synthetic result files in a temporary folder, then times
read_results + parse_results + write_summary over all of them.

    python benchmarks/aggregate_bench.py [--files 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from cudagraph_bench import aggregate  # noqa: E402
from cudagraph_bench.cells import Cell  # noqa: E402
from cudagraph_bench.results import make_result, write_result  # noqa: E402

METRICS = (
    "decode_step_ms_median decode_step_ms_p10 decode_step_ms_p90 e2e_latency_s_mean e2e_latency_s_median "
    "e2e_latency_s_p90 output_tokens_per_s ms_per_output_token prefill_ms kernels_per_step "
    "cpu_enqueue_ms_per_step gpu_ms_per_step hbm_floor_ms copy_bandwidth_gbps graph_over_floor "
    "graph_memory_mb capture_s_total padded_batch_size padding_waste_frac"
).split()
PROV = {
    "host": "bench-node",
    "cpu_model": "Synthetic CPU",
    "started_utc": "2030-01-01T00:00:00+00:00",
    "finished_utc": "2030-01-01T00:01:00+00:00",
    "python": "3.11.0",
    "packages": {"torch": "9.9.9", "vllm": None},
    "git_commit": "0" * 40,
    "git_dirty": False,
    "config_hash": "c0ffee0000000000",
    "slurm_job_id": "123",
    "gpu_name": "Synthetic GPU",
    "gpu_count": 1,
    "driver": "000.00",
    "cuda": "0.0",
}


def cells(n: int):
    """n distinct latency cells: GPUs x backends x 2 workloads x 2 modes x batch sizes 1..50."""
    i = 0
    for g in range(n // 200 + 1):
        for backend in ("graph_pool", "vllm"):
            for workload in ("latency", "latency_long"):
                for mode in ("eager", "cudagraph"):
                    for bs in range(1, 51):
                        if i == n:
                            return
                        i += 1
                        yield Cell(f"g{g:03d}", backend, workload, mode, bs)


def generate(root: Path, n: int) -> None:
    for i, cell in enumerate(cells(n)):
        # Synthetic numbers, distinct per file so nothing compresses or caches away.
        metrics = {name: float(i % 97) + k / 10 for k, name in enumerate(METRICS)}
        spec = {"workload": {"input_len": 256, "output_len": 64}, "model": {"name": "tiny"}}
        result = make_result(cell, "latency", "ok", metrics=metrics, spec=spec, prov=PROV)
        path = root / cell.path
        if i == 0:
            write_result(path, result)  # validates against the schema
            continue
        # The same serialisation as write_result, minus the per-file fsync (set-up speed only).
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--keep", type=Path, help="generate here and keep the files")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        t0 = time.perf_counter()
        generate(root, args.files)
        print(f"generated {args.files} result files in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        paths = aggregate.find_result_files(root)
        records = aggregate.read_results(root, paths)
        t1 = time.perf_counter()
        df = aggregate.parse_results(records)
        t2 = time.perf_counter()
        aggregate.write_summary(df, root / "results" / "summary.csv")
        t3 = time.perf_counter()
        assert len(df) == args.files, len(df)
        print(f"read+check {t1 - t0:.2f} s, parse {t2 - t1:.2f} s, write {t3 - t2:.2f} s")
        print(f"schema check: {aggregate.schema_checker()}")
        print(f"aggregated {len(df)} result files in {t3 - t0:.2f} s (goal: < 5 s)")


if __name__ == "__main__":
    main()
