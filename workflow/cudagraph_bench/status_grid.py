"""Where a study stands: per workload, the GPU x mode x batch-size grid of cell states.

A cell's state comes from its result file under the config's results_dir
(done / unsupported / oom / error, with the reason; or from that run's
summary.csv, which the `status` rule reads), else from the submitit executor's
job registry
(`.snakemake/submitit/jobs.json`: result path -> {"job_id", "launcher"}) and,
for Slurm jobs, one `squeue` call for all of them (pending / running, with the
job id), else it is missing. The grid prints as Markdown, which reads as plain
text, and `write_status` writes the same text to {results_dir}/status.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from snakemake_executor_plugin_submitit.registry import DEFAULT_FOLDER, REGISTRY_FILE
from snakemake_executor_plugin_submitit.status import PENDING_STATES, RUNNING_STATES

from .aggregate import GAP_LABELS, job_wall_s, measured_s
from .cells import DEFAULT_RESULTS_DIR, Cell, batch_sizes, iter_cells, results_dir_of
from .outputs import STATUS_FILE
from .results import ResultFileError, load_result, write_atomic

STATUS_MD = f"{DEFAULT_RESULTS_DIR}/{STATUS_FILE}"
# squeue's %T states, folded into what the grid shows.
RESULT_STATES = {"ok": "done", **GAP_LABELS}  # a result's status as the grid shows it
# The order states are counted in the summary line.
STATE_ORDER = ("done", "running", "pending", "submitted", "unsupported", "OOM", "error", "corrupt", "lost", "missing")


@dataclass(frozen=True)
class CellState:
    """One cell's state; `detail` is the reason or message, `job` e.g. "slurm 1234", `wall_s` the
    job time its result records (aggregate.job_wall_s), `measured_s` the part of it spent in the
    measurement itself (aggregate.measured_s)."""

    cell: Cell
    state: str
    detail: str | None = None
    job: str | None = None
    wall_s: float | None = None
    measured_s: float | None = None


def read_registry(root: str | os.PathLike, folder: str = DEFAULT_FOLDER) -> tuple[dict[str, dict], str | None]:
    """The executor's job registry (result path -> entry) in its folder (the executor setting
    submitit-folder, relative to ROOT unless absolute), and a warning if it could not be read."""
    path = Path(root) / folder / REGISTRY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return {}, f"job registry {path} unreadable ({e}); in-flight jobs are shown as missing"
    if not isinstance(data, dict):
        return {}, f"job registry {path} is not a JSON object; in-flight jobs are shown as missing"
    out = {}
    for key, entry in data.items():
        p = Path(key)
        if p.is_absolute():  # the executor may record absolute output paths
            try:
                p = p.resolve().relative_to(Path(root).resolve())
            except ValueError:
                continue
        if isinstance(entry, dict) and entry.get("job_id") is not None:
            out[p.as_posix()] = entry
    return out, None


def query_squeue(job_ids: Iterable[str], run: Callable = subprocess.run) -> dict[str, str] | None:
    """One squeue call for all ids: {job id: Slurm state} for those still queued or running.

    Returns None when squeue is absent or fails (the grid then says "submitted").
    """
    ids = sorted(set(job_ids))
    if not ids or shutil.which("squeue") is None:
        return None
    cmd = ["squeue", "--noheader", "--format=%i|%T", f"--jobs={','.join(ids)}"]
    try:
        out = run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        # With a single id, squeue fails once slurmctld has forgotten the job: it is not queued.
        return {} if "Invalid job id" in (out.stderr or "") else None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            states[job_id] = state.strip()
    return states


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _result_state(cell: Cell, root: Path, results_dir: str) -> CellState | None:
    path = root / cell.path_in(results_dir)
    if not path.exists():
        return None
    try:
        res = load_result(path, root)
    except ResultFileError as e:
        return CellState(cell, "corrupt", str(e))
    measured = measured_s(res["kind"], cell.backend, res["metrics"])
    return CellState(
        cell, RESULT_STATES[res["status"]], res["reason"], _job_of(res), job_wall_s(res["provenance"]), measured
    )


def _job_of(res: dict) -> str | None:
    job = res["provenance"].get("slurm_job_id")
    return f"slurm {job}" if job else None


def _summary_state(cell: Cell, row: dict | None) -> CellState | None:
    """A cell's state from its summary.csv row (status, reason, slurm_job_id), or None without one."""
    if row is None:
        return None
    job, wall = row.get("slurm_job_id"), row.get("job_wall_s")
    wall = None if wall is None or wall != wall else float(wall)  # NaN: not recorded
    measured = measured_s(row["kind"], cell.backend, row)
    return CellState(
        cell, RESULT_STATES[row["status"]], row.get("reason"), f"slurm {job}" if job else None, wall, measured
    )


def _job_state(cell: Cell, entry: dict, squeue: dict[str, str] | None) -> CellState:
    job_id, launcher = str(entry["job_id"]), entry.get("launcher", "slurm")
    job = f"{launcher} {job_id}"
    if launcher == "local":
        if _pid_alive(job_id.split("_")[0]):
            return CellState(cell, "running", None, job)
        return CellState(cell, "lost", "the local job ended without writing a result", job)
    if squeue is None:
        return CellState(cell, "submitted", "squeue unavailable: state unknown", job)
    state = squeue.get(job_id)
    if state is None:
        return CellState(cell, "lost", "not in the Slurm queue and no result: see the job's log", job)
    if state in RUNNING_STATES:
        return CellState(cell, "running", None, job)
    if state in PENDING_STATES:
        return CellState(cell, "pending", None, job)
    return CellState(cell, state.lower(), None, job)


def cell_states(
    config: dict,
    root: str | os.PathLike = ".",
    *,
    squeue: Callable = query_squeue,
    results_dir: str | None = None,
    summary=None,
    folder: str = DEFAULT_FOLDER,
) -> tuple[list[CellState], list[str]]:
    """Every cell of the study with its state, in the study's order, and any warnings.

    Results are read under ROOT/RESULTS_DIR (default: the config's results_dir), in-flight jobs
    from the executor's registry in FOLDER (its submitit-folder setting). With
    `summary` (that run's summary.csv as aggregate.read_summary returns it) the results'
    states come from its rows and no result file, job registry or queue is consulted."""
    root = Path(root)
    results_dir = results_dir_of(config) if results_dir is None else results_dir
    cells = list(iter_cells(config))
    if summary is not None:
        by_path = {r["path"]: r for r in summary.to_dict("records")}
        states = [_summary_state(c, by_path.get(c.path_in(results_dir))) or CellState(c, "missing") for c in cells]
        return states, []
    registry, warning = read_registry(root, folder)
    warnings = [warning] if warning else []
    paths = {c: c.path_in(results_dir) for c in cells}
    states = [_result_state(cell, root, results_dir) for cell in cells]
    waiting = [c for c, s in zip(cells, states, strict=True) if s is None and paths[c] in registry]
    slurm_ids = [str(registry[paths[c]]["job_id"]) for c in waiting if registry[paths[c]].get("launcher") != "local"]
    queue = squeue(slurm_ids) if slurm_ids else {}
    if slurm_ids and queue is None:
        warnings.append("squeue unavailable: Slurm jobs are shown as submitted, state unknown")
    out = []
    for cell, s in zip(cells, states, strict=True):
        if s is None:
            entry = registry.get(paths[cell])
            s = _job_state(cell, entry, queue) if entry else CellState(cell, "missing")
        out.append(s)
    return out, warnings


def _label(s: CellState, notes: dict[str, int]) -> str:
    text = s.state
    if s.state in ("running", "pending", "submitted", "lost") and s.job:
        text += f" ({s.job})"
    if s.detail and s.state not in ("done", "running", "pending"):
        key = f"{s.state}: {s.detail}"
        notes.setdefault(key, len(notes) + 1)
        text += f" [{notes[key]}]"
    return text


def render_status(config: dict, states: list[CellState], warnings: Iterable[str] = ()) -> str:
    """The grid as Markdown: a table per workload (rows GPU x backend x mode, columns batch size),
    reasons as numbered notes below, and a count per state."""
    by_cell = {s.cell: s for s in states}
    notes: dict[str, int] = {}
    counts: dict[str, int] = {}
    for s in states:
        counts[s.state] = counts.get(s.state, 0) + 1
    order = [k for k in STATE_ORDER if k in counts] + sorted(set(counts) - set(STATE_ORDER))
    lines = ["# Study status", ""]
    lines.append(", ".join(f"{counts[k]} {k}" for k in order) + f" (of {len(states)} cells)")
    lines += [f"\nWarning: {w}" for w in warnings]
    for workload in config["study"]["workloads"]:
        cells = [c for c in by_cell if c.workload == workload]
        if not cells:
            continue
        sizes = batch_sizes(config, workload)
        points = [f"bs={b}" for b in sizes] if sizes is not None else ["cell"]
        lines += ["", f"## {workload}", "", "| GPU | Backend | Mode | " + " | ".join(points) + " |"]
        lines.append("|---|---|---|" + "---|" * len(points))
        rows: dict[tuple, list[str]] = {}
        for c in cells:  # iter_cells order: GPU, backend, mode, batch size
            rows.setdefault((c.gpu, c.backend, c.mode), []).append(_label(by_cell[c], notes))
        for (gpu, backend, mode), labels in rows.items():
            lines.append(f"| {gpu} | {backend} | {mode} | " + " | ".join(labels) + " |")
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"[{n}] {text}".replace("\n", " ") for text, n in sorted(notes.items(), key=lambda kv: kv[1])]
    return "\n".join(lines) + "\n"


def status_text(config: dict, root: str | os.PathLike = ".", **where) -> str:
    """The status grid of the study in `config`, for the results under ROOT/RESULTS_DIR, followed by
    the job time its measured cells took. `where`: cell_states's keywords (squeue, results_dir,
    summary, folder)."""
    states, warnings = cell_states(config, root, **where)
    return render_status(config, states, warnings) + render_job_time(states)


def render_job_time(states: list[CellState]) -> str:
    """Job time of the measured cells per GPU type, backend, workload and mode, in hours: on a GPU
    type each is GPU time (a cell holds its GPU(s) for its whole job), here without the job's start
    (Python, imports) and its wait in the queue; and the share of it spent outside the measurement
    (model build, engine start, compilation), where every cell of the group says how long it measured."""
    times = [s for s in states if s.wall_s is not None]
    if not times:
        return ""
    groups: dict[tuple, list[CellState]] = {}
    for s in times:
        groups.setdefault((s.cell.gpu, s.cell.backend, s.cell.workload, s.cell.mode), []).append(s)
    lines = ["", "## Job time of the measured cells", "",
             "| GPU | Backend | Workload | Mode | Cells | Hours | Seconds | Outside the measurement |",
             "|---|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    for (gpu, backend, workload, mode), cells in sorted(groups.items()):
        walls = sum(s.wall_s for s in cells)
        lines.append(
            f"| {gpu} | {backend} | {workload} | {mode} | {len(cells)} | {walls / 3600:.3f} | {walls:.0f} | "
            f"{_outside(cells)} |"
        )
    per_backend: dict[tuple, list[CellState]] = {}
    for s in times:
        per_backend.setdefault((s.cell.gpu, s.cell.backend), []).append(s)
    total = sum(s.wall_s for s in times)
    lines += ["", "Per GPU type and backend: " + ", ".join(
        f"{gpu} {backend} {sum(s.wall_s for s in cells) / 3600:.3f} h (outside the measurement: {_outside(cells)})"
        for (gpu, backend), cells in sorted(per_backend.items())
    ) + f"; in all {total / 3600:.3f} h ({total:.0f} s), from each result's provenance (wall_s, else finished - started). "
        "Outside the measurement: the share of the job time not spent in the timed steps, end-to-end runs, "
        "benchmark iterations, serving run or start-up the cell measures, over the cells that say how long "
        "they measured ('k of n cells' where some do not, such as older files and checks); — where none does."]  # fmt: skip
    return "\n".join(lines) + "\n"


def _outside(cells: list[CellState]) -> str:
    """The share of job time outside the measurement, over the cells that record what they measured."""
    known = [s for s in cells if s.measured_s is not None]
    wall = sum(s.wall_s for s in known)
    if not known or wall <= 0:
        return "—"
    share = f"{100 * (1 - min(sum(s.measured_s for s in known), wall) / wall):.0f}%"
    return share if len(known) == len(cells) else f"{share} ({len(known)} of {len(cells)} cells)"


def write_status(config: dict, root: str | os.PathLike = ".", *, results_dir=None, **where) -> str:
    """Write the grid to ROOT/RESULTS_DIR/status.md (default: the config's results_dir); returns the
    text. `where`: cell_states's other keywords (squeue, summary, folder)."""
    results_dir = results_dir_of(config) if results_dir is None else results_dir
    text = status_text(config, root, results_dir=results_dir, **where)
    write_atomic(Path(root) / results_dir / STATUS_FILE, text)
    return text


def print_status(config: dict, root: str | os.PathLike = ".", *, file=None, **where) -> str:
    """Print the grid (and write RESULTS_DIR/status.md, the same text); returns it. `where`:
    cell_states's keywords (squeue, results_dir, folder)."""
    text = write_status(config, root, **where)
    print(text, end="", file=file or sys.stdout)
    return text
