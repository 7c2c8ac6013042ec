"""A stand-in for the `vllm` command in measure() tests (no GPU, no vLLM).

  fake_vllm.py --version
  fake_vllm.py serve MODEL --host H --port P [...]   prints the recorded log of
      the mode its flags select, then answers GET /health with 200
  fake_vllm.py bench latency ... --output-json F     prints a log, writes F; with --profile
      writes a made-up trace (synthetic_trace.py) where --profiler-config says instead
  fake_vllm.py bench startup ... --output-json F     prints a log per engine start, writes F
  fake_vllm.py bench serve ... --port P --result-dir D --result-filename F
      checks that the server is up, writes D/F

FAKE_VLLM selects a failure: serve_dies (exit 3 in start-up; also bench startup's), serve_hangs (never
healthy), bench_fails (benchmark exits 1), bench_fails_at_rate_R (only the one at
request rate R), bench_garbage (result not JSON), serve_failed_requests (result
reports failures), reset_fails (the prefix cache cannot be emptied), no_bench_startup
(an older vLLM without `vllm bench startup`), profile_no_trace (`bench latency --profile`
writes no trace), profile_garbage (it writes a cut-off one). A benchmark
exits 1 if an earlier one ran on the same server since its prefix cache was last
emptied (POST /reset_prefix_cache, answered only with VLLM_SERVER_DEV_MODE=1). FAKE_VLLM_ARGV, if set, names
a file each invocation appends its argv to (as JSON lines).
"""

import http.server
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
FAIL = os.environ.get("FAKE_VLLM", "")
argv = sys.argv[1:]
if os.environ.get("FAKE_VLLM_ARGV"):
    with open(os.environ["FAKE_VLLM_ARGV"], "a") as f:
        f.write(json.dumps(argv) + "\n")


def opt(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default


GRAPH_MODES = {"FULL_AND_PIECEWISE": "cudagraph", "PIECEWISE": "piecewise", "FULL_DECODE_ONLY": "full_decode_only"}
# What each graph mode's log leaves out of the recorded default (FULL_AND_PIECEWISE) log.
DROPPED_CAPTURES = {"piecewise": "(FULL)", "full_decode_only": "(PIECEWISE)"}


def mode():
    if "--enforce-eager" in argv:
        return "eager"
    if "--compilation-config" in argv:
        asked = json.loads(opt("--compilation-config")).get("cudagraph_mode")
        if asked == "NONE":
            return "compile_nograph"
        return GRAPH_MODES[asked]
    return "cudagraph"


def print_log(m):
    """The recorded log of the mode; the other graph modes: the default's, with the configured mode
    and the captures of that mode (FAKE_VLLM=downgrade: vLLM fell back to piecewise graphs)."""
    name = m if m in ("eager", "compile_nograph", "cudagraph") else "cudagraph"
    for line in (HERE / f"log_v0_26_{name}.log").read_text().splitlines():
        if line.startswith("#") or "Uvicorn" in line:
            continue
        if m in DROPPED_CAPTURES:
            asked = next(k for k, v in GRAPH_MODES.items() if v == m)
            line = line.replace("CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)", f"CUDAGraphMode.{asked}: (0, 0)")
            dropped = "(FULL)" if FAIL == "downgrade" else DROPPED_CAPTURES[m]
            if dropped in line:
                continue
        print(line, flush=True)


if argv[:1] == ["--version"]:
    print("0.26.0")
elif argv[:1] == ["serve"]:
    port = int(opt("--port"))
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        assert os.environ.get(key) == "1", key
    print_log(mode())
    if FAIL == "serve_dies":
        print("RuntimeError: CUDA out of memory (fake)", flush=True)
        sys.exit(3)
    if FAIL == "serve_hangs":
        time.sleep(600)

    # a benchmark marks the prefix cache used; POST /reset_prefix_cache (dev mode only, as in
    # vLLM) empties it; a benchmark refuses a used cache (its numbers would be cache hits)
    state = {"cache_used": False}
    dev_mode = os.environ.get("VLLM_SERVER_DEV_MODE") == "1"

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/fake_cache_used":
                self._json({"used": state["cache_used"]})
                return
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def do_POST(self):
            if self.path == "/reset_prefix_cache" and dev_mode:
                state["cache_used"] = FAIL == "reset_fails"
                self._json({"success": FAIL != "reset_fails"})
            elif self.path == "/fake_bench_ran":
                state["cache_used"] = True
                self._json({})
            else:
                self.send_response(404)
                self.end_headers()

        def _json(self, obj):
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.HTTPServer((opt("--host"), port), H)
    print(f"INFO:     Uvicorn running on http://{opt('--host')}:{port} (Press CTRL+C to quit)", flush=True)
    httpd.serve_forever()
elif argv[:2] == ["bench", "latency"]:
    print_log(mode())
    if FAIL == "bench_fails":
        print("AssertionError: fake failure", flush=True)
        sys.exit(1)
    if "--profile" in argv:  # vLLM profiles one generate call and writes no result file
        import gzip
        import importlib.util

        spec = importlib.util.spec_from_file_location("synthetic_trace", HERE / "synthetic_trace.py")
        trace_module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(trace_module)

        out = Path(json.loads(opt("--profiler-config"))["torch_profiler_dir"])
        if FAIL == "profile_garbage":
            (out / "fake_rank0.1.pt.trace.json").write_text('{"traceEvents": [')
        elif FAIL != "profile_no_trace":
            with gzip.open(out / f"fake_rank0.{time.time_ns()}.pt.trace.json.gz", "wt") as f:
                json.dump(trace_module.make_trace(), f)
        sys.exit(0)
    data = json.loads((HERE / "latency_v0_26.json").read_text())
    Path(opt("--output-json")).write_text(json.dumps(data))
    print(f"Avg latency: {data['avg_latency']} seconds", flush=True)
elif argv[:2] == ["bench", "startup"]:
    if FAIL == "no_bench_startup":  # an older vLLM
        print("vllm bench: error: invalid choice: 'startup'", file=sys.stderr)
        sys.exit(2)
    if "--help" in argv:
        print("usage: vllm bench startup [options]")
        sys.exit(0)
    if FAIL == "serve_dies":
        print_log(mode())
        print("RuntimeError: CUDA out of memory (fake)", flush=True)
        sys.exit(3)
    cold, warm = int(opt("--num-iters-cold")), int(opt("--num-iters-warm"))
    for _ in range(cold + int(opt("--num-iters-warmup")) + warm):
        print_log(mode())  # one engine start each, as vLLM's LLM() logs it
    compiled = 0.0 if mode() == "eager" else 12.5
    data = {
        "avg_cold_startup_time": 40.0, "cold_startup_times": [40.0] * cold,
        "avg_cold_compilation_time": compiled, "cold_compilation_times": [compiled] * cold,
        "avg_warm_startup_time": 25.0, "warm_startup_times": [25.0] * warm,
        "avg_warm_compilation_time": compiled / 5, "warm_compilation_times": [compiled / 5] * warm,
    }  # fmt: skip
    Path(opt("--output-json")).write_text(json.dumps(data))
elif argv[:2] == ["bench", "serve"]:
    url = f"http://{opt('--host')}:{opt('--port')}"
    with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{url}/fake_cache_used", timeout=5) as r:
        if json.loads(r.read())["used"]:
            print("fake bench: the prefix cache holds an earlier run's prompts", flush=True)
            sys.exit(1)
    urllib.request.urlopen(urllib.request.Request(f"{url}/fake_bench_ran", data=b"", method="POST"), timeout=5)
    if FAIL == "bench_fails" or FAIL == f"bench_fails_at_rate_{opt('--request-rate')}":
        print("fake bench failure", flush=True)
        sys.exit(1)
    out = Path(opt("--result-dir")) / opt("--result-filename")
    if FAIL == "bench_garbage":
        out.write_text("{not json")
    else:
        data = json.loads((HERE / "serve_v0_26.json").read_text())
        if FAIL == "serve_failed_requests":
            data["completed"], data["failed"] = 150, 50
        out.write_text(json.dumps(data))
    print("============ Serving Benchmark Result ============", flush=True)
else:
    print(f"fake vllm: unknown command {argv}", file=sys.stderr)
    sys.exit(2)
