"""Run the vLLM cells of issue 5 on the device machine through the pipeline's
own `cudagraph_bench.backends.vllm.measure()`, one JSON per measurement.

    PYTHONPATH=workflow:$SITE python3 benchmarks/vllm_device/run_cells.py \
        --model-dir DIR --state /tmp/vllm_state --out $OUT --budget-s 540

Cells already in --state are skipped, so successive calls continue where the
last stopped. A cell is started only if its estimated duration fits the
budget left, and is stopped by SIGALRM (which runs the backend's cleanup) if
it overruns, so no server outlives a call. After every cell the whole state
(JSON + logs) is packed into $OUT/vllm_results.tar.gz.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

from cudagraph_bench.backends import vllm as vllm_backend
from cudagraph_bench.errors import MeasurementError, Unsupported

# Settings shared by every cell: vLLM's defaults except a bounded context
# (ShareGPT requests are capped at 2048 tokens by `bench serve` anyway) and
# few latency iterations to fit the device time.
SETTINGS = {
    "num_iters_warmup": 3,
    "num_iters": 5,
    "server_start_timeout_s": 420.0,
    "gpu_memory_utilization": 0.85,
    "max_model_len": 2048,
    "extra_args": [],
    "vllm_executable": "vllm",
}


def cells() -> list[dict]:
    """All cells in the order they are run: the study's headline numbers first."""
    out = []
    lat = lambda mode, bs, i, o, est: {  # noqa: E731
        "kind": "latency", "mode": mode, "batch_size": bs,
        "workload": {"input_len": i, "output_len": o}, "est_s": est,
        "id": f"latency_{mode}_bs{bs}_in{i}_out{o}",
    }  # fmt: skip
    out += [lat("eager", 1, 256, 64, 60), lat("cudagraph", 1, 256, 64, 150)]
    out += [lat("eager", 1, 512, 128, 60), lat("cudagraph", 1, 512, 128, 90)]
    for bs in (4, 16, 64):
        out += [lat("eager", bs, 256, 64, 60), lat("cudagraph", bs, 256, 64, 90)]
    for rate in (6.0, float("inf")):
        for mode in ("eager", "cudagraph"):
            r = vllm_backend.format_rate(rate)
            out.append(
                {
                    "kind": "serving", "mode": mode, "batch_size": None,
                    "workload": {
                        "dataset": "sharegpt", "dataset_path": None, "num_prompts": 200,
                        "request_rate": rate, "random_input_len": None, "random_output_len": None,
                    },
                    "est_s": 150 if mode == "eager" else 180,
                    "id": f"serving_{mode}_sharegpt_rate{r}",
                }
            )  # fmt: skip
    for mode, est in (("eager", 70), ("cudagraph", 180), ("compile_nograph", 150)):
        out.append(
            {"kind": "startup", "mode": mode, "batch_size": None, "workload": {}, "est_s": est, "id": f"startup_{mode}"}
        )
    return out


def _cmd(args: list[str]) -> str | None:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=60).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """Where and with what this ran."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def ver(name):
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "host": socket.gethostname(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "gpu": _cmd(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "vllm": ver("vllm"),
        "torch": ver("torch"),
        "transformers": ver("transformers"),
        "tokenizers": ver("tokenizers"),
        "env": {k: os.environ.get(k) for k in ("VLLM_USE_FLASHINFER_SAMPLER", "CUDA_VISIBLE_DEVICES")},
    }


def wait_gpu_idle(max_wait_s: float = 60.0, limit_mib: int = 2048) -> int | None:
    """Wait until the GPU's used memory drops below limit_mib (the last
    cell's processes have released it); returns the last reading."""
    deadline = time.monotonic() + max_wait_s
    used = None
    while time.monotonic() < deadline:
        out = _cmd(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"])
        try:
            used = int(out.splitlines()[0])
        except (AttributeError, ValueError, IndexError):
            return None
        if used < limit_mib:
            return used
        time.sleep(2)
    return used


class CellTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CellTimeout("cell overran the time left in this device call")


def pack(state: Path, out: Path) -> None:
    tmp = out / "vllm_results.tar.gz.tmp"
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(state, arcname="vllm_results")
    tmp.replace(out / "vllm_results.tar.gz")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--state", type=Path, default=Path("/tmp/vllm_state"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/out")))
    ap.add_argument("--budget-s", type=float, default=540.0)
    ap.add_argument("--only", nargs="*", default=None, help="cell ids to run, in this order (default: all)")
    args = ap.parse_args()
    t0 = time.monotonic()
    args.state.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    prov = provenance()
    print(json.dumps(prov, indent=1), flush=True)
    model = {
        "name": "llama-3.1-8b",
        "vllm_model_dir": str(Path(args.model_dir).resolve()),
        "checkpoint": None,
    }
    signal.signal(signal.SIGALRM, _alarm)
    by_id = {c["id"]: c for c in cells()}
    unknown = [i for i in args.only or [] if i not in by_id]
    if unknown:
        raise SystemExit(f"unknown cell ids {unknown}; known: {sorted(by_id)}")
    # --only also sets the order, so a short device call spends itself on the
    # cells that matter most.
    for cell in [by_id[i] for i in args.only] if args.only else cells():
        result_path = args.state / f"{cell['id']}.json"
        if result_path.exists() and not json.loads(result_path.read_text()).get("retry"):
            continue
        left = args.budget_s - (time.monotonic() - t0)
        if cell["est_s"] > left:
            print(f"STOP before {cell['id']}: estimated {cell['est_s']} s > {left:.0f} s left", flush=True)
            break
        gpu_used = wait_gpu_idle()
        print(f"=== {cell['id']} (GPU memory used before: {gpu_used} MiB, {left:.0f} s left)", flush=True)
        log_path = args.state / f"{cell['id']}.log"
        started = dt.datetime.now(dt.UTC).isoformat()
        t_cell = time.monotonic()
        record = {
            "cell": {k: cell[k] for k in ("id", "kind", "mode", "batch_size")},
            "workload": {
                k: (vllm_backend.format_rate(v) if k == "request_rate" else v) for k, v in cell["workload"].items()
            },
            "settings": SETTINGS,
            "model": model,
            "backend": "vllm",
            "started_utc": started,
            "provenance": prov,
            "gpu_memory_used_before_mib": gpu_used,
        }
        signal.alarm(max(1, int(left - 5)))
        try:
            with open(log_path, "w") as log:
                res = vllm_backend.measure(
                    cell["kind"], cell["mode"], cell["batch_size"], model, cell["workload"], SETTINGS, log
                )
            record.update(status="ok", metrics=res["metrics"], details=res["details"])
        except Unsupported as e:
            record.update(status="unsupported", error=str(e), retry=True)
        except CellTimeout as e:
            record.update(status="error", error=f"{type(e).__name__}: {e}", retry=True)
        except MeasurementError as e:
            record.update(status="error", error=f"{type(e).__name__}: {e}")
        except Exception as e:  # a bug: keep the traceback in the record
            record.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        finally:
            signal.alarm(0)
        record["elapsed_s"] = time.monotonic() - t_cell
        record["finished_utc"] = dt.datetime.now(dt.UTC).isoformat()
        tmp = result_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        tmp.replace(result_path)
        summary = {k: record.get("metrics", {}).get(k) for k in (
            "e2e_latency_s_mean", "output_tokens_per_s", "startup_s", "graph_memory_gib",
            "serving_output_tok_per_s",
        )}  # fmt: skip
        print(
            f"--- {cell['id']}: {record['status']} in {record['elapsed_s']:.1f} s {summary} {record.get('error', '')[:2000]}",
            flush=True,
        )
        if record["status"] != "ok":
            print("".join(open(log_path).readlines()[-40:]), flush=True)
        pack(args.state, args.out)
        if record["status"] == "unsupported":
            break  # the environment is missing something; the rest would say the same
    pack(args.state, args.out)
    done = sorted(p.stem for p in args.state.glob("*.json"))
    print(f"DONE {len(done)}/{len(cells())} cells: {done}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
