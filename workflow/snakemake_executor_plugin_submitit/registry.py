"""On-disk record of submitted jobs, keyed by the cell's output file.

If the submitting process dies (a login-node disconnect) while cells are queued
or running, the next run finds their job ids here and re-attaches instead of
submitting a second GPU job for the same cell.
"""

from __future__ import annotations

import json
from pathlib import Path

from cudagraph_bench.results import write_atomic

DEFAULT_FOLDER = ".snakemake/submitit"  # the executor's folder setting, unless a profile sets another
REGISTRY_FILE = "jobs.json"  # in that folder


class JobRegistry:
    """output path -> {"job_id", "launcher", "folder"}; written atomically after each change."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self._data: dict[str, dict] = json.loads(self.path.read_text())
        except FileNotFoundError:
            self._data = {}
        except (OSError, json.JSONDecodeError):
            # A damaged registry only costs the re-attach: start afresh, keep the old file.
            self.path.replace(self.path.with_suffix(".damaged.json"))
            self._data = {}

    def get(self, key: str) -> dict | None:
        return self._data.get(key)

    def items(self):
        return self._data.items()

    def record(self, key: str, job_id: str, launcher: str, folder: str) -> None:
        self._data[key] = {"job_id": job_id, "launcher": launcher, "folder": folder}
        self._save()

    def forget(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        write_atomic(self.path, json.dumps(self._data, indent=1, sort_keys=True))
