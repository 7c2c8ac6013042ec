"""Turn a graph_pool_bench.py run (results/graph_pool_bench/<gpu>/graph_pool_bench.json)
into the pipeline's result files (results/raw/<gpu>/graph_pool/...), so its
numbers sit in the same tables and figures as vLLM's.

The bench measures each batch size with graph_pool.measure.latency_metrics, the
function a latency cell calls; numbers are copied, never changed. What differs
from the study's `latency` workload is recorded, not hidden: the bench decodes
256 -> 128 tokens (the study's latency workload is 256 -> 64), so its end-to-end
metrics are for 128 output tokens; spec.workload says so and the summary table
shows input_len/output_len. Decode-step metrics do not depend on output length.
Usage: python benchmarks/graph_pool_bench_to_results.py [--src ...json] [--gpu h100]
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from cudagraph_bench.cells import Cell, config_hash  # noqa: E402
from cudagraph_bench.results import make_result, write_result  # noqa: E402


def _provenance(bench: dict, spec: dict) -> dict:
    p = bench["provenance"]
    commit = p.get("git_commit")  # e.g. "125eb98+dirty": the device copy had no .git
    return {
        "host": p["host"],
        "cpu_model": p["cpu_model"],
        "started_utc": p["utc_time"],
        "finished_utc": p["utc_time"],
        "python": p["python"],
        "packages": {"torch": p["torch"], "triton": p.get("triton")},
        "git_commit": commit.split("+")[0] if commit else None,
        "git_dirty": ("+dirty" in commit) if commit else None,
        "config_hash": config_hash(spec),
        "slurm_job_id": None,
        "gpu_name": p["gpu"],
        "gpu_count": 1,
        "driver": p["driver"],
        "cuda": p["cuda"],
    }


def _sizes_of(label: str) -> list[int]:
    """The bench's set labels: "1..256" (every size), "1,2,4,...,64" (powers of two), "1,4,16"."""
    if ",...," in label:
        lo, hi = int(label.split(",")[0]), int(label.rsplit(",", 1)[1])
        return [2**i for i in range(hi.bit_length()) if lo <= 2**i <= hi]
    if ".." in label:
        lo, hi = (int(x) for x in label.split(".."))
        return list(range(lo, hi + 1))
    return [int(x) for x in label.split(",")]


def _study_sets(bench: dict) -> list[dict]:
    """The capture-size study, as figures.fig4 reads it."""
    out = []
    for s in bench["study"]:
        sizes = [e["size"] for e in s["per_size"]] if s.get("per_size") else _sizes_of(s["set"])
        if len(sizes) != s["n_graphs"]:
            raise ValueError(f"capture set {s['set']!r}: {len(sizes)} sizes but {s['n_graphs']} graphs")
        out.append({
            "capture_sizes": sizes,
            "label": s["set"],
            "capture_s_total": s["capture_s_total"],
            "graph_memory_mb": s["graph_memory_mb"],
        })  # fmt: skip
    return out


def convert(src: Path, gpu: str) -> list[tuple[Cell, dict]]:
    bench = json.loads(src.read_text())
    cfg = bench["config"]
    model = dict(cfg["model"], name=cfg["preset"])
    spec = {"workload": {"input_len": cfg["input_len"], "output_len": cfg["output_len"]}, "model": model,
            "measurement": cfg["settings"]}  # fmt: skip
    prov = _provenance(bench, spec)
    source = {"imported_from": str(src.relative_to(REPO)), "argv": bench["provenance"]["argv"]}
    out = []
    for bs, modes in bench["latency"].items():
        for mode, res in modes.items():
            cell = Cell(gpu, "graph_pool", "latency", mode, int(bs))
            details = dict(res["details"], **source)
            out.append((cell, make_result(cell, "latency", "ok", metrics=res["metrics"], details=details, spec=spec,
                                          prov=prov)))  # fmt: skip
    cap = bench["capture"]
    per_size = [{"size": e["size"], "capture_s": e["capture_s"], "graph_memory_mb": e["memory_mb"]}
                for e in cap["per_size"]]  # fmt: skip
    startup_spec = {"workload": {}, "model": model, "measurement": cfg["settings"]}
    weight_init = bench["model_build"]["weight_init_s"]
    eager = {"weight_init_s": weight_init, "startup_s": weight_init}
    graph = {"weight_init_s": weight_init, "capture_s_total": cap["capture_s_total"],
             "graph_memory_mb": cap["memory_mb_total"], "startup_s": weight_init + cap["capture_s_total"]}  # fmt: skip
    for mode, metrics, details in (
        ("eager", eager, dict(source)),
        (
            "cudagraph",
            graph,
            dict(
                source,
                per_size=per_size,
                capture_size_study=_study_sets(bench),
                static_io_mb=cap["static_io_mb"],
                capture_sizes=cap["capture_sizes"],
            ),
        ),  # fmt: skip
    ):
        cell = Cell(gpu, "graph_pool", "startup", mode)
        out.append((cell, make_result(cell, "startup", "ok", metrics=metrics, details=details, spec=startup_spec,
                                      prov=prov)))  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", default=str(REPO / "results/graph_pool_bench/h100/graph_pool_bench.json"))
    ap.add_argument("--gpu", default="h100")
    args = ap.parse_args()
    for cell, result in convert(Path(args.src), args.gpu):
        write_result(REPO / cell.path, result)
        print(f"-> {cell.path}")


if __name__ == "__main__":
    main()
