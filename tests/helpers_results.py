"""A factory for valid result files, and a small synthetic study with gaps.

Every number here is synthetic (made up for tests, derived from simple
formulas); none is a measurement. The files have the shapes the runner writes
(cudagraph_bench.runner / graph_pool.measure): spec.model.name, and for the graph
pool's cudagraph cells details.capture and the capture_study cell's
details.capture_study.
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
    "check": "check",
    "capture_study": "capture_study",
}
MODEL = "synthetic-8b"  # spec.model.name of every synthetic file unless told otherwise
CAPTURE_SIZES = [1, 2, 4, 8, 16, 32, 64]
SHAPES = {
    "latency": {"input_len": 256, "output_len": 64},
    "latency_long": {"input_len": 512, "output_len": 128},
    "startup": {},
    "serving_inf": {"dataset": "sharegpt", "num_prompts": 200, "request_rate": "inf"},
    "serving_rr6": {"dataset": "sharegpt", "num_prompts": 200, "request_rate": 6},
    "check": {"input_len": 256, "greedy_tokens": 32},
    "capture_study": {"capture_sets": [[1], [1, 4, 16], [1, 2, 4, 8, 16, 32, 64], "1..256"]},
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


def result(
    cell: Cell,
    status: str = "ok",
    metrics: dict | None = None,
    *,
    reason=None,
    details=None,
    model: str = MODEL,
    workload: dict | None = None,
    **prov_over,
):
    """A valid result dict for `cell`, spec as the runner records it (workload, model with its name)."""
    if status != "ok" and reason is None:
        reason = f"synthetic {status}"
    return make_result(
        cell,
        KIND_OF.get(cell.workload, "latency"),
        status,
        reason=reason,
        metrics=metrics if status == "ok" else None,
        details=details,
        spec={
            "workload": dict(SHAPES.get(cell.workload, {}) if workload is None else workload),
            "model": {"name": model, "hidden_size": 4096},
        },
        prov=prov(**prov_over),
    )


def write(
    root: Path, cell: Cell, status: str = "ok", metrics: dict | None = None, *, results_dir: str = "results", **kw
) -> Path:
    """Write a valid result file for `cell` under ROOT/RESULTS_DIR/raw; returns its path."""
    path = Path(root) / cell.path_in(results_dir)
    write_result(path, result(cell, status, metrics, **kw))
    return path


def per_size(size: int, *, ms_per_row: float = 1.0) -> dict:
    """One captured size as the pool's CapturedGraph.summary() gives it (synthetic numbers)."""
    return {"size": size, "warmup_s": 0.05, "capture_s": 0.01 * size, "memory_mb": 2.0 + ms_per_row * size,
            "pool_mb": 2.0}  # fmt: skip


def capture_summary(sizes=CAPTURE_SIZES, *, ms_per_row: float = 1.0) -> dict:
    """details.capture as the pool's summary() gives it: sizes ascending, totals over them."""
    entries = [per_size(s, ms_per_row=ms_per_row) for s in sorted(sizes)]
    return {
        "capture_sizes": sorted(sizes),
        "per_size": entries,
        "memory_mb_total": sum(e["memory_mb"] for e in entries),
        "static_io_mb": 1.0,
        "capture_s_total": sum(e["warmup_s"] + e["capture_s"] for e in entries),
    }


def capture_study_details() -> list[dict]:
    """details.capture_study as graph_pool.measure.capture_size_study gives it (per_size null above 16 sizes)."""
    out = []
    for label, sizes in (("1", [1]), ("1,4,16", [1, 4, 16]), ("1,2,4,8,16,32,64", CAPTURE_SIZES),
                         ("1..256", list(range(1, 257)))):  # fmt: skip
        summ = capture_summary(sizes)
        out.append(
            {
                "set": label,
                "sizes": sizes if len(sizes) <= 16 else [sizes[0], sizes[-1]],
                "n_graphs": len(sizes),
                "graph_memory_mb": summ["memory_mb_total"],
                "device_memory_mb": summ["memory_mb_total"] + 4.0,
                "static_io_mb": summ["static_io_mb"],
                "capture_s_total": summ["capture_s_total"] + 0.1,
                "capture_s_graphs_only": sum(e["capture_s"] for e in summ["per_size"]),
                "per_size": summ["per_size"] if len(sizes) <= 16 else None,
            }
        )
    return out


def launches_detail(n: int, gpu_ms: float) -> dict:
    """A synthetic eager step's launch sequence (details.launches): n Triton kernels of gpu_ms / n each."""
    return {
        "kind": ["driver"] * n,
        "name": [0] * n,
        "issue_us": [None] * n,
        "gpu_us": [gpu_ms * 1e3 / n] * n,
        "names": ["_gemv_kernel"],
        "profiled_call_ms": None,
        "host_waits": [],
    }


HOST_LAUNCH_METRICS = {"host_aten_launch_us": 7.0, "host_triton_launch_us": 11.0}


def graph_pool_latency(bs: int, mode: str, *, cpu_ms: float, gpu_ms: float, eager_factor: float = 1.0) -> dict:
    """Synthetic graph-pool latency metrics: eager step = max(cpu, gpu) * eager_factor, graph step = gpu.
    With launches_detail(100, gpu_ms) the queue model predicts the eager step max(cpu, gpu) plus
    one kernel's or one launch's time (the queue's first or last element)."""
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
        **HOST_LAUNCH_METRICS,
    }


def synthetic_study(root: Path) -> list[Path]:
    """A two-GPU synthetic study with every kind of gap; returns the written paths.

    gpu_a: model synthetic-8b, measured by the pipeline (graph pool, vLLM, the check and the
    capture study). gpu_b: model synthetic-1b, every file imported from an older driver's run
    (details.imported_from), graph pool only; its check failed and its capture study ran out of memory.
    """
    root = Path(root)
    paths = []
    for gpu, cpu_ms, gpu_ms in (("gpu_a", 8.0, 4.0), ("gpu_b", 2.0, 6.0)):
        model = "synthetic-8b" if gpu == "gpu_a" else "synthetic-1b"
        imported = {"imported_from": f"results/old_driver/{gpu}.json"} if gpu == "gpu_b" else {}
        per_row = 1.0 if gpu == "gpu_a" else 0.5  # graph memory per captured batch row (MB)

        def put(cell, status="ok", metrics=None, details=None, *, model=model, imported=imported, **kw):
            details = {**imported, **(details or {})}
            paths.append(write(root, cell, status, metrics, details=details, model=model, **kw))

        for bs in (1, 4, 16, 64):
            for mode in ("eager", "cudagraph"):
                cell = Cell(gpu, "graph_pool", "latency", mode, bs)
                if (gpu, mode, bs) == ("gpu_b", "cudagraph", 64):
                    put(cell, "oom", reason="CUDA out of memory (synthetic)")
                    continue
                # gpu_a bs=16: eager is 30% slower than the overlap model predicts.
                factor = 1.3 if (gpu, bs) == ("gpu_a", 16) else 1.0
                g = gpu_ms * (1 + bs / 64)
                metrics = graph_pool_latency(bs, mode, cpu_ms=cpu_ms, gpu_ms=g, eager_factor=factor)
                details = {"launches": launches_detail(100, g)} if mode == "eager" else {}
                if mode == "cudagraph":
                    details["capture"] = capture_summary(ms_per_row=per_row)
                    metrics.update(capture_s_total=details["capture"]["capture_s_total"] + 0.01 * bs,
                                   graph_memory_mb=details["capture"]["memory_mb_total"])  # fmt: skip
                put(cell, "ok", metrics, details)
            if gpu == "gpu_b":
                for mode in ("eager", "cudagraph"):
                    put(Cell(gpu, "vllm", "latency", mode, bs), "unsupported", reason="no vllm")
                continue
            for mode, ms in (("eager", 12.0), ("cudagraph", 9.0)):
                c = Cell(gpu, "vllm", "latency", mode, bs)
                if (mode, bs) == ("cudagraph", 16):
                    put(c, "error", reason="benchmark exited 1 (synthetic)")
                    continue
                m = {
                    "e2e_latency_s_mean": ms * 64 / 1000,
                    "e2e_latency_s_p50": ms * 64 / 1000,
                    "output_tokens_per_s": bs * 1000 / ms,
                    "ms_per_output_token": ms,
                }
                put(c, "ok", m)
        for mode in ("eager", "cudagraph"):
            step = max(cpu_ms, gpu_ms) if mode == "eager" else gpu_ms
            m = {"e2e_latency_s_mean": step * 0.128, "output_tokens_per_s": 1000 / step, "decode_step_ms_median": step}
            put(Cell(gpu, "graph_pool", "latency_long", mode, 1), "ok", m)
            startup = {"startup_s": 5.0, "weight_init_s": 3.0, "first_step_s": 0.5}
            details = {}
            if mode == "cudagraph":
                details = {"capture": capture_summary(ms_per_row=per_row)}
                startup.update(
                    startup_s=7.0,
                    capture_s_total=details["capture"]["capture_s_total"],
                    graph_memory_mb=details["capture"]["memory_mb_total"],
                    graphs_captured=float(len(CAPTURE_SIZES)),
                )
            put(Cell(gpu, "graph_pool", "startup", mode), "ok", startup, details)
        check, study = (
            Cell(gpu, "graph_pool", "check", "cudagraph"),
            Cell(gpu, "graph_pool", "capture_study", "cudagraph"),
        )
        if gpu == "gpu_a":
            put(check, "ok", {"checks_total": 20.0, "checks_failed": 0.0, "max_rel_err": 0.0025})
            rows = capture_study_details()
            m = {
                "capture_sets": float(len(rows)),
                "graph_memory_mb_max": max(r["graph_memory_mb"] for r in rows),
                "capture_s_total_max": max(r["capture_s_total"] for r in rows),
            }
            put(study, "ok", m, {"capture_study": rows})
        else:
            put(check, "error", reason="2 of 20 checks failed: greedy_identical[0], greedy_identical[1] (synthetic)")
            put(study, "oom", reason="CUDA out of memory (synthetic)")
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


def vllm_profiled_latency(root: Path, graph_ms_per_token: float) -> None:
    """vLLM's eager bs-1 latency cell with a profiled decode step (the made-up trace of
    tests/data/vllm/synthetic_trace.py, which ends in a host wait) and the host's launch costs,
    20 ms per output token; and its cudagraph cell at graph_ms_per_token."""
    from cudagraph_bench.backends import vllm_parse

    seq = vllm_parse.parse_profile_trace(synthetic_trace())["launches"]
    write(root, Cell("h200", "vllm", "latency", "eager", 1), "ok",
          {"e2e_latency_s_mean": 1.28, "ms_per_output_token": 20.0, **HOST_LAUNCH_METRICS}, details={"launches": seq})  # fmt: skip
    write(root, Cell("h200", "vllm", "latency", "cudagraph", 1), "ok",
          {"e2e_latency_s_mean": graph_ms_per_token * 64 / 1e3, "ms_per_output_token": graph_ms_per_token})  # fmt: skip


def synthetic_trace(**kw) -> dict:
    """tests/data/vllm/synthetic_trace.py's make_trace(**kw) (loaded from its file: the fake `vllm`
    command reads it from there too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "synthetic_trace", Path(__file__).parent / "data" / "vllm" / "synthetic_trace.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_trace(**kw)
