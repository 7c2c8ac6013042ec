"""The study's cells: config -> the list of cells, and cell <-> result path.

A cell is one measurement: GPU type x backend x workload x mode (x batch size,
where the workload takes one). Each cell is one Snakemake job and one result
file whose path names the cell, so the file system itself is the index of what
has been measured.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass

RAW_DIR = "results/raw"

# What each backend can do at all (not "what works on this node": that is a
# result status). graph_pool has no server, so no serving cells; only vLLM has
# a compile-without-graphs mode.
BACKEND_KINDS = {
    "graph_pool": ("latency", "startup"),
    "vllm": ("latency", "startup", "serving"),
}
BACKEND_MODES = {
    "graph_pool": ("eager", "cudagraph"),
    "vllm": ("eager", "cudagraph", "compile_nograph"),
}

# results/raw/{gpu}/{backend}/{workload}/{mode}/{point}.json, point = bs<N> or "single"
_PATH_RE = re.compile(
    r"^results/raw/(?P<gpu>[^/]+)/(?P<backend>[^/]+)/(?P<workload>[^/]+)/"
    r"(?P<mode>[^/]+)/(?P<point>bs[1-9][0-9]*|single)\.json$"
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
        return f"{RAW_DIR}/{self.gpu}/{self.backend}/{self.workload}/{self.mode}/{self.point}.json"

    @property
    def slug(self) -> str:
        """A short name for job names and logs."""
        return f"{self.gpu}.{self.backend}.{self.workload}.{self.mode}.{self.point}"

    def as_dict(self) -> dict:
        return asdict(self)


def cell_from_path(path: str) -> Cell:
    """Parse a result path back into its cell. Raises ValueError naming the path."""
    m = _PATH_RE.match(path.replace("\\", "/").lstrip("./"))
    if m is None:
        raise ValueError(f"{path!r} is not a result path of the form {RAW_DIR}/GPU/BACKEND/WORKLOAD/MODE/bsN.json")
    point = m["point"]
    bs = None if point == "single" else int(point[2:])
    return Cell(m["gpu"], m["backend"], m["workload"], m["mode"], bs)


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
                if config["workloads"][workload]["kind"] not in BACKEND_KINDS[backend]:
                    continue
                for mode in study["modes"]:
                    if mode not in BACKEND_MODES[backend]:
                        continue
                    sizes = batch_sizes(config, workload)
                    for bs in sizes if sizes is not None else [None]:
                        yield Cell(gpu, backend, workload, mode, bs)


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
    g = config["gpu_types"][gpu]
    keys = ("partition", "gres", "account", "qos", "constraint", "time_min", "cpus", "mem_gb", "extra_sbatch")
    return json.dumps({k: g.get(k, "" if k != "extra_sbatch" else {}) for k in keys}, sort_keys=True)
