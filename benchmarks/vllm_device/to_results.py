"""Turn the device driver's per-measurement JSONs (results/vllm_h100/*.json) into
the pipeline's result files (results/raw/h100/vllm/...), so vLLM's numbers sit in
the same table and figures as the graph pool's.

The numbers are copied, never changed: each came from cudagraph_bench.backends.vllm.measure()
on the device machine (see results/vllm_h100/README.md). What the driver did not
record (the git commit: the run used an uncommitted working tree) is left null.
Usage: python benchmarks/vllm_device/to_results.py [--src results/vllm_h100] [--gpu h100]
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "workflow"))

from cudagraph_bench.cells import Cell, config_hash  # noqa: E402
from cudagraph_bench.results import make_result, write_result  # noqa: E402


def workload_of(d: dict) -> tuple[str, int | None]:
    """The study's workload name (config/config.yaml) and batch size for one driver record."""
    kind, w = d["cell"]["kind"], d["workload"]
    if kind == "latency":
        name = "latency_long" if (w["input_len"], w["output_len"]) == (512, 128) else "latency"
        return name, d["cell"]["batch_size"]
    if kind == "serving":
        return ("serving_inf" if str(w["request_rate"]) == "inf" else "serving_rr6"), None
    return "startup", None


def convert(src: Path, gpu: str) -> tuple[Cell, dict]:
    d = json.loads(src.read_text())
    workload, bs = workload_of(d)
    cell = Cell(gpu, "vllm", workload, d["cell"]["mode"], bs)
    p = d["provenance"]
    gpu_name, driver, _mem = (s.strip() for s in p["gpu"].split(","))
    workload = dict(d["workload"])
    if isinstance(workload.get("request_rate"), str) and workload["request_rate"] != "inf":
        workload["request_rate"] = float(workload["request_rate"])  # the driver wrote "6"; the study says 6
    spec = {"workload": workload, "model": d["model"], "settings": d["settings"]}
    prov = {
        "host": p["host"],
        "cpu_model": p["cpu_model"],
        "started_utc": d["started_utc"],
        "finished_utc": d["finished_utc"],
        "python": p["python"],
        "packages": {k: p.get(k) for k in ("vllm", "torch", "transformers", "tokenizers")},
        "git_commit": None,
        "git_dirty": None,
        # The device run used its own settings (spec.settings), not a study config.
        "config_hash": config_hash(spec),
        "slurm_job_id": None,
        "gpu_name": gpu_name,
        "gpu_count": 1,
        "driver": driver,
        "cuda": None,
    }
    details = dict(d["details"], imported_from=str(src.relative_to(REPO)), env=p.get("env"), kernel=p.get("kernel"))
    metrics = {k: float(v) for k, v in d["metrics"].items()}
    result = make_result(cell, d["cell"]["kind"], d["status"], reason=d.get("reason"), metrics=metrics,
                         details=details, spec=spec, prov=prov)  # fmt: skip
    return cell, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", default=str(REPO / "results/vllm_h100"))
    ap.add_argument("--gpu", default="h100")
    args = ap.parse_args()
    for src in sorted(Path(args.src).glob("*.json")):
        cell, result = convert(src, args.gpu)
        write_result(REPO / cell.path, result)
        print(f"{src.name} -> {cell.path} ({result['status']})")


if __name__ == "__main__":
    main()
