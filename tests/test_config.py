"""The config schema and cross-checks: each class of bad value is refused, naming the key."""

import copy
from pathlib import Path

import pytest
import yaml
from cudagraph_bench import cells
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


@pytest.fixture
def config():
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def refused(config) -> str:
    with pytest.raises(WorkflowError) as e:
        validate(config, SCHEMA)
    return str(e.value) + str(getattr(e.value, "args", ""))


def test_shipped_config_is_valid(config):
    validate(copy.deepcopy(config), SCHEMA)
    cells.check_config(config)


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda c: c["study"].__setitem__("batch_sizes", [1, 0]), "batch_sizes"),  # out of range
        (lambda c: c["study"].__setitem__("batch_sizes", "1,4"), "batch_sizes"),  # wrong type
        (lambda c: c["study"].__setitem__("modes", ["eager", "graphs"]), "graphs"),  # not in enum
        (lambda c: c["study"].__setitem__("batchsizes", [1]), "batchsizes"),  # unknown (typo'd) key
        (lambda c: c["study"].pop("model"), "model"),  # missing key
        (lambda c: c["gpu_types"]["h200"].__setitem__("partition", "gpu h200"), "partition"),  # space
        (lambda c: c["gpu_types"]["h200"].__setitem__("partition", "gpu-h200;rm"), "partition"),  # shell char
        (lambda c: c["gpu_types"]["h200"].__setitem__("gres", "gpu:H200:one"), "gres"),  # malformed GRES
        (lambda c: c["gpu_types"]["h200"].__setitem__("account", "$(whoami)"), "account"),
        (lambda c: c["gpu_types"]["h200"].__setitem__("time_min", 0), "time_min"),
        (lambda c: c["gpu_types"]["h200"]["extra_sbatch"].__setitem__("exclusive", "yes please"), "exclusive"),
        (lambda c: c["workloads"]["latency"].__setitem__("input_len", -1), "input_len"),
        (lambda c: c["workloads"]["latency"].__setitem__("request_rate", 6), "request_rate"),  # not a latency key
        (lambda c: c["workloads"]["serving_rr6"].__setitem__("request_rate", "fast"), "request_rate"),
        (lambda c: c["models"]["tiny"].__setitem__("dtype", "fp8"), "dtype"),
        (lambda c: c["vllm"].__setitem__("gpu_memory_utilization", 1.5), "gpu_memory_utilization"),
    ],
)
def test_schema_refuses_bad_values_naming_the_key(config, mutate, expect):
    mutate(config)
    assert expect in refused(config)


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda c: c["study"].__setitem__("gpus", ["h200", "h300"]), "study.gpus[1]: 'h300'"),
        (lambda c: c["study"].__setitem__("workloads", ["latency", "nope"]), "study.workloads[1]: 'nope'"),
        (lambda c: c["study"].__setitem__("model", "llama-9"), "study.model: 'llama-9'"),
        (lambda c: c["models"]["llama-3.1-8b"].__setitem__("n_kv_heads", 5), "n_kv_heads"),
        (lambda c: c["workloads"]["latency"].__setitem__("input_len", 5000), "max_seq_len"),
    ],
)
def test_cross_references_are_checked(config, mutate, expect):
    mutate(config)
    with pytest.raises(cells.ConfigError, match=None) as e:
        cells.check_config(config)
    assert expect in str(e.value)
