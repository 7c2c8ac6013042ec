"""Child processes for the vLLM backend: a server that must come up healthy and
go away completely, and benchmark commands whose output is kept.

Both run in a process group of their own (vLLM's API server forks an engine
core process, which must die with it), stream their output line by line into
the cell's log, and are killed as a group on any exit from their `with`
block: normal end, exception, timeout, Ctrl-C, or SIGTERM sent to the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

from cudagraph_bench.errors import MeasurementError

HOST = "127.0.0.1"
# How often /health is polled: the start-up time is known to within this.
HEALTH_POLL_S = 0.25
# How long a group gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 20.0
# Lines of output quoted in an error message.
TAIL_LINES = 30


def find_free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listens on now (the kernel picks it).
    Another process may still take it before the server binds it; the server
    then dies in start-up with 'Address already in use', reported as such."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if a server could bind (host, port) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As uvicorn and http.server do: connections of a server that just
        # stopped linger in TIME_WAIT and would otherwise read as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


class _Tee:
    """Copies a child's output into the cell log (prefixed) and a buffer."""

    def __init__(self, stream, log, prefix: str, lock: threading.Lock):
        self.lines: list[str] = []
        self._stream, self._log, self._prefix, self._lock = stream, log, prefix, lock
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in iter(self._stream.readline, ""):
            self.lines.append(line)
            if self._log is not None:
                with self._lock:
                    self._log.write(self._prefix + line)
                    self._log.flush()
        self._stream.close()

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        return "".join(self.lines)

    def tail(self, n: int = TAIL_LINES) -> str:
        return "".join(self.lines[-n:])


# Writes from the server's and the benchmark's reader threads interleave by line.
_LOG_LOCK = threading.Lock()
# Every group started here and not yet reaped, for the SIGTERM handler.
_LIVE_GROUPS: set[int] = set()


def _kill_group(proc: subprocess.Popen, grace_s: float | None = None) -> None:
    """SIGTERM the child's process group, SIGKILL it after grace_s (default
    STOP_GRACE_S), reap it."""
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    pgid = proc.pid  # the child leads its own session, so its pid is the pgid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    # The leader may be gone while the engine core it forked lives on.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    _LIVE_GROUPS.discard(pgid)


def _on_sigterm(previous):
    def handler(signum, frame):
        for pgid in list(_LIVE_GROUPS):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            raise SystemExit(128 + signum)

    return handler


@contextlib.contextmanager
def _sigterm_kills_children() -> Iterator[None]:
    # A Slurm cancel or submitit timeout sends SIGTERM to the worker; Python's
    # default would die without running `finally`, leaving a vLLM server
    # holding the GPU in its own process group. Only the main thread may set
    # handlers; elsewhere the `finally` blocks are the only line of defence.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _on_sigterm(previous))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _popen(cmd: Sequence[str], env: dict | None, cwd: str | None) -> subprocess.Popen:
    try:
        proc = subprocess.Popen(
            list(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise MeasurementError(f"cannot start {cmd[0]!r}: {e}") from e
    _LIVE_GROUPS.add(proc.pid)
    return proc


class Server:
    """A started server process: its Popen, its output, its start-up time."""

    def __init__(self, proc: subprocess.Popen, tee: _Tee, port: int, launched: float):
        self.proc, self.tee, self.port, self.launched = proc, tee, port, launched
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_text(self) -> str:
        return self.tee.text()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as r:
            return r.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def post_json(url: str, timeout_s: float = 30.0) -> dict:
    """POST to url with no body; its JSON answer, or {"error": what went wrong} (HTTP status, no
    connection, not JSON): the caller decides what a failure means."""
    req = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            body = r.read()
    except urllib.error.HTTPError as e:
        return {"error": f"HTTP {e.code}"}
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        return {"error": str(e)}
    try:
        answer = json.loads(body)
    except ValueError:
        return {"error": f"not JSON: {body[:80]!r}"}
    return answer if isinstance(answer, dict) else {"error": f"not a JSON object: {answer!r}"}


@contextlib.contextmanager
def serve(
    cmd: Sequence[str],
    port: int,
    log,
    timeout_s: float,
    env: dict | None = None,
    cwd: str | None = None,
    health_path: str = "/health",
) -> Iterator[Server]:
    """Start `cmd` (a server that binds HOST:port), wait until GET health_path
    answers 200, yield a Server whose startup_s is launch -> first 200, and
    stop and reap its whole process group on leaving the block, however it is
    left. Its output goes line by line into `log`, prefixed '[server] '.

    Raises MeasurementError if the port is taken before launch, if the server
    exits before it is healthy (quoting its last lines), or if it is not
    healthy within timeout_s.
    """
    if not port_is_free(port):
        raise MeasurementError(f"port {port} on {HOST} is already in use; the server was not started")
    with _sigterm_kills_children():
        launched = time.monotonic()
        proc = _popen(cmd, env, cwd)
        tee = _Tee(proc.stdout, log, "[server] ", _LOG_LOCK)
        server = Server(proc, tee, port, launched)
        try:
            url = server.url + health_path
            deadline = launched + timeout_s
            while True:
                if _healthy(url):
                    # A foreign server could answer on our port only if ours
                    # failed to bind it; then ours has exited. Check once more.
                    if proc.poll() is not None:
                        raise MeasurementError(
                            f"something answered {url} but the server exited with code {proc.returncode}; "
                            f"last output:\n{tee.tail()}"
                        )
                    server.startup_s = time.monotonic() - launched
                    break
                if proc.poll() is not None:
                    tee.join()
                    raise MeasurementError(
                        f"server exited with code {proc.returncode} during start-up "
                        f"after {time.monotonic() - launched:.1f} s; last output:\n{tee.tail()}"
                    )
                if time.monotonic() > deadline:
                    raise MeasurementError(
                        f"server not healthy at {url} after {timeout_s:.0f} s; last output:\n{tee.tail()}"
                    )
                time.sleep(HEALTH_POLL_S)
            yield server
        finally:
            _kill_group(proc)
            tee.join()


def run_logged(
    cmd: Sequence[str],
    log,
    timeout_s: float,
    env: dict | None = None,
    cwd: str | None = None,
    prefix: str = "",
) -> str:
    """Run `cmd` to completion in its own process group, streaming its output
    into `log`, and return that output. The group is killed on timeout,
    exception or Ctrl-C. Raises MeasurementError on a non-zero exit (quoting
    the last lines) or on timeout."""
    with _sigterm_kills_children():
        proc = _popen(cmd, env, cwd)
        tee = _Tee(proc.stdout, log, prefix, _LOG_LOCK)
        try:
            try:
                rc = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                raise MeasurementError(
                    f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} still running after {timeout_s:.0f} s; "
                    f"killed. Last output:\n{tee.tail()}"
                ) from None
            tee.join()
            if rc != 0:
                raise MeasurementError(f"command exited with code {rc}: {' '.join(cmd)}\nlast output:\n{tee.tail()}")
            return tee.text()
        finally:
            _kill_group(proc, grace_s=5.0)
            tee.join()
