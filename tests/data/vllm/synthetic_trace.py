"""A torch-profiler trace in the Chrome format vLLM's worker writes, made up for tests: engine
steps annotated as gpu_worker.annotate_profile names them, each launching kernels through the
CUDA runtime (cudaLaunchKernel), the driver API (cuLaunchKernelEx), Triton's untraced launcher
(no call) and one device-to-host copy after a cudaStreamSynchronize, as a decode step does."""

from __future__ import annotations


def make_trace(decode_steps: int = 4, prefill: bool = True, runtime: int = 5, driver: int = 2, triton: int = 1) -> dict:
    """A trace of one prompt step (if prefill) and `decode_steps` decode steps of batch 1. Each
    decode step: `runtime` + `driver` + `triton` kernels of 10 µs, then a 2 µs copy; the host
    issues one launch every 20 µs, so each step's host time is longer than its GPU time."""
    events: list[dict] = [{"ph": "i", "name": "process_name", "ts": 0}]
    corr = 0
    ts = 1000.0
    steps = ([("execute_context_1(256)_generation_0(0)", 3)] if prefill else []) + [
        ("execute_context_0(0)_generation_1(1)", 1)
    ] * decode_steps
    for name, scale in steps:
        start = ts
        annotation = {"ph": "X", "cat": "user_annotation", "name": name, "ts": start, "dur": 0.0}
        events.append(annotation)
        gpu = ts + 5.0
        plan = ["runtime"] * runtime + ["driver"] * driver + ["triton"] * triton
        for i, how in enumerate(plan):
            ts += 20.0
            corr += 1
            if how != "triton":
                api = "cudaLaunchKernel" if how == "runtime" else "cuLaunchKernelEx"
                cat = "cuda_runtime" if how == "runtime" else "cuda_driver"
                events.append({"ph": "X", "cat": cat, "name": api, "ts": ts, "dur": 4.0, "args": {"correlation": corr}})
                events.append({"ph": "s", "cat": "ac2g", "id": corr, "ts": ts})
            gpu = max(gpu, ts + 3.0)
            kern = {"ph": "X", "cat": "kernel", "name": f"{how}_kernel_{i}", "ts": gpu, "dur": 10.0 * scale}
            kern["args"] = {"correlation": corr if how != "triton" else 0, "stream": 7}
            events.append(kern)
            gpu += 10.0 * scale
        ts += 20.0
        corr += 1
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaMemcpyAsync", "ts": ts, "dur": 3.0,
                       "args": {"correlation": corr}})  # fmt: skip
        events.append({"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy DtoH (Device -> Pinned)",
                       "ts": max(gpu, ts + 3.0), "dur": 2.0, "args": {"correlation": corr}})  # fmt: skip
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaStreamSynchronize", "ts": ts + 5.0, "dur": 30.0,
                       "args": {"correlation": corr + 1}})  # fmt: skip
        corr += 1
        ts += 60.0
        annotation["dur"] = ts - start - 10.0
    return {"schemaVersion": 1, "traceEvents": events}
