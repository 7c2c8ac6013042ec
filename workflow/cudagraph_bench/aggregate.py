"""Result files -> one tidy table: read, parse, write as three steps.

`read_results` reads every cell file in one pass and refuses a corrupt or
schema-invalid one with an error naming it; `parse_results` is pure (records in,
DataFrame out) so tests call it directly; `write_summary` writes
`results/summary.csv`, one row per cell.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd
import yaml

from .cells import RAW_DIR, Cell, cell_from_path
from .results import SCHEMA_PATH, STATUSES, ResultFileError, load_result

ID_COLUMNS = ["gpu", "backend", "workload", "kind", "mode", "batch_size"]
STATE_COLUMNS = ["status", "reason"]
# The workload's shape, from the spec the job measured with.
SHAPE_COLUMNS = ["input_len", "output_len", "num_prompts", "request_rate"]
PROVENANCE_COLUMNS = [
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
]
FILE_COLUMNS = ["path", "sha256"]
RESERVED = frozenset(ID_COLUMNS + STATE_COLUMNS + SHAPE_COLUMNS + PROVENANCE_COLUMNS + FILE_COLUMNS)
SORT_KEYS = ["gpu", "backend", "workload", "mode", "batch_size"]
KINDS = ("latency", "startup", "serving")

# How a cell that has no number is shown in tables and figures: a labelled gap, never a zero.
GAP_LABELS = {"unsupported": "unsupported", "oom": "OOM", "error": "error"}
MISSING = "missing"  # the cell has no result file (yet)
NOT_APPLICABLE = "n/a"  # the cell measured fine but does not report this metric


class AggregationError(ValueError):
    """A result record holds a value the aggregation cannot use. The message names the file."""


# --------------------------------------------------------------------------- read


def find_result_files(root: str | os.PathLike = ".") -> list[str]:
    """Every result file under ROOT/results/raw, as sorted paths relative to ROOT."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in (root / RAW_DIR).glob("*/*/*/*/*.json"))


# 2020-12 keywords that fastjsonschema (draft-07) does not implement, or reads
# differently ($ref with siblings, the list form of items). If the schema ever
# uses one, the fast path would silently skip it, so it switches itself off.
# Keywords neither draft knows are ignored by both validators alike.
_NOT_DRAFT7 = frozenset(
    "$anchor $dynamicRef $dynamicAnchor $recursiveRef $recursiveAnchor $vocabulary $ref prefixItems "
    "dependentRequired dependentSchemas unevaluatedItems unevaluatedProperties minContains maxContains "
    "contentSchema".split()
)


def _fast_compatible(node) -> bool:
    if isinstance(node, list):
        return all(_fast_compatible(v) for v in node)
    if not isinstance(node, dict):
        return True
    if _NOT_DRAFT7 & node.keys() or isinstance(node.get("items"), list):
        return False
    return all(_fast_compatible(v) for v in node.values())


@functools.cache
def _quick_check() -> Callable[[dict], bool]:
    """A validator that answers only valid / not valid, compiled once.

    jsonschema takes ~0.4 ms per result file (4 s for 10,000); fastjsonschema's
    compiled checker ~0.01 ms. Either way a file it rejects goes on to
    `load_result`, whose jsonschema error is what the user sees.
    """
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    try:
        import fastjsonschema
    except ImportError:
        fastjsonschema = None
    compiled = None
    if fastjsonschema is not None and _fast_compatible(schema):
        try:
            compiled = fastjsonschema.compile(schema)
        except Exception:  # a schema it cannot compile: use jsonschema, only slower
            compiled = None
    if compiled is not None:

        def check(doc: dict) -> bool:
            try:
                compiled(doc)
            except fastjsonschema.JsonSchemaException:
                return False
            return True

        check.validator = "fastjsonschema"
        return check
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)

    def slow_check(doc: dict) -> bool:
        return validator.is_valid(doc)

    slow_check.validator = "jsonschema (install fastjsonschema for a ~30x faster check)"
    return slow_check


def schema_checker() -> str:
    """Which validator `read_results` uses for its first check of each file."""
    return _quick_check().validator


def _relative(path: str | os.PathLike, root: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        p = p.resolve().relative_to(root.resolve())
    return p.as_posix()


def read_results(root: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Read and check every result file in one pass.

    `paths` are relative to `root` (the folder holding results/raw) or absolute
    under it. Returns one record per file: {"path": str relative to root,
    "sha256": hex digest of the bytes, "result": the parsed result}. Raises
    ResultFileError naming the first file that is unreadable, not JSON, not
    schema-valid, or not the cell its path names.
    """
    root = Path(root)
    check = _quick_check()
    records = []
    for path in paths:
        rel = _relative(path, root)
        full = root / rel
        try:
            data = full.read_bytes()
            result = json.loads(data)
            # Fast path: the compiled check plus the same cell <-> path check as load_result.
            ok = check(result) and Cell(**result["cell"]) == cell_from_path(rel)
        except Exception:  # anything odd goes to the authoritative reader below
            ok = False
        if not ok:
            # load_result raises ResultFileError naming the file; if the quick check
            # was merely stricter than the schema it returns the result instead.
            result = load_result(full, root)
            data = full.read_bytes()
        records.append({"path": rel, "sha256": hashlib.sha256(data).hexdigest(), "result": result})
    return records


# --------------------------------------------------------------------------- parse


def _fail(path: str, where: str, value) -> AggregationError:
    return AggregationError(f"{path}: unexpected value at {where}: {value!r}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _text_or_none(path: str, where: str, v) -> str | None:
    if v is not None and not isinstance(v, str):
        raise _fail(path, where, v)
    return v


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


def _row(record: dict) -> dict:
    """One record -> one flat row. Raises AggregationError naming the file."""
    path = record.get("path", "<unknown file>")
    res = record.get("result")
    if not isinstance(res, dict):
        raise _fail(path, "(top level)", res)
    cell = res.get("cell")
    if not isinstance(cell, dict):
        raise _fail(path, "cell", cell)
    row = {}
    for key in ("gpu", "backend", "workload", "mode"):
        v = cell.get(key)
        if not isinstance(v, str) or not v:
            raise _fail(path, f"cell/{key}", v)
        row[key] = v
    bs = cell.get("batch_size")
    if bs is not None and (not isinstance(bs, int) or isinstance(bs, bool) or bs < 1):
        raise _fail(path, "cell/batch_size", bs)
    row["batch_size"] = bs
    if res.get("kind") not in KINDS:
        raise _fail(path, "kind", res.get("kind"))
    row["kind"] = res["kind"]
    status, reason = res.get("status"), res.get("reason")
    if status not in STATUSES:
        raise _fail(path, "status", status)
    if (status == "ok") != (reason is None) or (reason is not None and not (isinstance(reason, str) and reason)):
        raise _fail(path, "reason", reason)
    row["status"], row["reason"] = status, reason
    metrics = res.get("metrics")
    if not isinstance(metrics, dict) or (status != "ok" and metrics):
        raise _fail(path, "metrics", metrics)
    for name, v in metrics.items():
        # A malformed timing must fail loudly, never become NaN.
        if name in RESERVED or not isinstance(name, str):
            raise _fail(path, "metrics (name)", name)
        if not _is_number(v) or not math.isfinite(v):
            raise _fail(path, f"metrics/{name}", v)
        row[name] = float(v)
    row.update(_shape(path, res.get("spec", {})))
    prov = res.get("provenance")
    if not isinstance(prov, dict):
        raise _fail(path, "provenance", prov)
    packages = prov.get("packages") or {}
    if not isinstance(packages, dict):
        raise _fail(path, "provenance/packages", packages)
    for key in ("host", "cpu_model", "gpu_name", "driver", "git_commit", "config_hash", "slurm_job_id", "finished_utc"):
        row[key] = _text_or_none(path, f"provenance/{key}", prov.get(key))
    row["torch_version"] = _text_or_none(path, "provenance/packages/torch", packages.get("torch"))
    row["vllm_version"] = _text_or_none(path, "provenance/packages/vllm", packages.get("vllm"))
    dirty = prov.get("git_dirty")
    if dirty is not None and not isinstance(dirty, bool):
        raise _fail(path, "provenance/git_dirty", dirty)
    row["git_dirty"] = dirty
    row["path"] = path
    row["sha256"] = record.get("sha256")
    return row


def parse_results(records: list[dict]) -> pd.DataFrame:
    """Records (as `read_results` returns them) -> the tidy table, one row per cell.

    Columns: ID_COLUMNS, status, reason, every metric (sorted by name, float,
    NaN where a cell does not report it), SHAPE_COLUMNS, PROVENANCE_COLUMNS,
    path, sha256. Rows sorted by gpu, backend, workload, mode, batch size.
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
    columns = ID_COLUMNS + STATE_COLUMNS + metric_names + SHAPE_COLUMNS + PROVENANCE_COLUMNS + FILE_COLUMNS
    df = pd.DataFrame.from_records(rows, columns=columns)
    df["batch_size"] = df["batch_size"].astype("Int64")
    for name in metric_names + SHAPE_COLUMNS:
        df[name] = df[name].astype("float64")
    df["git_dirty"] = df["git_dirty"].astype("boolean")
    return df.sort_values(SORT_KEYS, na_position="first", kind="mergesort").reset_index(drop=True)


def metric_columns(df: pd.DataFrame) -> list[str]:
    """The metric columns of a tidy table (everything that is not an id, state, shape or provenance column)."""
    return [c for c in df.columns if c not in RESERVED]


def parse_capture_details(records: list[dict]) -> pd.DataFrame:
    """Per-size capture cost and capture-size studies from graph-pool startup cells' details.

    Reads, when present, details["per_size"] (a list of {"size", "capture_s",
    "graph_memory_mb"} in capture order) and details["capture_size_study"] (a
    list of {"capture_sizes", "capture_s_total", "graph_memory_mb"}). Returns
    one row per captured set: gpu, backend, source ("cumulative" or "study"),
    capture_sizes (a tuple), n_sizes, capture_s, graph_memory_mb, path.
    Raises AggregationError naming the file for a malformed entry.
    """
    rows = []
    for rec in records:
        res, path = rec["result"], rec["path"]
        if res.get("kind") != "startup" or res.get("status") != "ok":
            continue
        details, cell = res.get("details") or {}, res["cell"]
        base = {"gpu": cell["gpu"], "backend": cell["backend"], "mode": cell["mode"], "path": path}
        per_size = details.get("per_size")
        if per_size is not None:
            rows += [dict(base, **r) for r in cumulative_capture(path, per_size)]
        study = details.get("capture_size_study")
        if study is not None:
            rows += [dict(base, **r) for r in study_entries(path, study)]
    return capture_frame(rows)


CAPTURE_COLUMNS = [
    "gpu",
    "backend",
    "mode",
    "source",
    "capture_sizes",
    "n_sizes",
    "capture_s",
    "graph_memory_mb",
    "path",
]


def capture_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=CAPTURE_COLUMNS)
    return df.sort_values(["gpu", "backend", "mode", "source", "n_sizes"], kind="mergesort").reset_index(drop=True)


def _number(path: str, where: str, v) -> float:
    if not _is_number(v) or not math.isfinite(v) or v < 0:
        raise _fail(path, where, v)
    return float(v)


def cumulative_capture(path: str, per_size) -> list[dict]:
    """Per-size entries (capture order) -> the running totals after each size is added."""
    if not isinstance(per_size, list):
        raise _fail(path, "details/per_size", per_size)
    rows, sizes, t, mem = [], [], 0.0, 0.0
    for i, entry in enumerate(per_size):
        if not isinstance(entry, dict) or not isinstance(entry.get("size"), int) or isinstance(entry["size"], bool):
            raise _fail(path, f"details/per_size/{i}", entry)
        sizes.append(entry["size"])
        t += _number(path, f"details/per_size/{i}/capture_s", entry.get("capture_s"))
        mem += _number(path, f"details/per_size/{i}/graph_memory_mb", entry.get("graph_memory_mb"))
        rows.append(
            {
                "source": "cumulative",
                "capture_sizes": tuple(sorted(sizes)),
                "n_sizes": len(sizes),
                "capture_s": t,
                "graph_memory_mb": mem,
            }
        )
    return rows


def study_entries(path: str, study) -> list[dict]:
    """Capture-size study entries -> rows; each entry is one captured set measured on its own."""
    if not isinstance(study, list):
        raise _fail(path, "capture_size_study", study)
    rows = []
    for i, entry in enumerate(study):
        sizes = entry.get("capture_sizes") if isinstance(entry, dict) else None
        if not isinstance(sizes, list) or not sizes or not all(isinstance(s, int) and s >= 1 for s in sizes):
            raise _fail(path, f"capture_size_study/{i}", entry)
        rows.append(
            {
                "source": "study",
                "capture_sizes": tuple(sorted(sizes)),
                "n_sizes": len(sizes),
                "capture_s": _number(path, f"capture_size_study/{i}/capture_s_total", entry.get("capture_s_total")),
                "graph_memory_mb": _number(
                    path, f"capture_size_study/{i}/graph_memory_mb", entry.get("graph_memory_mb")
                ),
            }
        )
    return rows


def read_capture_studies(root: str | os.PathLike = ".") -> pd.DataFrame:
    """Capture-size study files under ROOT/results (outside results/raw), as capture rows.

    A study file is JSON named `*capture_size_study*.json`:
    {"gpu": str, "backend": str, "capture_size_study": [entries as in
    `parse_capture_details`]}. Raises ResultFileError / AggregationError naming the file.
    """
    root = Path(root)
    rows = []
    raw = (root / RAW_DIR).resolve()
    for p in sorted((root / "results").rglob("*capture_size_study*.json")):
        if p.resolve().is_relative_to(raw):
            continue
        rel = p.relative_to(root).as_posix()
        try:
            doc = json.loads(p.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ResultFileError(f"{rel}: not a readable capture-size study ({e})") from e
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("gpu", "backend")):
            raise _fail(rel, "(top level)", doc)
        base = {"gpu": doc["gpu"], "backend": doc["backend"], "mode": "cudagraph", "path": rel}
        rows += [dict(base, **r) for r in study_entries(rel, doc.get("capture_size_study"))]
    return capture_frame(rows)


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
    """Cell lookups that remember which result files were consulted (for provenance sidecars)."""

    def __init__(self, df: pd.DataFrame):
        self.df = df
        self.cells = index_cells(df)
        self.used: set[str] = set()

    def row(self, key: tuple) -> dict | None:
        r = self.cells.get(key)
        if r is not None:
            self.used.add(r["path"])
        return r

    def value(self, key: tuple, metric: str) -> float | str:
        return value_or_gap(self.row(key), metric)


def sidecar(name: str, df: pd.DataFrame, used: Iterable[str], code_commit: str | None, **extra) -> str:
    """The provenance JSON of one output: code commit, the results' commits and config
    hashes, and the result files (path + sha256, sorted) it was drawn from."""
    used = set(used)
    rows = df[df["path"].isin(used)].sort_values("path")
    doc = {
        "output": name,
        "code_commit": code_commit,
        "result_git_commits": sorted(set(rows["git_commit"].dropna())),
        "config_hashes": sorted(set(rows["config_hash"].dropna())),
        "result_files": [
            {"path": p, "sha256": None if pd.isna(h) else h} for p, h in zip(rows["path"], rows["sha256"], strict=True)
        ],
        **extra,
    }
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


# --------------------------------------------------------------------------- write


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write bytes or text to a temporary file in the same folder, then rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_summary(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the tidy table as CSV (full precision, empty where a value is absent)."""
    return write_atomic(path, df.to_csv(index=False, lineterminator="\n"))


def aggregate(root: str | os.PathLike = ".", paths: Iterable[str] | None = None) -> tuple[list[dict], pd.DataFrame]:
    """read_results + parse_results over `paths` (default: every result file under root)."""
    records = read_results(root, find_result_files(root) if paths is None else paths)
    return records, parse_results(records)
