"""Result files -> one tidy table: read, parse, write as three steps.

`read_results` reads every cell file in one pass and refuses a corrupt or
schema-invalid one with an error naming it; `parse_results` is pure (records in,
DataFrame out) so tests call it directly; `write_summary` writes
`{results_dir}/summary.csv`, one row per cell, and `read_summary` reads it back
into exactly the same table (the tables, figures and status grid start from it).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .cells import DEFAULT_RESULTS_DIR, Cell, cell_from_path, find_result_files
from .host import STEP_MARK
from .results import ResultFileError, check_result, load_result, quick_valid, write_atomic

# model: spec.model.name of the file (every row names the model it measured).
ID_COLUMNS = ["gpu", "model", "backend", "workload", "kind", "mode", "batch_size"]
STATE_COLUMNS = ["status", "reason"]
# The CUDA-graph mode a vLLM cell ran (details.graph_mode.ran), "X (asked Y)" where vLLM downgraded Y.
GRAPH_MODE_COLUMNS = ["graph_mode_ran"]
# The workload's shape, from the spec the job measured with.
SHAPE_COLUMNS = ["input_len", "output_len", "num_prompts", "request_rate"]
# source: "pipeline" (measured by a cell job) or "imported" (converted, numbers unchanged, from an
# older device driver's run; the file records which in details.imported_from).
SOURCES = ("pipeline", "imported")
PROVENANCE_COLUMNS = [
    "source",
    "imported_from",
    "host",
    "cpu_model",
    "gpu_name",
    "driver",
    "torch_version",
    "vllm_version",
    "git_commit",
    "git_dirty",
    "config_hash",
    "slurm_job_id",
    "finished_utc",
    "job_wall_s",
]
FILE_COLUMNS = ["path", "sha256"]
RESERVED = frozenset(
    ID_COLUMNS + STATE_COLUMNS + GRAPH_MODE_COLUMNS + SHAPE_COLUMNS + PROVENANCE_COLUMNS + FILE_COLUMNS
)
SORT_KEYS = ["gpu", "backend", "workload", "mode", "batch_size"]
# Text columns (object dtype, None where absent) and the rest's dtypes, for read_summary.
TEXT_COLUMNS = frozenset(
    ["gpu", "model", "backend", "workload", "kind", "mode", "status", "reason"]
    + GRAPH_MODE_COLUMNS
    + [c for c in PROVENANCE_COLUMNS if c not in ("git_dirty", "job_wall_s")]
    + FILE_COLUMNS
)

# How a cell that has no number is shown in tables and figures: a labelled gap, never a zero.
GAP_LABELS = {"unsupported": "unsupported", "oom": "OOM", "error": "error"}
MISSING = "missing"  # the cell has no result file (yet)
NOT_APPLICABLE = "n/a"  # the cell measured fine but does not report this metric


class AggregationError(ValueError):
    """A result record holds a value the aggregation cannot use. The message names the file."""


# --------------------------------------------------------------------------- read


def _relative(path: str | os.PathLike, root: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        p = p.resolve().relative_to(root.resolve())
    return p.as_posix()


def read_results(root: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Read and check every result file in one pass.

    `paths` are relative to `root` (the folder holding the results_dir) or absolute
    under it. Returns one record per file: {"path": str relative to root,
    "sha256": hex digest of the bytes, "result": the parsed result}. Raises
    ResultFileError naming the first file that is unreadable, not JSON, not
    schema-valid, or not the cell its path names.
    """
    root = Path(root)
    records = []
    for path in paths:
        rel = _relative(path, root)
        full = root / rel
        try:
            data = full.read_bytes()
            result = json.loads(data)
            # Fast path: the compiled check plus the same cell <-> path check as load_result.
            ok = quick_valid(result) and Cell(**result["cell"]) == cell_from_path(rel)
        except Exception:  # anything odd goes to the authoritative reader below
            ok = False
        if not ok:
            # load_result raises ResultFileError naming the file; if the quick check
            # was merely stricter than the schema it returns the result instead.
            result = load_result(full, root)
            data = full.read_bytes()
        records.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "result": result, "checked": True})
    return records


# --------------------------------------------------------------------------- parse


def _fail(path: str, where: str, value) -> AggregationError:
    return AggregationError(f"{path}: unexpected value at {where}: {value!r}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _model_name(path: str, spec) -> str:
    """spec.model.name: the model the cell measured."""
    model = spec.get("model") if isinstance(spec, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    if not isinstance(name, str) or not name:
        raise _fail(path, "spec/model/name", name)
    return name


def _source(path: str, details) -> tuple[str, str | None]:
    """("imported", details.imported_from) for a file converted from an older device driver's run,
    else ("pipeline", None)."""
    imported = details.get("imported_from") if isinstance(details, dict) else None
    if imported is None:
        return "pipeline", None
    if not isinstance(imported, str) or not imported:
        raise _fail(path, "details/imported_from", imported)
    return "imported", imported


def _graph_mode_ran(path: str, details) -> str | None:
    """details.graph_mode of a vLLM cell as one text: the mode it ran, with the one asked for where
    vLLM downgraded it; None where the cell records none."""
    g = details.get("graph_mode") if isinstance(details, dict) else None
    if g is None:
        return None
    if not isinstance(g, dict) or not isinstance(g.get("asked"), str) or not isinstance(g.get("ran"), str | None):
        raise _fail(path, "details/graph_mode", g)
    if g["ran"] is None:
        return None
    return f"{g['ran']} (asked {g['asked']})" if g.get("downgraded") else g["ran"]


def _shape(path: str, spec: dict) -> dict:
    """The workload's shape from the spec; "inf" is how JSON spells an infinite request rate."""
    workload = spec.get("workload", {}) if isinstance(spec, dict) else None
    if not isinstance(workload, dict):
        raise _fail(path, "spec/workload", workload)
    out = {}
    for key in SHAPE_COLUMNS:
        v = workload.get(key)
        if v is None:
            out[key] = math.nan
        elif key == "request_rate" and v == "inf":
            out[key] = math.inf
        elif _is_number(v) and (math.isfinite(v) or key == "request_rate"):
            out[key] = float(v)
        else:
            raise _fail(path, f"spec/workload/{key}", v)
    return out


def _without_step_mark(row: dict, details) -> dict:
    """Kernel metrics of a file whose kernel summary (details.kernels) counted the profiler's
    step marker as a kernel (files written before the fix): the marker's count and time taken
    out, the rest as measured. {} where there is nothing to correct."""
    kern = details.get("kernels") if isinstance(details, dict) else None
    if not isinstance(kern, dict) or STEP_MARK not in (kern.get("by_name") or {}):
        return {}
    n = kern["by_name"][STEP_MARK]
    ms = (kern.get("ms_by_name") or {}).get(STEP_MARK, 0.0)
    out = {}
    if "kernels_per_step" in row:
        out["kernels_per_step"] = row["kernels_per_step"] - n
        if "launch_us_per_kernel" in row and out["kernels_per_step"] > 0:
            out["launch_us_per_kernel"] = (
                row["launch_us_per_kernel"] * row["kernels_per_step"] / out["kernels_per_step"]
            )
    if "gpu_kernel_ms_per_step" in row:
        out["gpu_kernel_ms_per_step"] = row["gpu_kernel_ms_per_step"] - ms
    return out


def _row(record: dict) -> dict:
    """One record -> one flat row. Raises AggregationError naming the file.

    A record that `read_results` did not produce is checked against the result schema first
    (results.check_result: the one schema check); what the schema cannot say is checked here:
    metrics are finite and not named like a column, the spec's workload shape, the model name."""
    path = record.get("path", "<unknown file>")
    res = record.get("result")
    if not record.get("checked"):
        try:
            check_result(path, res)
        except ResultFileError as e:
            raise AggregationError(str(e)) from None
    cell, prov, details = res["cell"], res["provenance"], res["details"]
    row = {key: cell[key] for key in ("gpu", "backend", "workload", "mode", "batch_size")}
    row["model"] = _model_name(path, res["spec"])
    row["kind"], row["status"], row["reason"] = res["kind"], res["status"], res["reason"]
    for name, v in res["metrics"].items():  # finite numbers: check_result saw to that
        if name in RESERVED:
            raise _fail(path, "metrics (name)", name)
        row[name] = float(v)
    row.update(_without_step_mark(row, details))
    row.update(_shape(path, res["spec"]))
    row["source"], row["imported_from"] = _source(path, details)
    row["graph_mode_ran"] = _graph_mode_ran(path, details)
    for key in ("host", "cpu_model", "gpu_name", "driver", "git_commit", "config_hash", "slurm_job_id", "finished_utc"):
        row[key] = prov[key] or None  # "" and None are both "not recorded" (summary.csv cannot tell them apart)
    row["job_wall_s"] = job_wall_s(prov)
    row["torch_version"] = prov["packages"].get("torch") or None
    row["vllm_version"] = prov["packages"].get("vllm") or None
    row["git_dirty"] = prov["git_dirty"]
    row["path"] = path
    row["sha256"] = record.get("sha256")
    return row


def parse_results(records: list[dict]) -> pd.DataFrame:
    """Records (as `read_results` returns them) -> the tidy table, one row per cell.

    Columns: ID_COLUMNS (model: spec.model.name), status, reason, graph_mode_ran, every metric
    (sorted by name, float, NaN where a cell does not report it), SHAPE_COLUMNS,
    PROVENANCE_COLUMNS (source: pipeline / imported), path, sha256. Rows sorted by gpu, backend, workload, mode, batch size.
    Raises AggregationError naming the file and the repr() of any unexpected
    value, and for two files that hold the same cell.
    """
    rows = [_row(r) for r in records]
    seen: dict[tuple, str] = {}
    for row in rows:
        key = tuple(row[k] for k in SORT_KEYS)
        if key in seen:
            raise AggregationError(f"{row['path']}: holds the same cell as {seen[key]}")
        seen[key] = row["path"]
    metric_names = sorted({k for row in rows for k in row} - RESERVED)
    columns = (
        ID_COLUMNS
        + STATE_COLUMNS
        + GRAPH_MODE_COLUMNS
        + metric_names
        + SHAPE_COLUMNS
        + PROVENANCE_COLUMNS
        + FILE_COLUMNS
    )
    df = pd.DataFrame.from_records(rows, columns=columns)
    df["batch_size"] = df["batch_size"].astype("Int64")
    for name in metric_names + SHAPE_COLUMNS:
        df[name] = df[name].astype("float64")
    df["git_dirty"] = df["git_dirty"].astype("boolean")
    _text_as_object(df)
    return df.sort_values(SORT_KEYS, na_position="first", kind="mergesort").reset_index(drop=True)


def _text_as_object(df: pd.DataFrame) -> None:
    """Text columns as plain Python objects, None where absent: one representation whatever
    pandas infers (its string dtypes differ between versions), so a table read back from
    summary.csv equals the one parsed from the result files."""
    for c in df.columns:
        if c in TEXT_COLUMNS:
            df[c] = df[c].astype(object).where(df[c].notna(), None)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a tidy table (everything that is not an id, state, shape or provenance column)."""
    return [c for c in df.columns if c not in RESERVED]


def parse_capture_details(records: list[dict]) -> pd.DataFrame:
    """Graph capture cost, as the pipeline's cells record it, one row per point of figure 4.

    - latency and startup cells in cudagraph mode: details["capture"] = {"capture_sizes",
      "per_size": [{"size", "warmup_s", "capture_s", "memory_mb", "pool_mb"}], "memory_mb_total",
      "static_io_mb", "capture_s_total"}. Each gives one "cell" row (the pool's totals) and
      "cumulative" rows: the running totals as the pool adds its sizes in capture order
      (largest first), capture time = warm-up + capture of each size.
    - capture_study cells: details["capture_study"] = [{"set", "sizes", "n_graphs",
      "graph_memory_mb", "capture_s_total", "per_size" (or null), ...}], one "study" row per
      set, each captured by a fresh pool on its own.

    Only cells with status ok. Columns: CAPTURE_COLUMNS. Raises AggregationError naming the
    file for a malformed entry.
    """
    rows = []
    for rec in records:
        res, path = rec["result"], rec["path"]
        if res.get("status") != "ok" or res.get("cell", {}).get("mode") != "cudagraph":
            continue
        details, cell = res.get("details") or {}, res["cell"]
        base = {
            "gpu": cell["gpu"],
            "model": _model_name(path, res.get("spec")),
            "backend": cell["backend"],
            "workload": cell["workload"],
            "batch_size": cell.get("batch_size"),
            "path": path,
        }
        kind = res.get("kind")
        if kind in ("latency", "startup") and details.get("capture") is not None:
            rows += [dict(base, **r) for r in pool_capture(path, details["capture"])]
        elif kind == "capture_study":
            rows += [dict(base, **r) for r in study_entries(path, details.get("capture_study"))]
    return capture_frame(rows)


# waits_for_gpu: why the cell's step waits for the GPU ("" if it does not): the host calls inside
# the profiled step that wait for it (details.launches.host_waits). A CPU enqueue time that could
# not be measured (details.cpu_enqueue.error) is no such evidence: a step of more launches than
# the driver queues ahead of a busy GPU (torch_compile's eager step: 1,256) blocks there too.
LAUNCH_COLUMNS = ["gpu", "model", "backend", "workload", "mode", "batch_size", "i", "kind", "name", "gpu_us",
                  "waits_for_gpu", "path"]  # fmt: skip


def _waits_for_gpu(seq: dict) -> str:
    waits = seq.get("host_waits") or []
    return f"it calls {', '.join(waits)} (host calls that wait for the GPU)" if waits else ""


def parse_launch_details(records: list[dict]) -> pd.DataFrame:
    """One row per device op of every ok result with details.launches (cells that launch kernel by
    kernel: eager, compile_nograph), in issue order: the queue model's input. Columns: LAUNCH_COLUMNS."""
    rows = []
    for rec in records:
        res, path = rec["result"], rec["path"]
        seq = (res.get("details") or {}).get("launches")
        if res.get("status") != "ok" or not seq:
            continue
        cell = res["cell"]
        base = (
            cell["gpu"],
            _model_name(path, res.get("spec")),
            cell["backend"],
            cell["workload"],
            cell["mode"],
            cell.get("batch_size"),
        )
        names = seq["names"]
        waits = _waits_for_gpu(seq)
        for i, (kind, name, d) in enumerate(zip(seq["kind"], seq["name"], seq["gpu_us"], strict=True)):
            rows.append((*base, i, kind, names[name], float(d), waits, path))
    df = pd.DataFrame.from_records(rows, columns=LAUNCH_COLUMNS)
    df["batch_size"] = df["batch_size"].astype("Int64")
    return df


CAPTURE_COLUMNS = [
    "gpu",
    "model",
    "backend",
    "workload",
    "batch_size",
    "series",  # "cumulative", "cell" or "study"
    "label",  # the capture set: "1..256", "1,4,16", ...
    "n_graphs",
    "capture_s",
    "graph_memory_mb",
    "path",
]


def capture_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=CAPTURE_COLUMNS)
    df["batch_size"] = df["batch_size"].astype("Int64")
    df["n_graphs"] = df["n_graphs"].astype("int64")
    for c in ("capture_s", "graph_memory_mb"):
        df[c] = df[c].astype("float64")
    keys = ["gpu", "model", "backend", "series", "path", "n_graphs"]
    return df.sort_values(keys, kind="mergesort").reset_index(drop=True)


def _number(path: str, where: str, v, *, signed: bool = False) -> float:
    """A finite number (>= 0 unless signed: a device-memory delta is a measurement, whatever its sign)."""
    if not _is_number(v) or not math.isfinite(v) or (v < 0 and not signed):
        raise _fail(path, where, v)
    return float(v)


def _size(path: str, where: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise _fail(path, where, v)
    return v


def sizes_label(sizes) -> str:
    """A short name for a set of capture sizes: 1..256, 1,2,4..64, 1,4,16."""
    s = sorted(sizes)
    if len(s) <= 3:
        return ",".join(map(str, s))
    if s == list(range(s[0], s[-1] + 1)):
        return f"{s[0]}..{s[-1]}"
    if all(b == 2 * a for a, b in zip(s, s[1:], strict=False)):
        return f"{s[0]},{s[1]},{s[2]}..{s[-1]}"
    return f"{s[0]},{s[1]}..{s[-1]} ({len(s)} sizes)"


def _per_size(path: str, where: str, per_size) -> list[dict]:
    if not isinstance(per_size, list) or not per_size:
        raise _fail(path, where, per_size)
    out = []
    for i, entry in enumerate(per_size):
        if not isinstance(entry, dict):
            raise _fail(path, f"{where}/{i}", entry)
        out.append(
            {
                "size": _size(path, f"{where}/{i}/size", entry.get("size")),
                "time_s": _number(path, f"{where}/{i}/warmup_s", entry.get("warmup_s"))
                + _number(path, f"{where}/{i}/capture_s", entry.get("capture_s")),
                "memory_mb": _number(path, f"{where}/{i}/memory_mb", entry.get("memory_mb"), signed=True),
            }
        )
    return out


def pool_capture(path: str, capture) -> list[dict]:
    """A cell's details.capture -> its "cell" row (totals) and "cumulative" rows (capture order)."""
    where = "details/capture"
    if not isinstance(capture, dict):
        raise _fail(path, where, capture)
    entries = _per_size(path, f"{where}/per_size", capture.get("per_size"))
    sizes = [e["size"] for e in entries]
    entries = sorted(entries, key=lambda e: -e["size"])  # the pool captures its largest size first
    rows, t, mem = [], 0.0, 0.0
    for n, entry in enumerate(entries, start=1):
        t += entry["time_s"]
        mem += entry["memory_mb"]
        label = sizes_label([e["size"] for e in entries[:n]])
        rows.append({"series": "cumulative", "label": label, "n_graphs": n, "capture_s": t, "graph_memory_mb": mem})
    rows.append(
        {
            "series": "cell",
            "label": sizes_label(sizes),
            "n_graphs": len(sizes),
            "capture_s": _number(path, f"{where}/capture_s_total", capture.get("capture_s_total")),
            "graph_memory_mb": _number(path, f"{where}/memory_mb_total", capture.get("memory_mb_total"), signed=True),
        }
    )
    return rows


def study_entries(path: str, study) -> list[dict]:
    """A capture_study cell's details.capture_study -> one "study" row per capture set."""
    where = "details/capture_study"
    if not isinstance(study, list) or not study:
        raise _fail(path, where, study)
    rows = []
    for i, entry in enumerate(study):
        if not isinstance(entry, dict) or not isinstance(entry.get("set"), str) or not entry["set"]:
            raise _fail(path, f"{where}/{i}", entry)
        rows.append(
            {
                "series": "study",
                "label": entry["set"],
                "n_graphs": _size(path, f"{where}/{i}/n_graphs", entry.get("n_graphs")),
                "capture_s": _number(path, f"{where}/{i}/capture_s_total", entry.get("capture_s_total")),
                "graph_memory_mb": _number(
                    path, f"{where}/{i}/graph_memory_mb", entry.get("graph_memory_mb"), signed=True
                ),
            }
        )
    return rows


# --------------------------------------------------------------------------- lookups shared by tables and figures


def cell_key(row) -> tuple:
    """(gpu, backend, workload, mode, batch_size or None) of a tidy-table row."""
    bs = row["batch_size"]
    return (row["gpu"], row["backend"], row["workload"], row["mode"], None if pd.isna(bs) else int(bs))


def index_cells(df: pd.DataFrame) -> dict[tuple, dict]:
    """cell_key -> the row as a dict, for lookups by cell."""
    return {cell_key(r): r for r in df.to_dict("records")}


def value_or_gap(row: dict | None, metric: str) -> float | str:
    """A cell's metric as a float, or the label of the gap: missing / unsupported / OOM / error / n/a."""
    if row is None:
        return MISSING
    if row["status"] != "ok":
        return GAP_LABELS[row["status"]]
    v = row.get(metric)
    return NOT_APPLICABLE if v is None or pd.isna(v) else float(v)


class Lookup:
    """Cell lookups that remember which result files were consulted: all of them (`used`, for
    provenance sidecars) and those since `begin()` (`consulted()`, to name one output row's model
    and source)."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.cells = index_cells(df)
        self.used: set[str] = set()
        self._since: list[dict] = []

    def begin(self) -> None:
        """Start one output row: `consulted()` then lists the cells looked up from here on."""
        self._since = []

    def consulted(self) -> list[dict]:
        return list(self._since)

    def row(self, key: tuple) -> dict | None:
        r = self.cells.get(key)
        if r is not None:
            self.used.add(r["path"])
            self._since.append(r)
        return r

    def value(self, key: tuple, metric: str) -> float | str:
        return value_or_gap(self.row(key), metric)


IMPORTED_LABEL = "imported (older drivers)"


def models_of(rows: Iterable[dict]) -> str | None:
    """The model(s) the rows measured, e.g. "llama-3.1-8b" (two models: "a + b"); None for no rows."""
    names = sorted({r["model"] for r in rows})
    return " + ".join(names) if names else None


def source_of(rows: Iterable[dict]) -> str | None:
    """Where the rows' numbers come from: "pipeline", "imported (older drivers)", or both; None for no rows."""
    labels = sorted({IMPORTED_LABEL if r["source"] == "imported" else r["source"] for r in rows})
    return " + ".join(labels) if labels else None


def group_rows(df: pd.DataFrame, gpu: str, backend: str | None = None) -> list[dict]:
    """Every row of a GPU (and backend)."""
    sel = df["gpu"] == gpu
    if backend is not None:
        sel &= df["backend"] == backend
    return df[sel].to_dict("records")


def sidecar(name: str, df: pd.DataFrame, used: Iterable[str], code: tuple | None, **extra) -> str:
    """The provenance JSON of one output: the code's (commit, dirty) that built it
    (results.code_identity), the results' commits and config hashes, and the result files
    (path + sha256, sorted) it was drawn from."""
    commit, dirty = code or (None, None)
    used = set(used)
    rows = df[df["path"].isin(used)].sort_values("path")
    doc = {
        "output": name,
        "code_commit": commit,
        "code_dirty": dirty,
        "result_git_commits": sorted(set(rows["git_commit"].dropna())),
        "config_hashes": sorted(set(rows["config_hash"].dropna())),
        "result_files": [
            {"path": p, "sha256": None if pd.isna(h) else h} for p, h in zip(rows["path"], rows["sha256"], strict=True)
        ],
        **extra,
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- write


def write_summary(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the tidy table as CSV (full precision, empty where a value is absent)."""
    return write_atomic(path, df.to_csv(index=False, lineterminator="\n"))


def job_wall_s(prov: dict) -> float | None:
    """Seconds the cell's job spent on it: provenance.wall_s where recorded, else finished - started
    (whole seconds); None when neither can be read."""
    import datetime as dt

    wall = prov.get("wall_s")
    if _is_number(wall) and math.isfinite(wall):
        return float(wall)
    try:
        started = dt.datetime.fromisoformat(prov["started_utc"])
        finished = dt.datetime.fromisoformat(prov["finished_utc"])
    except (KeyError, TypeError, ValueError):
        return None
    return max((finished - started).total_seconds(), 0.0)


def measured_s(kind: str, backend: str, metrics: dict) -> float | None:
    """Seconds of a cell's job spent in the measurement itself, from its metrics: what the cell
    recorded as measured_s (the timed decode steps and end-to-end runs of a latency cell), else
    for a start-up cell the start-up it measures, for a serving cell the benchmark's run, for a
    vLLM latency cell its timed iterations (mean latency x iterations); None where the cell's
    metrics say nothing (older files). The rest of the job is model build, engine start, compile."""

    def num(name):
        v = metrics.get(name)
        return float(v) if isinstance(v, int | float) and v == v else None

    if num("measured_s") is not None:
        return num("measured_s")
    if kind == "startup":
        return num("startup_s")
    if kind == "serving":
        return num("serving_duration_s")
    if kind == "latency" and backend == "vllm" and num("e2e_latency_s_mean") and num("n_iters"):
        return num("e2e_latency_s_mean") * num("n_iters")
    return None


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """summary.csv -> the tidy table exactly as `parse_results` built it (same columns, dtypes, values).

    Text columns stay text (a commit or job id of digits is not a number), floats round-trip
    exactly, and only an empty field is "absent". Raises AggregationError naming the file if it
    is not a summary table."""
    path = Path(path)
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (OSError, ValueError) as e:
        raise AggregationError(f"{path}: not a readable summary table ({e})") from e
    missing = [c for c in ID_COLUMNS + STATE_COLUMNS + GRAPH_MODE_COLUMNS + SHAPE_COLUMNS + PROVENANCE_COLUMNS + FILE_COLUMNS
               if c not in header]  # fmt: skip
    if missing:
        raise AggregationError(f"{path}: not a summary table of this version (no column {', '.join(missing)})")
    dtypes: dict = {c: "object" for c in header if c in TEXT_COLUMNS}
    dtypes |= {"batch_size": "Int64", "git_dirty": "boolean"}
    dtypes |= {c: "float64" for c in header if c not in dtypes}
    # pandas 3 parses floats exactly by default (and deprecates the option); pandas 2 needs it.
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    df = pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values={c: [""] for c in header}, **exact)
    _text_as_object(df)
    return df


def check_records_match(records: list[dict], df: pd.DataFrame, summary: str | os.PathLike) -> None:
    """Refuse result files whose bytes are not those summary.csv was built from (changed since)."""
    recorded = dict(zip(df["path"], df["sha256"], strict=True))
    for rec in records:
        want = recorded.get(rec["path"])
        if want is None:
            raise AggregationError(f"{rec['path']}: not in {summary}; rebuild the summary first")
        if want != rec["sha256"]:
            raise AggregationError(f"{rec['path']}: changed since {summary} was built; rebuild the summary first")


def aggregate(
    root: str | os.PathLike = ".", paths: Iterable[str] | None = None, *, results_dir: str = DEFAULT_RESULTS_DIR
) -> tuple[list[dict], pd.DataFrame]:
    """read_results + parse_results over `paths` (default: every result file under ROOT/RESULTS_DIR/raw)."""
    records = read_results(root, find_result_files(root, results_dir) if paths is None else paths)
    return records, parse_results(records)
