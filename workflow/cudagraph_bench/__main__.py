"""Command line: python -m cudagraph_bench VERB [options].

Verbs live in the VERBS table (name -> Verb); add one by writing a function
`(args) -> exit code` and, if it takes options, a function that adds them to
its sub-parser.

Every verb works on one results folder: the config's `results_dir` (default
config: `results`, the committed paper outputs, built from `results/raw` only;
with `--config config/config.yaml config/local.yaml`: the local run's
`results/local`), or the folder `--results` names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .cells import DEFAULT_RESULTS_DIR, find_result_files, legacy_local_results, results_dir_of

DEFAULT_CONFIG = "config/config.yaml"


@dataclass(frozen=True)
class Verb:
    run: Callable[[argparse.Namespace], int]
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None


def load_config(path: str | Path | list) -> dict:
    """Read the study config (several files: later ones laid over earlier ones, as
    Snakemake's --configfiles do) and check it; exits with one line per problem."""
    from .cells import ConfigError
    from .config import load

    try:
        return load(path if isinstance(path, list) else [path])
    except ConfigError as e:
        raise SystemExit(f"error: config: {e}") from None


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        nargs="+",
        default=[DEFAULT_CONFIG],
        help=f"the study config; several files are laid over each other in order (default: {DEFAULT_CONFIG})",
    )


def _add_submitit_folder(p: argparse.ArgumentParser) -> None:
    from snakemake_executor_plugin_submitit.registry import DEFAULT_FOLDER

    p.add_argument(
        "--submitit-folder",
        default=DEFAULT_FOLDER,
        help="the executor's folder, where its job registry says which cells are in flight: the value "
        f"given to snakemake --submitit-folder, if any (default: {DEFAULT_FOLDER})",
    )


def _add_results(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--results",
        default=None,
        help="the results folder, holding raw/ (default: results_dir of the config, e.g. results; "
        "the local profile's is results/local)",
    )


def locate_results(results: str | None, config: dict | None) -> tuple[Path, str]:
    """(root, results_dir): the folder paths are recorded relative to (the repository root, i.e.
    the working directory) and the results folder within it.

    None: the config's results_dir. A relative path is taken from the working directory. An
    absolute path elsewhere (e.g. a copy of the results) is split at its nearest folder named
    "results", so a copy of results/raw/... records the same paths as the repository does."""
    if results is None:
        return Path("."), results_dir_of(config or {})
    path = Path(results)
    if not path.is_absolute() and ".." not in path.parts:
        return Path("."), path.as_posix().rstrip("/") or "."
    path = path.resolve()
    cwd = Path.cwd().resolve()
    if path != cwd and path.is_relative_to(cwd):
        return cwd, path.relative_to(cwd).as_posix()
    for folder in (path, *path.parents):
        if folder.name == "results":
            return folder.parent, path.relative_to(folder.parent).as_posix()
    return path.parent, path.name


def _config_if_present(paths: list[str]) -> dict | None:
    """The config if every file exists (else None, with a note)."""
    if all(Path(c).exists() for c in paths):
        return load_config(paths)
    print(f"note: {' '.join(paths)} not found", file=sys.stderr)
    return None


# --------------------------------------------------------------------------- verbs


def cmd_check(args: argparse.Namespace) -> int:
    """Check config files (YAML syntax with file and line, schema, cross-references) and count the cells."""
    from .cells import iter_cells

    config = load_config(args.config)
    cells = list(iter_cells(config))
    print(f"config OK ({' + '.join(args.config)}): {len(cells)} cells, results in {results_dir_of(config)}/")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status grid of the config's study and write it to {results_dir}/status.md."""
    from .status_grid import print_status

    config = load_config(args.config)
    root, results_dir = locate_results(args.results, config)
    print_status(config, root, results_dir=results_dir, folder=args.submitit_folder)
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    """Rebuild summary.csv, every table and every figure of one results folder from its raw/ only."""
    from .aggregate import AggregationError
    from .rebuild import rebuild
    from .results import ResultFileError, code_identity

    config = _config_if_present(args.config)
    root, results_dir = locate_results(args.results, config)
    legacy = legacy_local_results(root, results_dir)
    if legacy:
        print(f"error: {legacy}", file=sys.stderr)
        return 1
    capture_sizes: list[int] = []
    if config is not None:
        capture_sizes = list(config["graph_pool"]["capture_sizes"])
    else:
        print("note: without a config the padding-waste figure has no capture sizes", file=sys.stderr)
    try:
        written = rebuild(root, results_dir=results_dir, capture_sizes=capture_sizes, code=code_identity())
    except (ResultFileError, AggregationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for kind, paths in written.items():
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files in {Path(paths[0]).parent}/"
        print(f"{kind}: {where}")
    return 0


def cmd_rerun_errors(args: argparse.Namespace) -> int:
    """Move the study's results with status error or oom aside, so the next run measures those cells again."""
    from .cells import iter_cells
    from .rerun import set_aside_failed

    config = load_config(args.config)
    root, results_dir = locate_results(args.results, config)
    moved = set_aside_failed([c.path_in(results_dir) for c in iter_cells(config)], root, results_dir=results_dir)
    for line in moved:
        print(f"moved aside: {line}")
    configs = " ".join(args.config)
    print(f"{len(moved)} cell(s) to measure again: run Snakemake again (--configfiles {configs})" if moved
          else "no result with status error or oom: nothing to measure again")  # fmt: skip
    return 0


def cmd_outputs(args: argparse.Namespace) -> int:
    """One screen: where the outputs are, and how many cells are in each state."""
    config = None if args.results is not None else _config_if_present(args.config)
    print(outputs_text(*locate_results(args.results, config)), end="")
    return 0


def outputs_text(root: Path, results_dir: str = DEFAULT_RESULTS_DIR) -> str:
    from .outputs import FIGURE_FORMATS, FIGURE_NAMES, FIGURES_DIR, STATUS_FILE, SUMMARY_FILE, TABLE_NAMES, TABLES_DIR

    results = root / results_dir
    option = "" if results_dir == DEFAULT_RESULTS_DIR else f" --results {results_dir}"
    lines = [f"cudagraph-bench outputs in {results.as_posix()}/", ""]
    summary = results / SUMMARY_FILE
    lines.append(f"  raw/           {len(find_result_files(root, results_dir))} result files, one per cell")
    if summary.exists():
        import pandas as pd

        counts = pd.read_csv(summary, usecols=["status"])["status"].value_counts()
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"  summary.csv    one row per cell: {states or 'no cells'}")
    else:
        lines.append(f"  summary.csv    not built yet: python -m cudagraph_bench rebuild{option}")

    def present(folder: str, names, exts) -> str:
        have = [n for n in names if all((results / folder / f"{n}.{e}").exists() for e in exts)]
        return f"{len(have)} of {len(names)} built ({' '.join('.' + e for e in exts)})"

    readable = ("csv", "md", "tex")  # a table's forms a reader opens (its .json sidecar aside)
    lines.append(f"  tables/        {present(TABLES_DIR, TABLE_NAMES, readable)}: {', '.join(TABLE_NAMES)}")
    lines.append(f"  figures/       {present(FIGURES_DIR, FIGURE_NAMES, FIGURE_FORMATS)}")
    for name in FIGURE_NAMES:
        lines.append(f"                   {name}")
    status = results / STATUS_FILE
    lines.append(
        f"  status.md      {'the study grid' if status.exists() else 'not written yet: python -m cudagraph_bench status'}"
        + ("" if status.exists() or not option else " --config <the run's config files>")
    )
    legacy = legacy_local_results(root, results_dir)
    if legacy:
        lines += ["", f"warning: {legacy}"]
    return "\n".join(lines) + "\n"


VERBS: dict[str, Verb] = {
    "check": Verb(
        cmd_check, "check the study config and count its cells (errors name the file and line, or the key)", _add_config
    ),
    "status": Verb(
        cmd_status,
        "per workload, the GPU x mode x batch-size grid of cell states (also written to {results_dir}/status.md)",
        lambda p: (_add_config(p), _add_results(p), _add_submitit_folder(p)),
    ),
    "rebuild": Verb(
        cmd_rebuild,
        "rebuild summary.csv, every table and figure of the results folder from its raw/ only "
        "(no GPU, Slurm or vLLM needed)",
        lambda p: (_add_results(p), _add_config(p)),
    ),
    "rerun-errors": Verb(
        cmd_rerun_errors,
        "move the study's results with status error or oom to {results_dir}/superseded/<time>/ (kept), "
        "so that the next run measures those cells again",
        lambda p: (_add_config(p), _add_results(p)),
    ),
    "outputs": Verb(cmd_outputs, "one screen: where the outputs are", lambda p: (_add_results(p), _add_config(p))),
}
# Verbs of earlier releases: "summary" named a rule, a file and this verb at once.
RENAMED = {"figures": "rebuild", "summary": "outputs"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cudagraph_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        verb.add_arguments(p)
        p.set_defaults(run=verb.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in RENAMED:
        print(f"python -m cudagraph_bench {argv[0]}: renamed; use '{RENAMED[argv[0]]}'", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
