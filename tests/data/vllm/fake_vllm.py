"""A stand-in for the `vllm` command in measure() tests (no GPU, no vLLM).

  fake_vllm.py --version
  fake_vllm.py serve MODEL --host H --port P [...]   prints the recorded log of
      the mode its flags select, then answers GET /health with 200
  fake_vllm.py bench latency ... --output-json F     prints a log, writes F
  fake_vllm.py bench serve ... --port P --result-dir D --result-filename F
      checks that the server is up, writes D/F

FAKE_VLLM selects a failure: serve_dies (exit 3 in start-up), serve_hangs (never
healthy), bench_fails (benchmark exits 1), bench_garbage (result not JSON),
serve_failed_requests (result reports failures). FAKE_VLLM_ARGV, if set, names
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

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

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
    data = json.loads((HERE / "latency_v0_26.json").read_text())
    Path(opt("--output-json")).write_text(json.dumps(data))
    print(f"Avg latency: {data['avg_latency']} seconds", flush=True)
elif argv[:2] == ["bench", "serve"]:
    with urllib.request.urlopen(f"http://{opt('--host')}:{opt('--port')}/health", timeout=5) as r:
        assert r.status == 200
    if FAIL == "bench_fails":
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
