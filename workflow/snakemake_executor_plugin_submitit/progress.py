"""Progress on the terminal: cells submitted / pending / running / done / failed, as they change.

While a cell has been running longer than LONG_RUNNING_S, the line also names it
with its elapsed time ("1 running (local/graph_pool/latency/eager/bs1 for 2m05s)"),
printed again on polls at most every REFRESH_S, so a long cell is never silent
and the log is never flooded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from . import status

# Scheduler words -> the few states a user cares about.
_PENDING = status.PENDING_STATES
LONG_RUNNING_S = 30.0  # a cell running longer than this shows its elapsed time
REFRESH_S = 30.0  # the line is printed again, while nothing else changes, at most this often
_NAMED = 2  # long-running cells named in the line; the rest are counted


def elapsed(seconds: float) -> str:
    """45s, 2m05s, 1h02m."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def label(key: str) -> str:
    """A cell's short name: its output path after raw/ (gpu/backend/workload/mode/point), without .json."""
    name = key.rsplit("/raw/", 1)[-1]
    return name[: -len(".json")] if name.endswith(".json") else name


class Progress:
    def __init__(self, logger, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.clock = clock
        self.state: dict[str, str] = {}  # output path -> pending | running | done | failed
        self.running_since: dict[str, float] = {}  # output path -> when it was first seen running
        self._last_counts = ""
        self._last_printed: float | None = None

    def _set(self, key: str, state: str) -> bool:
        changed = self.state.get(key) != state
        self.state[key] = state
        if state == "running":
            self.running_since.setdefault(key, self.clock())
        else:
            self.running_since.pop(key, None)
        return changed

    def submitted(self, key: str, job_id: str) -> None:
        self._set(key, "pending")
        self.logger.info(f"submitted {key} as job {job_id}")
        self._line()

    def attached(self, key: str, job_id: str) -> None:
        self._set(key, "pending")
        self.logger.info(f"re-attached {key} to job {job_id}, still queued or running from an earlier run")
        self._line()

    def failed(self, key: str, job_id: str | None, reason: str) -> None:
        self._set(key, "failed")
        self.logger.warning(f"failed {key}" + (f" (job {job_id})" if job_id else "") + f": {reason}")
        self._line()

    def update(self, key: str, job_id: str, sched_state: str, kind: str) -> bool:
        """Record a poll result; returns whether the cell's state changed."""
        if kind == status.SUCCESS:
            new = "done"
        elif kind == status.FAILED:
            new = "failed"
        else:
            new = "pending" if sched_state.upper() in _PENDING else "running"
        changed = self._set(key, new)
        if changed:
            self._line()
        return changed

    def tick(self) -> None:
        """Once per poll: while a cell runs longer than LONG_RUNNING_S, print the line with its
        elapsed time, unless a line was printed less than REFRESH_S ago."""
        now = self.clock()
        if not self._long_running(now):
            return
        if self._last_printed is not None and now - self._last_printed < REFRESH_S:
            return
        self._print(now)

    def _long_running(self, now: float) -> list[tuple[float, str]]:
        """(seconds running, key) of the cells running longer than LONG_RUNNING_S, longest first."""
        runs = [(now - t, key) for key, t in self.running_since.items() if now - t > LONG_RUNNING_S]
        return sorted(runs, key=lambda r: (-r[0], r[1]))

    def _counts(self, note: str = "") -> str:
        c = Counter(self.state.values())
        return (
            f"cells: {len(self.state)} submitted, {c['pending']} pending, {c['running']} running{note}, "
            f"{c['done']} done, {c['failed']} failed"
        )

    def _print(self, now: float) -> None:
        long = self._long_running(now)
        note = ""
        if long:
            named = [f"{label(key)} for {elapsed(s)}" for s, key in long[:_NAMED]]
            more = f", {len(long) - _NAMED} more over {elapsed(LONG_RUNNING_S)}" if len(long) > _NAMED else ""
            note = f" ({', '.join(named)}{more})"
        self.logger.info(self._counts(note))
        self._last_counts = self._counts()
        self._last_printed = now

    def _line(self) -> None:
        """Print the line if the counts changed."""
        if self._counts() != self._last_counts:
            self._print(self.clock())

    def summary(self, sacct_calls: int) -> None:
        if self.state:
            self.logger.info(f"{self._counts()} (scheduler status queries: {sacct_calls})")
