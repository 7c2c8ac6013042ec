# Config validation, the cell list, and the helpers the rules call.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The rules' Python package lives next to the rules; make it importable even
# when the project is not pip-installed (e.g. a bare checkout on a GPU node).
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from cudagraph_bench import cells as cgb_cells  # noqa: E402
from cudagraph_bench import config as cgb_config  # noqa: E402
from cudagraph_bench.outputs import (  # noqa: E402
    FIGURES_DIR,
    STATUS_FILE,
    SUMMARY_FILE,
    TABLES_DIR,
    figure_outputs,
    table_outputs,
)

try:
    # one line per problem: the key path, the bad value, what is allowed
    cgb_config.validate(config)
except cgb_cells.ConfigError as e:
    raise WorkflowError(f"Error in config:\n{e}")

CELLS = list(cgb_cells.iter_cells(config))
CONFIG_HASH = cgb_cells.config_hash(config)
# Everything this run writes lives under RESULTS_DIR: raw/, summary.csv, tables/,
# figures/, status.md, superseded/ ("results": the committed paper outputs;
# the local profile's config/local.yaml sets "results/local").
RESULTS_DIR = cgb_cells.results_dir_of(config)
if workflow.is_main_process:
    _legacy = cgb_cells.legacy_local_results(".", RESULTS_DIR)
    if _legacy:
        raise WorkflowError(_legacy)

if config.get("rerun_errors"):
    # Moving results while the Snakefile is parsed would happen on a dry run too.
    raise WorkflowError(
        "rerun_errors is a command now: python -m cudagraph_bench rerun-errors --config "
        "<this run's config files> moves the error/oom results aside; then run Snakemake again"
    )


wildcard_constraints:
    workload=cgb_cells.WORKLOAD_RE,
    mode="|".join(cgb_cells.MODES),
    point=cgb_cells.POINT_RE,


def cell_results():
    """Every cell's result file, in the study's order."""
    return [c.path_in(RESULTS_DIR) for c in CELLS]


def _result_files():
    # The study's cells, then any other result already under RESULTS_DIR/raw
    # (e.g. GPUs measured by earlier runs), so they sit side by side in the
    # tables. Found once, in the main process only (cell jobs never need it).
    study = cell_results()
    if not workflow.is_main_process:
        return study
    known = set(study)
    found = cgb_cells.find_result_files(".", RESULTS_DIR)
    return study + [p for p in found if p not in known]


# Every result file the summary reads; those whose capture details figure 4
# reads (cudagraph cells); those whose launch sequences the queue model reads
# (the other cells: kernels launched one by one).
RESULT_FILES = _result_files()
CAPTURE_FILES = [
    p for p in RESULT_FILES if cgb_cells.cell_from_path(p).mode == "cudagraph"
]
_CAPTURE_SET = set(CAPTURE_FILES)
LAUNCH_FILES = [p for p in RESULT_FILES if p not in _CAPTURE_SET]


# GPU type -> its Slurm settings as one JSON string, computed once.
SLURM_SETTINGS = {
    gpu: cgb_cells.slurm_settings(config, gpu) for gpu in config["gpu_types"]
}


def final_outputs():
    # The cells are targets themselves: Snakemake skips a missing intermediate
    # file when what is built from it is up to date, so a deleted result would
    # otherwise never be measured again.
    return [
        *cell_results(),
        f"{RESULTS_DIR}/{SUMMARY_FILE}",
        *table_outputs(f"{RESULTS_DIR}/{TABLES_DIR}"),
        *figure_outputs(f"{RESULTS_DIR}/{FIGURES_DIR}"),
        f"{RESULTS_DIR}/{STATUS_FILE}",
    ]


onsuccess:
    # The one-screen summary of where the outputs are (main process only).
    from cudagraph_bench.__main__ import main as cgb_main

    cgb_main(["outputs", "--results", RESULTS_DIR])
