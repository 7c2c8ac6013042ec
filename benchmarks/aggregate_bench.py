"""Time the aggregation of 10,000 result files (goal: under 5 s).

Generates valid, synthetic result files in a temporary folder, then times
read_results + parse_results + write_summary over all of them. The files are
made the way a job makes them: cells from cells.iter_cells over the study in
config/config.yaml widened to enough GPU types and batch sizes, their spec from
cells.job_spec, this machine's results.provenance, results.make_result; only
the metric values are synthetic.

    python benchmarks/aggregate_bench.py [--files 10000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import tempfile
import time
from pathlib import Path

import yaml
from cudagraph_bench import aggregate, results
from cudagraph_bench.cells import config_hash, iter_cells, job_spec
from cudagraph_bench.results import make_result, provenance, utc_now, write_result

REPO = Path(__file__).resolve().parents[1]


METRICS = (
    "decode_step_ms_median decode_step_ms_p10 decode_step_ms_p90 e2e_latency_s_mean e2e_latency_s_median "
    "e2e_latency_s_p90 output_tokens_per_s ms_per_output_token prefill_ms kernels_per_step "
    "cpu_enqueue_ms_per_step gpu_ms_per_step hbm_floor_ms copy_bandwidth_gbps graph_over_floor "
    "graph_memory_mb capture_s_total padded_batch_size padding_waste_frac"
).split()
BATCH_SIZES = list(range(1, 51))


def study(n: int) -> dict:
    """config/config.yaml's study, widened to at least n latency cells: graph_pool and vllm, eager
    and cudagraph, latency and latency_long at batch sizes 1..50, on as many GPU types (copies of
    its h200) as it takes."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    workloads = ["latency", "latency_long"]
    for name in workloads:
        config["workloads"][name].pop("batch_sizes", None)  # the study's batch sizes for both
    per_gpu = 2 * 2 * len(workloads) * len(BATCH_SIZES)
    gpus = [f"g{g:03d}" for g in range(-(-n // per_gpu))]
    config["gpu_types"].update({g: copy.deepcopy(config["gpu_types"]["h200"]) for g in gpus})
    config["study"].update(gpus=gpus, backends=["graph_pool", "vllm"], modes=["eager", "cudagraph"],
                           workloads=workloads, batch_sizes=BATCH_SIZES)  # fmt: skip
    return config


def generate(root: Path, n: int) -> None:
    config = study(n)
    chash = config_hash(config)
    prov = provenance(chash, utc_now())  # this machine's, as a job records it (once: it takes a while)
    for i, cell in enumerate(itertools.islice(iter_cells(config), n)):
        spec = job_spec(config, cell, chash)
        # Synthetic numbers, distinct per file so nothing compresses or caches away.
        metrics = {name: float(i % 97) + k / 10 for k, name in enumerate(METRICS)}
        result = make_result(
            cell,
            spec["kind"],
            "ok",
            metrics=metrics,
            spec={k: spec[k] for k in ("workload", "model", "measurement")},  # what the runner records
            prov=prov,
        )
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
        print(f"schema check: {results.schema_checker()}")
        print(f"aggregated {len(df)} result files in {t3 - t0:.2f} s (goal: < 5 s)")


if __name__ == "__main__":
    main()
