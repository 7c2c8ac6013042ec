"""A factory for valid result files, and a small synthetic study with gaps.

Every number here is synthetic (made up for tests, derived from simple
formulas); none is a measurement.
"""

from __future__ import annotations

from pathlib import Path

from cudagraph_bench.cells import Cell
from cudagraph_bench.results import make_result, write_result

KIND_OF = {
    "latency": "latency",
    "latency_long": "latency",
    "startup": "startup",
    "serving_inf": "serving",
    "serving_rr6": "serving",
}
SHAPES = {
    "latency": {"input_len": 256, "output_len": 64},
    "latency_long": {"input_len": 512, "output_len": 128},
    "startup": {},
    "serving_inf": {"dataset": "sharegpt", "num_prompts": 200, "request_rate": "inf"},
    "serving_rr6": {"dataset": "sharegpt", "num_prompts": 200, "request_rate": 6},
}


def prov(**overrides) -> dict:
    """A synthetic provenance block."""
    p = {
        "host": "node-1",
        "cpu_model": "Synthetic CPU",
        "started_utc": "2030-01-01T00:00:00+00:00",
        "finished_utc": "2030-01-01T00:01:00+00:00",
        "python": "3.11.0",
        "packages": {"torch": "9.9.9", "vllm": None},
        "git_commit": "0" * 40,
        "git_dirty": False,
        "config_hash": "c0ffee0000000000",
        "slurm_job_id": None,
        "gpu_name": "Synthetic GPU",
        "gpu_count": 1,
        "driver": "000.00",
        "cuda": "0.0",
    }
    p.update(overrides)
    return p


def result(cell: Cell, status: str = "ok", metrics: dict | None = None, *, reason=None, details=None, **prov_over):
    """A valid result dict for `cell`."""
    if status != "ok" and reason is None:
        reason = f"synthetic {status}"
    return make_result(
        cell,
        KIND_OF.get(cell.workload, "latency"),
        status,
        reason=reason,
        metrics=metrics if status == "ok" else None,
        details=details,
        spec={"workload": dict(SHAPES.get(cell.workload, {}))},
        prov=prov(**prov_over),
    )


def write(root: Path, cell: Cell, status: str = "ok", metrics: dict | None = None, **kw) -> Path:
    """Write a valid result file for `cell` under root; returns its path."""
    path = Path(root) / cell.path
    write_result(path, result(cell, status, metrics, **kw))
    return path


def graph_pool_latency(bs: int, mode: str, *, cpu_ms: float, gpu_ms: float, eager_factor: float = 1.0) -> dict:
    """Synthetic graph-pool latency metrics: eager step = max(cpu, gpu) * eager_factor, graph step = gpu."""
    step = max(cpu_ms, gpu_ms) * eager_factor if mode == "eager" else gpu_ms
    return {
        "decode_step_ms_median": step,
        "decode_step_ms_p10": step * 0.98,
        "decode_step_ms_p90": step * 1.02,
        "e2e_latency_s_mean": step * 64 / 1000 + 0.01,
        "output_tokens_per_s": bs * 64 / (step * 64 / 1000 + 0.01),
        "ms_per_output_token": step,
        "kernels_per_step": 100.0,
        "cpu_enqueue_ms_per_step": cpu_ms if mode == "eager" else 0.01,
        "gpu_ms_per_step": gpu_ms,
        "hbm_floor_ms": gpu_ms / 2,
        "graph_over_floor": 2.0,
        "padded_batch_size": float(bs),
        "padding_waste_frac": 0.0,
    }


def synthetic_study(root: Path) -> list[Path]:
    """A two-GPU synthetic study with every kind of gap; returns the written paths."""
    root = Path(root)
    paths = []
    for gpu, cpu_ms, gpu_ms in (("gpu_a", 8.0, 4.0), ("gpu_b", 2.0, 6.0)):
        for bs in (1, 4, 16, 64):
            for mode in ("eager", "cudagraph"):
                cell = Cell(gpu, "graph_pool", "latency", mode, bs)
                if (gpu, mode, bs) == ("gpu_b", "cudagraph", 64):
                    paths.append(write(root, cell, "oom", reason="CUDA out of memory (synthetic)"))
                    continue
                # gpu_a bs=16: eager is 30% slower than the overlap model predicts.
                factor = 1.3 if (gpu, bs) == ("gpu_a", 16) else 1.0
                g = gpu_ms * (1 + bs / 64)
                metrics = graph_pool_latency(bs, mode, cpu_ms=cpu_ms, gpu_ms=g, eager_factor=factor)
                paths.append(write(root, cell, "ok", metrics))
            if gpu == "gpu_b":
                for mode in ("eager", "cudagraph"):
                    paths.append(write(root, Cell(gpu, "vllm", "latency", mode, bs), "unsupported", reason="no vllm"))
                continue
            for mode, ms in (("eager", 12.0), ("cudagraph", 9.0)):
                c = Cell(gpu, "vllm", "latency", mode, bs)
                if (mode, bs) == ("cudagraph", 16):
                    paths.append(write(root, c, "error", reason="benchmark exited 1 (synthetic)"))
                    continue
                m = {
                    "e2e_latency_s_mean": ms * 64 / 1000,
                    "e2e_latency_s_p50": ms * 64 / 1000,
                    "output_tokens_per_s": bs * 1000 / ms,
                    "ms_per_output_token": ms,
                }
                paths.append(write(root, c, "ok", m))
        for mode in ("eager", "cudagraph"):
            step = max(cpu_ms, gpu_ms) if mode == "eager" else gpu_ms
            m = {"e2e_latency_s_mean": step * 0.128, "output_tokens_per_s": 1000 / step, "decode_step_ms_median": step}
            paths.append(write(root, Cell(gpu, "graph_pool", "latency_long", mode, 1), "ok", m))
            startup = {"startup_s": 5.0, "weight_init_s": 3.0, "capture_s_total": 0.0, "graph_memory_mb": 0.0}
            details = {}
            if mode == "cudagraph":
                startup.update(startup_s=7.0, capture_s_total=1.4, graph_memory_mb=70.0)
                details = {
                    "per_size": [
                        {"size": s, "capture_s": 0.2, "graph_memory_mb": 10.0} for s in (64, 32, 16, 8, 4, 2, 1)
                    ],
                    "capture_size_study": [
                        {"capture_sizes": [1], "capture_s_total": 0.2, "graph_memory_mb": 10.0},
                        {"capture_sizes": [1, 4, 16], "capture_s_total": 0.6, "graph_memory_mb": 30.0},
                    ],
                }
            paths.append(write(root, Cell(gpu, "graph_pool", "startup", mode), "ok", startup, details=details))
    for mode in ("eager", "cudagraph", "compile_nograph"):
        m = {
            "startup_s": 60.0,
            "model_load_s": 20.0,
            "compile_s": 0.0 if mode == "eager" else 25.0,
            "capture_s": 10.0 if mode == "cudagraph" else 0.0,
            "graph_memory_mb": 500.0 if mode == "cudagraph" else 0.0,
        }
        paths.append(write(root, Cell("gpu_a", "vllm", "startup", mode), "ok", m))
        for wl, tput in (("serving_inf", 700.0), ("serving_rr6", 600.0)):
            m = {"serving_output_tok_per_s": tput * (1.1 if mode == "cudagraph" else 1.0), "ttft_ms_mean": 50.0}
            paths.append(write(root, Cell("gpu_a", "vllm", wl, mode), "ok", m))
    return sorted(paths)
