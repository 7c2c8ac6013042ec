"""One result file per cell: the format, its provenance, atomic writes, checked reads.

The job writes the file with `write_result` (temporary file + rename, so a crash
never leaves half a file where the aggregation reads); the aggregation reads it
back with `load_result`, which refuses anything that does not match the schema.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import jsonschema
import yaml

from .cells import Cell, cell_from_path

SCHEMA_VERSION = 1
STATUSES = ("ok", "unsupported", "oom", "error")
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "result.schema.yaml"  # package data
REPO_ROOT = Path(__file__).resolve().parents[2]

# Package versions worth knowing when comparing numbers across runs.
_PACKAGES = ("torch", "vllm", "triton", "snakemake", "submitit", "numpy", "pandas", "transformers")


class ResultFileError(ValueError):
    """A result file is unreadable or does not match the schema. The message names the file."""


@functools.cache
def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(_schema())


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def cpu_model() -> str:
    # Eager decode is bound by the host CPU's launch speed: the same GPU behind a
    # slower CPU gave a 28 ms eager step instead of 16.7 ms, so always record it.
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


COMMIT_ENV = "CGB_GIT_COMMIT"  # a copy of the code without .git (e.g. sent to a GPU machine) names its commit here


def code_version() -> tuple[str | None, bool | None, str]:
    """(commit, dirty, where it was read) of this repository's code.

    Only a git work tree whose top level is this repository counts: a copy of the code inside
    another repository (or none) must not report that repository's commit. Without one, the
    commit comes from $CGB_GIT_COMMIT (dirty from $CGB_GIT_DIRTY, "1" or "0"), else it is None."""
    top = _git("rev-parse", "--show-toplevel")
    if top is not None and Path(top).resolve() == REPO_ROOT.resolve():
        status = _git("status", "--porcelain", "--untracked-files=no")
        return _git("rev-parse", "HEAD"), None if status is None else bool(status), "git"
    if os.environ.get(COMMIT_ENV):
        dirty = os.environ.get("CGB_GIT_DIRTY")
        return os.environ[COMMIT_ENV], None if dirty is None else dirty == "1", COMMIT_ENV
    return None, None, "none"


def code_identity() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code that builds an output, as a result file's provenance records
    them (git_commit, git_dirty); each None if unknown."""
    commit, dirty, _ = code_version()
    return commit, dirty


def _gpu_info() -> dict:
    info = {"gpu_name": None, "gpu_count": 0, "driver": None, "cuda": None}
    try:
        import torch
    except ImportError:
        return info
    info["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        info["gpu_count"] = torch.cuda.device_count()
        info["gpu_name"] = torch.cuda.get_device_name(0)
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            info["driver"] = out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            info["driver"] = None
    return info


def provenance(config_hash: str, started_utc: str) -> dict:
    """Host, hardware, software and code version of the running job."""
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    commit, dirty, source = code_version()
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu_model(),
        "started_utc": started_utc,
        "finished_utc": utc_now(),
        "python": sys.version.split()[0],
        "packages": packages,
        "git_commit": commit,
        "git_dirty": dirty,
        "git_source": source,
        "launcher": os.environ.get("SUBMITIT_EXECUTOR") or ("slurm" if os.environ.get("SLURM_JOB_ID") else None),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "config_hash": config_hash,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        **_gpu_info(),
    }


def _not_finite(metrics: dict) -> list[str]:
    """The metrics that are not finite numbers. JSON's NaN and Infinity pass the schema's
    "number", but a NaN or inf metric is a bug in the measurement, never a value."""
    return [
        k for k, v in metrics.items() if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
    ]


def _finite(metrics: dict) -> dict:
    """Drop nothing silently: refuse a result whose metrics are not all finite numbers."""
    if bad := _not_finite(metrics):
        raise ValueError(f"metric {bad[0]!r} = {metrics[bad[0]]!r} is not a finite number")
    return metrics


def make_result(
    cell: Cell, kind: str, status: str, *, reason=None, metrics=None, details=None, spec=None, prov: dict
) -> dict:
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    return {
        "schema_version": SCHEMA_VERSION,
        "cell": cell.as_dict(),
        "kind": kind,
        "status": status,
        "reason": reason,
        "metrics": _finite(dict(metrics or {})),
        "details": details or {},
        "spec": spec or {},
        "provenance": prov,
    }


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
    compiled checker ~0.01 ms. A result it rejects goes on to `check_result`, whose
    jsonschema error is what the user sees.
    """
    schema = _schema()
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

    def slow_check(doc: dict) -> bool:
        return _validator().is_valid(doc)

    slow_check.validator = "jsonschema (install fastjsonschema for a ~30x faster check)"
    return slow_check


def quick_valid(result) -> bool:
    """Whether `result` is a valid result (check_result), answered fast with no message:
    check_result says where it breaks. Never True for what check_result rejects."""
    return _quick_check()(result) and not _not_finite(result["metrics"])


def schema_checker() -> str:
    """Which validator `quick_valid` uses."""
    return _quick_check().validator


def check_result(path, result: dict) -> None:
    """The one definition of a valid result file: the result schema, and finite metrics. Raise
    ResultFileError naming `path` and the place `result` breaks the schema (the most relevant
    error, jsonschema's best_match, where there are several), or the metric that is not finite."""
    e = jsonschema.exceptions.best_match(_validator().iter_errors(result))  # the most relevant, not the first
    if e is not None:
        where = "/".join(map(str, e.path)) or "(top level)"
        raise ResultFileError(f"{path}: does not match the result schema at {where}: {e.message}")
    if bad := _not_finite(result["metrics"]):
        raise ResultFileError(f"{path}: metrics/{bad[0]} is {result['metrics'][bad[0]]!r}, not a finite number")


def write_result(path: str | os.PathLike, result: dict) -> None:
    """Validate, then write atomically (write_atomic)."""
    check_result(path, result)
    write_atomic(path, json.dumps(_inf_to_str(result), indent=1, sort_keys=True) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write data so that readers see the old file or the whole new one, never a part: a temporary
    file in the same folder, fsync, rename. The file gets the permissions of the user's umask (as
    open() would give it), not mkstemp's 0600, so a group sharing a project directory can read it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _inf_to_str(o):
    # JSON has no infinity; request_rate=inf is spelled "inf" as in the config.
    if isinstance(o, dict):
        return {k: _inf_to_str(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_inf_to_str(v) for v in o]
    if isinstance(o, float) and math.isinf(o):
        return "inf"
    return o


def load_result(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """Read one result file and check it: JSON, schema, and that it is the cell its path names.

    `root` is the folder that holds results/raw (default: the path is relative to it).
    Raises ResultFileError naming the file.
    """
    path = Path(path)
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultFileError(f"{path}: not a readable JSON result file ({e})") from e
    check_result(path, result)
    rel = path.relative_to(root) if root is not None else path
    try:
        expected = cell_from_path(str(rel))
    except ValueError as e:
        raise ResultFileError(f"{path}: {e}") from e
    if Cell(**result["cell"]) != expected:
        raise ResultFileError(f"{path}: holds cell {result['cell']!r}, but its path names {expected.as_dict()!r}")
    return result
