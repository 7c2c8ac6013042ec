"""Progress on the terminal: cells submitted / pending / running / done / failed, as they change."""

from __future__ import annotations

from collections import Counter

from . import status

# Scheduler words -> the few states a user cares about.
_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "SUSPENDED", "PREEMPTED"}


class Progress:
    def __init__(self, logger):
        self.logger = logger
        self.state: dict[str, str] = {}  # output path -> pending | running | done | failed
        self._last_line = ""

    def _set(self, key: str, state: str) -> bool:
        changed = self.state.get(key) != state
        self.state[key] = state
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

    def _line(self) -> None:
        c = Counter(self.state.values())
        line = (
            f"cells: {len(self.state)} submitted, {c['pending']} pending, {c['running']} running, "
            f"{c['done']} done, {c['failed']} failed"
        )
        if line != self._last_line:
            self._last_line = line
            self.logger.info(line)

    def summary(self, sacct_calls: int) -> None:
        if self.state:
            self.logger.info(f"{self._last_line} (scheduler status queries: {sacct_calls})")
