"""The study's cells: config -> the list of cells, and cell <-> result path.

A cell is one measurement: GPU type x backend x workload x mode (x batch size,
where the workload takes one). Each cell is one Snakemake job and one result
file whose path names the cell, so the file system itself is the index of what
has been measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

# Everything a run writes lives under its results_dir (config key, default "results"):
# raw/ (one result file per cell), summary.csv, tables/, figures/, status.md, superseded/.
# "results" holds the committed paper outputs; the local profile writes "results/local".
DEFAULT_RESULTS_DIR = "results"
RAW_DIR = f"{DEFAULT_RESULTS_DIR}/raw"  # the committed results' raw/ (Cell.path)
# Where the local profile wrote before it had its own results_dir: never part of the committed outputs.
LEGACY_LOCAL_RAW = f"{RAW_DIR}/local"

# What each backend can do at all (not "what works on this node": that is a
# result status). graph_pool has no server, so no serving cells; only vLLM has
# a compile-without-graphs mode.
BACKEND_KINDS = {
    "graph_pool": ("latency", "startup", "check", "capture_study"),
    "vllm": ("latency", "startup", "serving"),
    "torch_compile": ("latency", "startup"),
}
# Kinds that exist only in some modes: the pool's correctness check and capture
# study are about its graphs, so they are cudagraph cells only.
KIND_MODES = {
    "check": ("cudagraph",),
    "capture_study": ("cudagraph",),
}
# Kinds whose cells of one (GPU, backend, mode) share one job and one server (as `vllm bench
# sweep serve` does): a serving cell's measurement is a benchmark against a started server, and
# the start is most of its cost. Each cell still writes its own result file.
SHARED_SERVER_KINDS = {"vllm": ("serving",)}
# Every cell mode, in the order tables show them; the config and result schemas list the same.
MODES = ("eager", "cudagraph", "compile_nograph", "piecewise", "full_decode_only")
BACKEND_MODES = {
    "graph_pool": ("eager", "cudagraph"),
    "vllm": ("eager", "cudagraph", "compile_nograph", "piecewise", "full_decode_only"),
    "torch_compile": ("eager", "cudagraph", "compile_nograph"),
}


def result_path(results_dir: str, gpu: str, backend: str, workload: str, mode: str, point: str) -> str:
    """The one layout of result files: {results_dir}/raw/{gpu}/{backend}/{workload}/{mode}/{point}.json
    (the rules pass "{workload}" etc. to get their output patterns; _PATH_RE reads it back)."""
    return f"{results_dir}/raw/{gpu}/{backend}/{workload}/{mode}/{point}.json"


# {results_dir}/raw/{gpu}/{backend}/{workload}/{mode}/{point}.json, point = bs<N> or "single"
POINT_RE = r"bs[1-9][0-9]*|single"
_PATH_RE = re.compile(
    r"^(?:(?P<results_dir>.+)/)?raw/(?P<gpu>[^/]+)/(?P<backend>[^/]+)/(?P<workload>[^/]+)/"
    rf"(?P<mode>[^/]+)/(?P<point>{POINT_RE})\.json$"
)


class ConfigError(ValueError):
    """The config refers to something it does not define. The message names the key."""


@dataclass(frozen=True, order=True)
class Cell:
    gpu: str
    backend: str
    workload: str
    mode: str
    batch_size: int | None = None

    @property
    def point(self) -> str:
        return "single" if self.batch_size is None else f"bs{self.batch_size}"

    @property
    def path(self) -> str:
        """The result file under the committed results (results/raw/...)."""
        return self.path_in(DEFAULT_RESULTS_DIR)

    def path_in(self, results_dir: str) -> str:
        """The result file under `results_dir` (result_path)."""
        return result_path(results_dir, self.gpu, self.backend, self.workload, self.mode, self.point)

    @property
    def slug(self) -> str:
        """A short name for job names and logs."""
        return f"{self.gpu}.{self.backend}.{self.workload}.{self.mode}.{self.point}"

    def as_dict(self) -> dict:
        return asdict(self)


def split_result_path(path: str) -> tuple[str, Cell]:
    """A result path -> (its results_dir, its cell). Raises ValueError naming the path."""
    norm = path.replace("\\", "/")
    while norm.startswith("./"):
        norm = norm[2:]
    m = _PATH_RE.match(norm)
    if m is None:
        raise ValueError(
            f"{path!r} is not a result path of the form RESULTS_DIR/raw/GPU/BACKEND/WORKLOAD/MODE/bsN.json"
        )
    point = m["point"]
    bs = None if point == "single" else int(point[2:])
    return m["results_dir"] or "", Cell(m["gpu"], m["backend"], m["workload"], m["mode"], bs)


def cell_from_path(path: str) -> Cell:
    """Parse a result path (under any results_dir) back into its cell. Raises ValueError naming the path."""
    return split_result_path(path)[1]


def find_result_files(root: str | os.PathLike = ".", results_dir: str = DEFAULT_RESULTS_DIR) -> list[str]:
    """Every result file under ROOT/RESULTS_DIR/raw, as sorted paths relative to ROOT.

    Only RESULTS_DIR/raw/*/*/*/*/*.json: another results_dir nested inside (results/local
    under results) is never read."""
    root = Path(root)
    return sorted(p.relative_to(root).as_posix() for p in (root / results_dir / "raw").glob("*/*/*/*/*.json"))


def results_dir_of(config: dict) -> str:
    """The config's results_dir (the schema's default where the key is absent), without a trailing slash."""
    return str(config.get("results_dir") or DEFAULT_RESULTS_DIR).rstrip("/")


def legacy_local_results(root: str | os.PathLike = ".", results_dir: str = DEFAULT_RESULTS_DIR) -> str | None:
    """A message if the committed results' raw/ still holds a local run from before the local
    profile had its own results_dir (it would otherwise be mixed into the paper outputs), else None."""
    if Path(results_dir).as_posix() != DEFAULT_RESULTS_DIR or not (Path(root) / LEGACY_LOCAL_RAW).is_dir():
        return None
    return (
        f"{LEGACY_LOCAL_RAW}/ holds results of the local profile from before it wrote under results/local/; "
        f"the committed outputs are built from {RAW_DIR}/ only. Move them to where the local profile now "
        f"keeps them (mkdir -p results/local/raw && mv {LEGACY_LOCAL_RAW} results/local/raw/) or delete them."
    )


def check_config(config: dict) -> None:
    """Cross-references the JSON schema cannot express. Raises ConfigError naming the key."""
    study = config["study"]
    for i, gpu in enumerate(study["gpus"]):
        if gpu not in config["gpu_types"]:
            raise ConfigError(
                f"study.gpus[{i}]: {gpu!r} is not a key of gpu_types (known: {', '.join(sorted(config['gpu_types']))})"
            )
    for i, name in enumerate(study["workloads"]):
        if name not in config["workloads"]:
            raise ConfigError(
                f"study.workloads[{i}]: {name!r} is not a key of workloads "
                f"(known: {', '.join(sorted(config['workloads']))})"
            )
    if study["model"] not in config["models"]:
        raise ConfigError(
            f"study.model: {study['model']!r} is not a key of models (known: {', '.join(sorted(config['models']))})"
        )
    model = config["models"][study["model"]]
    if model["n_heads"] % model["n_kv_heads"]:
        raise ConfigError(
            f"models.{study['model']}: n_heads ({model['n_heads']}) must be a multiple of n_kv_heads ({model['n_kv_heads']})"
        )
    for name in study["workloads"]:
        w = config["workloads"][name]
        if w["kind"] == "latency" and w["input_len"] + w["output_len"] > model["max_seq_len"]:
            raise ConfigError(
                f"workloads.{name}: input_len + output_len = {w['input_len'] + w['output_len']} exceeds "
                f"models.{study['model']}.max_seq_len = {model['max_seq_len']}"
            )
    for gpu in study["gpus"]:
        g = config["gpu_types"][gpu]
        count = g.get("gres", "").rpartition(":")[2]
        if count and int(count) != g["gpus"]:  # the schema filled in its default
            raise ConfigError(
                f"gpu_types.{gpu}: gres {g['gres']!r} asks Slurm for {count} GPU(s) but gpus is {g['gpus']}; "
                "make them agree"
            )
    if not list(iter_cells(config)):
        raise ConfigError("study: the chosen backends, modes and workloads give no cell to measure")


def batch_sizes(config: dict, workload: str) -> list[int] | None:
    """The batch sizes of a workload, or None when it takes none."""
    w = config["workloads"][workload]
    if w["kind"] != "latency":
        return None
    return list(w.get("batch_sizes", config["study"]["batch_sizes"]))


def iter_cells(config: dict) -> Iterator[Cell]:
    """Every cell of the study, in a fixed order."""
    study = config["study"]
    for gpu in study["gpus"]:
        for backend in study["backends"]:
            for workload in study["workloads"]:
                kind = config["workloads"][workload]["kind"]
                if kind not in BACKEND_KINDS[backend]:
                    continue
                for mode in study["modes"]:
                    if mode not in BACKEND_MODES[backend] or mode not in KIND_MODES.get(kind, (mode,)):
                        continue
                    sizes = batch_sizes(config, workload)
                    for bs in sizes if sizes is not None else [None]:
                        yield Cell(gpu, backend, workload, mode, bs)


# A workload name as the rules' wildcard matches it (the config schema allows the same names).
WORKLOAD_RE = r"[a-z0-9][a-z0-9._-]*"


def workload_pattern(exclude: list[str]) -> str:
    """The rules' workload wildcard pattern, except the names in `exclude` (a path segment: the
    name is followed by '/')."""
    if not exclude:
        return WORKLOAD_RE
    return rf"(?!(?:{'|'.join(re.escape(w) for w in exclude)})/){WORKLOAD_RE}"


def shared_server_workloads(config: dict, backend: str) -> list[str]:
    """The study's workloads whose cells of `backend` share one server job per (GPU, mode), in
    study order (SHARED_SERVER_KINDS); the backend's other workloads get a job per cell."""
    kinds = SHARED_SERVER_KINDS.get(backend, ())
    return [w for w in config["study"]["workloads"] if config["workloads"][w]["kind"] in kinds]


def config_hash(config: dict) -> str:
    """A short, stable hash of the whole config (recorded in every result)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def job_spec(config: dict, cell: Cell, config_hash_: str | None = None) -> dict:
    """Everything the job needs to measure one cell, as plain data.

    This is what crosses into the job (through Snakemake params): the job
    never re-reads the config, so what it measured is what the DAG planned.
    """
    study = config["study"]
    workload = dict(config["workloads"][cell.workload])
    if workload.get("request_rate") == "inf":
        workload["request_rate"] = float("inf")
    workload.pop("batch_sizes", None)
    model = dict(config["models"][study["model"]], name=study["model"])
    return {
        "cell": cell.as_dict(),
        "kind": workload.pop("kind"),
        "workload": workload,
        "model": model,
        "measurement": dict(config["measurement"]),
        "graph_pool": dict(config["graph_pool"]),
        "vllm": dict(config["vllm"]),
        "device_match": config["gpu_types"][cell.gpu].get("device_match", ""),
        "config_hash": config_hash_ or config_hash(config),
    }


def slurm_settings(config: dict, gpu: str) -> str:
    """A GPU type's Slurm settings as the JSON string the executor plugin reads
    (resource `slurm`); keys as in config, empty strings meaning "cluster default"."""
    from snakemake_executor_plugin_submitit.submission import SETTING_DEFAULTS

    g = config["gpu_types"][gpu]
    return json.dumps({k: g.get(k, default) for k, default in SETTING_DEFAULTS.items()}, sort_keys=True)
