"""The executor's progress line: counts as cells change, and a long-running cell's elapsed time."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import SimpleNamespace

from snakemake_executor_plugin_submitit import Executor, status
from snakemake_executor_plugin_submitit.progress import Progress, elapsed, label

KEY = "results/local/raw/local/graph_pool/latency/eager/bs1.json"
OTHER = "results/local/raw/local/graph_pool/startup/eager/single.json"


class FakeLogger:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, msg):
        self.lines.append(msg)

    warning = info


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def poll(p: Progress, clock: Clock, seconds: float, step: float = 1.0, keys=(KEY,)) -> None:
    """Poll every `step` seconds for `seconds`, each cell still running, as the executor does."""
    for _ in range(int(seconds / step)):
        clock.t += step
        for key in keys:
            p.update(key, "1", "RUNNING", status.RUNNING)
        p.tick()


def test_elapsed_and_label():
    assert [elapsed(s) for s in (0, 45.9, 60, 125, 3599, 3725)] == ["0s", "45s", "1m00s", "2m05s", "59m59s", "1h02m"]
    assert label(KEY) == "local/graph_pool/latency/eager/bs1"
    assert label("results/summary.csv") == "results/summary.csv"


def test_counts_change_as_cells_move():
    log, clock = FakeLogger(), Clock()
    p = Progress(log, clock)
    p.submitted(KEY, "1")
    assert p.update(KEY, "1", "RUNNING", status.RUNNING)
    assert not p.update(KEY, "1", "RUNNING", status.RUNNING)
    assert p.update(KEY, "1", "COMPLETED", status.SUCCESS)
    assert log.lines == [
        "submitted results/local/raw/local/graph_pool/latency/eager/bs1.json as job 1",
        "cells: 1 submitted, 1 pending, 0 running, 0 done, 0 failed",
        "cells: 1 submitted, 0 pending, 1 running, 0 done, 0 failed",
        "cells: 1 submitted, 0 pending, 0 running, 1 done, 0 failed",
    ]
    p.summary(3)
    assert log.lines[-1] == "cells: 1 submitted, 0 pending, 0 running, 1 done, 0 failed (scheduler status queries: 3)"


def test_a_cell_running_two_minutes_shows_its_elapsed_time_every_30_s():
    log, clock = FakeLogger(), Clock()
    p = Progress(log, clock)
    p.submitted(KEY, "1")
    p.update(KEY, "1", "RUNNING", status.RUNNING)
    start = len(log.lines)
    poll(p, clock, 125)  # a poll a second, as the local launcher polls
    ticks = log.lines[start:]
    # Nothing while under 30 s; then at most one line per 30 s, not one per poll.
    assert ticks == [
        "cells: 1 submitted, 0 pending, 1 running (local/graph_pool/latency/eager/bs1 for 31s), 0 done, 0 failed",
        "cells: 1 submitted, 0 pending, 1 running (local/graph_pool/latency/eager/bs1 for 1m01s), 0 done, 0 failed",
        "cells: 1 submitted, 0 pending, 1 running (local/graph_pool/latency/eager/bs1 for 1m31s), 0 done, 0 failed",
        "cells: 1 submitted, 0 pending, 1 running (local/graph_pool/latency/eager/bs1 for 2m01s), 0 done, 0 failed",
    ]
    # Done: the plain line again, and no more refreshes.
    p.update(KEY, "1", "COMPLETED", status.SUCCESS)
    assert log.lines[-1] == "cells: 1 submitted, 0 pending, 0 running, 1 done, 0 failed"
    n = len(log.lines)
    clock.t += 100
    p.tick()
    assert len(log.lines) == n


def test_a_change_prints_at_once_and_names_the_longest_running_cells():
    log, clock = FakeLogger(), Clock()
    p = Progress(log, clock)
    keys = [KEY, OTHER, KEY.replace("bs1", "bs4")]
    for i, key in enumerate(keys):
        p.submitted(key, str(i))
    p.update(KEY, "0", "RUNNING", status.RUNNING)
    clock.t += 20
    p.update(OTHER, "1", "RUNNING", status.RUNNING)
    p.update(keys[2], "2", "RUNNING", status.RUNNING)
    start = len(log.lines)
    poll(p, clock, 60, keys=keys)
    # 30 s after the last line (t=20), when only the first cell is over 30 s; 30 s later all three are.
    assert log.lines[start:] == [
        "cells: 3 submitted, 0 pending, 3 running (local/graph_pool/latency/eager/bs1 for 50s), 0 done, 0 failed",
        "cells: 3 submitted, 0 pending, 3 running (local/graph_pool/latency/eager/bs1 for 1m20s, "
        "local/graph_pool/latency/eager/bs4 for 1m00s, 1 more over 30s), 0 done, 0 failed",
    ]
    # A state change is printed at once, even right after a refresh, with the elapsed times.
    clock.t += 5
    p.failed(OTHER, "1", "boom")
    assert log.lines[-1] == (
        "cells: 3 submitted, 0 pending, 2 running (local/graph_pool/latency/eager/bs1 for 1m25s, "
        "local/graph_pool/latency/eager/bs4 for 1m05s), 0 done, 1 failed"
    )


def test_a_pending_cell_is_not_running_time():
    log, clock = FakeLogger(), Clock()
    p = Progress(log, clock)
    p.submitted(KEY, "1")
    for _ in range(120):
        clock.t += 1
        p.update(KEY, "1", "PENDING", status.RUNNING)
        p.tick()
    assert log.lines[-1] == "cells: 1 submitted, 1 pending, 0 running, 0 done, 0 failed"
    assert len(log.lines) == 2


def test_the_executor_refreshes_the_line_on_its_polls():
    """check_active_jobs (the executor's poll) calls tick: a local cell running 40 s is named."""
    log, clock = FakeLogger(), Clock()
    ex = Executor.__new__(Executor)  # only what check_active_jobs touches
    ex.progress = Progress(log, clock)
    ex.settings = SimpleNamespace(launcher="local", min_poll_s=1.0, max_poll_s=30.0)
    ex.status_rate_limiter = contextlib.nullcontext()
    ex.sacct_calls, ex._poll_s = 0, 1.0
    ex.gpus_held = {"42": [0]}
    job = SimpleNamespace(job_id="42", state="RUNNING")  # a local submitit job, still running
    info = SimpleNamespace(aux={"submitit_job": job, "keys": [KEY]})
    ex.progress.submitted(KEY, "42")

    async def one_poll():
        return [i async for i in ex.check_active_jobs([info])]

    for _ in range(40):
        assert asyncio.run(one_poll()) == [info]
        clock.t += 1
    assert log.lines[-1] == (
        "cells: 1 submitted, 0 pending, 1 running (local/graph_pool/latency/eager/bs1 for 31s), 0 done, 0 failed"
    )
    assert ex.gpus_held == {"42": [0]}  # a running cell keeps its GPU


def test_a_job_of_two_cells_counts_and_finishes_as_two():
    """One server for a mode's two serving cells: one job, two result files, two cells in the line."""
    log, clock = FakeLogger(), Clock()
    ex = Executor.__new__(Executor)
    ex.progress = Progress(log, clock)
    ex.settings = SimpleNamespace(launcher="local", min_poll_s=1.0, max_poll_s=30.0)
    ex.status_rate_limiter = contextlib.nullcontext()
    ex.sacct_calls, ex._poll_s = 0, 1.0
    ex.registry = SimpleNamespace(forget=lambda key: None)
    ex.gpus_held = {"7": [1], "8": [0]}  # the GPUs of this job and of another one still running
    keys = [f"results/raw/h200/vllm/{w}/cudagraph/single.json" for w in ("serving_inf", "serving_rr6")]
    job = SimpleNamespace(job_id="7", state="FINISHED", exception=lambda: None)
    info = SimpleNamespace(aux={"submitit_job": job, "keys": keys})
    ex.live, ex._live_lock = {"7": info, "8": SimpleNamespace()}, threading.Lock()  # what Ctrl-C would cancel
    ex.report_job_success = lambda info: None
    for key in keys:
        ex.progress.submitted(key, "7")

    async def one_poll():
        return [i async for i in ex.check_active_jobs([info])]

    assert asyncio.run(one_poll()) == []
    assert log.lines[-1] == "cells: 2 submitted, 0 pending, 0 running, 2 done, 0 failed"
    assert ex.gpus_held == {"8": [0]}  # the finished job's GPU is free for the next cell
    assert list(ex.live) == ["8"]  # a finished job is no longer one to cancel
