"""Run one cell and always leave an outcome: a result file with a status.

This runs inside the cell's job (a Slurm job, or a local submitit process).
Deterministic outcomes of the measurement (unsupported here, CUDA OOM, a failed
benchmark) become result files with a status. What kills the job itself
(scancel, node failure, time limit) leaves no file, so Snakemake sees the cell
as failed and the next run resubmits it.
"""

from __future__ import annotations

import os
import time
import traceback
from typing import TextIO

from .cells import Cell
from .errors import MeasurementError, Unsupported
from .results import make_result, provenance, utc_now, write_result

# Tests set this to make the measurement raise, e.g. "oom" or "error", to check
# the outcome path inside a real job without a GPU.
INJECT_ENV = "CGB_INJECT_FAILURE"


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch
    except ImportError:
        return False
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # Some kernels (Triton, cuBLAS workspace) report OOM as a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def _check_device(spec: dict) -> None:
    """Refuse to measure on the wrong GPU (a mis-set partition would otherwise
    file L40S numbers under h200), and never turn a GPU the job was not given
    into a quiet "unsupported"."""
    want = spec.get("device_match") or ""
    if not want:
        return
    import torch

    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        launcher = os.environ.get("SUBMITIT_EXECUTOR") or ("slurm" if os.environ.get("SLURM_JOB_ID") else "none")
        raise MeasurementError(
            f"this cell needs a GPU matching {want!r}, but the job sees no CUDA device "
            f"(CUDA_VISIBLE_DEVICES={'unset' if visible is None else repr(visible)}, launcher {launcher!r}): "
            f"check gpu_types.{spec['cell']['gpu']}.gpus (local launcher) or its gres (Slurm)"
        )
    name = torch.cuda.get_device_name(0)
    if want.lower() not in name.lower():
        raise MeasurementError(f"this cell needs a GPU matching {want!r}, but the job got {name!r}")


def _inject(spec: dict) -> None:
    what = os.environ.get(INJECT_ENV, "")
    target, _, kind = what.rpartition(":")  # "CELL_SLUG:oom", or "oom" for every cell
    if not kind or (target and target != Cell(**spec["cell"]).slug):
        return
    if kind == "oom":
        import torch

        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test)")
    if kind == "error":
        raise MeasurementError("failure injected by the test")
    if kind == "crash":
        os._exit(3)  # an infrastructure-like death: no result file
    if kind.startswith("sleep"):
        time.sleep(float(kind[len("sleep") :]))  # keeps the job running, for scancel/kill tests


def _graph_pool(spec: dict, log: TextIO) -> dict:
    import torch

    from .backends.graph_pool.measure import measure

    cell = Cell(**spec["cell"])
    settings = dict(
        spec["measurement"],
        capture_sizes=spec["graph_pool"]["capture_sizes"],
        device="cuda" if torch.cuda.is_available() else "cpu",
    )
    return measure(spec["kind"], cell.mode, cell.batch_size, spec["model"], spec["workload"], settings, log)


def _vllm_settings(spec: dict) -> dict:
    v = spec["vllm"]
    return {
        "num_iters_warmup": v["num_iters_warmup"],
        "num_iters": v["num_iters"],
        "server_start_timeout_s": v["server_start_timeout_s"],
        "gpu_memory_utilization": v["gpu_memory_utilization"],
        "max_model_len": v.get("max_model_len"),
        "extra_args": list(v.get("extra_args", [])),
        "vllm_executable": v["executable"],
        "startup_num_iters_cold": v["startup_num_iters_cold"],  # defaults: the config schema's
        "startup_num_iters_warm": v["startup_num_iters_warm"],
        "profile_batch_sizes": list(v["profile_batch_sizes"]),
    }


def _serving_workload(spec: dict) -> dict:
    return dict(spec["workload"], dataset_path=spec["workload"].get("dataset_path", spec["vllm"].get("sharegpt_path")))


def _vllm(spec: dict, log: TextIO) -> dict:
    from .backends.vllm import measure

    cell = Cell(**spec["cell"])
    workload = _serving_workload(spec) if spec["kind"] == "serving" else spec["workload"]
    return measure(spec["kind"], cell.mode, cell.batch_size, spec["model"], workload, _vllm_settings(spec), log)


def _session(spec: dict, log: TextIO):
    """The shared server of a backend's serving cells (vLLM's serving_session)."""
    from .backends.vllm import serving_session

    return serving_session(spec["cell"]["mode"], spec["model"], _vllm_settings(spec), log)


def _torch_compile(spec: dict, log: TextIO) -> dict:
    from .backends.torch_compile import measure

    cell = Cell(**spec["cell"])
    return measure(spec["kind"], cell.mode, cell.batch_size, spec["model"], spec["workload"], spec["measurement"], log)


# backend name -> adapter from the job spec to that backend's measure(kind, mode, batch_size, model,
# workload, settings, log) -> {"metrics", "details"}: one signature, the settings each backend takes
_BACKENDS = {"graph_pool": _graph_pool, "vllm": _vllm, "torch_compile": _torch_compile}


def _measure(spec: dict, log: TextIO) -> dict:
    return _BACKENDS[spec["cell"]["backend"]](spec, log)


def _outcome(measure, log: TextIO) -> tuple[str, str | None, dict, dict]:
    """(status, reason, metrics, details) of calling measure() -> {"metrics", "details"}: every
    outcome of a measurement, never an exception (an unexpected one's traceback goes to the log)."""
    try:
        out = measure()
        return "ok", None, out["metrics"], out.get("details", {})
    except Unsupported as e:
        return "unsupported", str(e), {}, {}
    except MeasurementError as e:
        return "error", str(e), {}, getattr(e, "details", {})  # e.g. every comparison of a failed check
    except Exception as e:  # noqa: BLE001 - every outcome must be written
        traceback.print_exc(file=log)
        if _is_cuda_oom(e):
            return "oom", f"CUDA out of memory: {e}", {}, {}
        return "error", f"{type(e).__name__}: {e}", {}, {}


def _write(spec: dict, out_path: str, outcome: tuple, started: str, wall_s: float, log: TextIO) -> dict:
    cell = Cell(**spec["cell"])
    status, reason, metrics, details = outcome
    if status != "ok":
        metrics = {}
        print(f"[cgb] cell {cell.slug}: {status}: {reason}", file=log, flush=True)
    result = make_result(
        cell,
        spec["kind"],
        status,
        reason=reason,
        metrics=metrics,
        details=details,
        spec={k: spec[k] for k in ("workload", "model", "measurement") if k in spec},
        # wall_s: the cell's own time in its job (model build, compile, measurement), for GPU-hours
        prov=provenance(spec["config_hash"], started) | {"wall_s": round(wall_s, 3)},
    )
    write_result(out_path, result)
    print(f"[cgb] cell {cell.slug}: {status}, wrote {out_path}", file=log, flush=True)
    return result


def run_cell(spec: dict, out_path: str, log: TextIO) -> dict:
    """Measure the cell described by `spec` (cells.job_spec) and write its result to `out_path`.

    Returns the result written. Never raises for a measurement outcome; raises
    only if the result cannot be written.
    """
    cell = Cell(**spec["cell"])
    started, t0 = utc_now(), time.perf_counter()
    print(f"[cgb] cell {cell.slug}: {spec['kind']} on {cell.gpu}, started {started}", file=log, flush=True)

    def measure() -> dict:
        _inject(spec)
        _check_device(spec)
        return _measure(spec, log)

    return _write(spec, out_path, _outcome(measure, log), started, time.perf_counter() - t0, log)


def run_shared_server_cells(specs: list[dict], out_paths: list[str], log: TextIO) -> list[dict]:
    """The serving cells of one (GPU, backend, mode), one result file each, against one server.

    A cell whose result file exists is kept as it is (its job reruns only for the others: a
    failed rate, once `rerun-errors` has moved its file aside, is measured again alone). The
    server's start-up is shared: each measured cell's wall_s is its own benchmark plus its share
    of the start-up, and details.shared_server names the cells that shared it. Returns the
    results written."""
    todo = []
    for spec, path in zip(specs, out_paths, strict=True):
        if os.path.exists(path):
            print(f"[cgb] cell {Cell(**spec['cell']).slug}: kept, {path} exists", file=log, flush=True)
        else:
            todo.append((spec, path))
    if not todo:
        return []
    first = todo[0][0]
    slugs = [Cell(**s["cell"]).slug for s, _ in todo]
    started, t0 = utc_now(), time.perf_counter()
    print(f"[cgb] cells {', '.join(slugs)}: one server, started {started}", file=log, flush=True)
    outcomes: list[tuple] = []
    bench_s: list[float] = []

    def measure_all() -> dict:
        _check_device(first)
        with _session(first, log) as session:
            for spec, _ in todo:

                def one(spec=spec) -> dict:
                    _inject(spec)
                    return session.bench(_serving_workload(spec))

                t = time.perf_counter()
                outcomes.append(_outcome(one, log))
                bench_s.append(time.perf_counter() - t)
        return {"metrics": {}}

    shared = _outcome(measure_all, log)  # the server's own outcome: a failed start fails every cell left
    total = time.perf_counter() - t0
    overhead = (total - sum(bench_s)) / len(todo)
    results = []
    for i, (spec, path) in enumerate(todo):
        outcome = outcomes[i] if i < len(outcomes) else shared
        status, reason, metrics, details = outcome
        details = dict(details, shared_server={"cells": slugs, "job_wall_s": round(total, 3)})
        wall = (bench_s[i] if i < len(bench_s) else 0.0) + overhead
        results.append(_write(spec, path, (status, reason, metrics, details), started, wall, log))
    return results
