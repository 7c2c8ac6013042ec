"""A stand-in for `vllm serve` in the process-handling tests: an HTTP server on
127.0.0.1 whose start-up can be delayed, fail, or leave a stubborn child.

python standin_server.py --port P [--delay S] [--exit-code N] [--health-status C]
                         [--child-pidfile F] [--ignore-sigterm] [--pidfile F]
"""

import argparse
import http.server
import os
import signal
import subprocess
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--delay", type=float, default=0.0, help="seconds before binding the port")
ap.add_argument("--exit-code", type=int, default=None, help="exit with this code instead of serving")
ap.add_argument("--health-status", type=int, default=200)
ap.add_argument("--child-pidfile", default=None, help="fork a child that ignores SIGTERM; write its pid here")
ap.add_argument("--ignore-sigterm", action="store_true")
ap.add_argument("--pidfile", default=None)
args = ap.parse_args()

if args.pidfile:
    with open(args.pidfile, "w") as f:
        f.write(str(os.getpid()))
if args.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.child_pidfile:
    # Like vLLM's engine core: a second process in the same group.
    child = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
    )
    with open(args.child_pidfile, "w") as f:
        f.write(str(child.pid))
print("INFO starting stand-in server", flush=True)
time.sleep(args.delay)
if args.exit_code is not None:
    print("ERROR stand-in start-up failed on purpose", flush=True)
    sys.exit(args.exit_code)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = args.health_status if self.path == "/health" else 404
        self.send_response(code)
        self.end_headers()

    def log_message(self, fmt, *a):
        print("access " + fmt % a, flush=True)


httpd = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
print(f"INFO Uvicorn running on http://127.0.0.1:{args.port}", flush=True)
httpd.serve_forever()
