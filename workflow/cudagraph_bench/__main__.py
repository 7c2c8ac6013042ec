"""Command line: python -m cudagraph_bench VERB [options].

Verbs live in the VERBS table (name -> Verb); add one by writing a function
`(args) -> exit code` and, if it takes options, a function that adds them to
its sub-parser.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_CONFIG = "config/config.yaml"


@dataclass(frozen=True)
class Verb:
    run: Callable[[argparse.Namespace], int]
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None


def load_config(path: str | Path | list) -> dict:
    """Read the study config (several files: later ones laid over earlier ones, as
    Snakemake's --configfiles do) and check its cross-references; exits with the message on a bad one."""
    from snakemake.utils import update_config

    from .cells import ConfigError, check_config

    paths = path if isinstance(path, list) else [path]
    try:
        config: dict = {}
        for path in paths:
            update_config(config, yaml.safe_load(Path(path).read_text()) or {})
        check_config(config)
    except FileNotFoundError:
        raise SystemExit(f"error: config file {path} not found (pass --config)") from None
    except (ConfigError, KeyError, TypeError, yaml.YAMLError) as e:
        raise SystemExit(f"error: config {path}: {e}") from None
    return config


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        nargs="+",
        default=[DEFAULT_CONFIG],
        help=f"the study config; several files are laid over each other in order (default: {DEFAULT_CONFIG})",
    )


def _add_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="the results folder, holding raw/ (default: results)")


def _root_of(results: str) -> Path:
    # Result paths name the cell as results/raw/...: the folder must be called "results".
    path = Path(results)
    if path.name != "results":
        raise SystemExit(f"error: --results {results}: the folder must be named 'results' (it holds results/raw/...)")
    return path.parent


# --------------------------------------------------------------------------- verbs


def cmd_status(args: argparse.Namespace) -> int:
    """Print the status grid and write results/status.md."""
    from .status_grid import print_status

    print_status(load_config(args.config), args.root)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    """Rebuild summary.csv, every table and every figure from the result files."""
    from .aggregate import AggregationError
    from .figures import code_commit, rebuild
    from .results import ResultFileError

    root = _root_of(args.results)
    capture_sizes: list[int] = []
    if all(Path(c).exists() for c in args.config):
        capture_sizes = list(load_config(args.config)["graph_pool"]["capture_sizes"])
    else:
        print(f"note: {' '.join(args.config)} not found: the padding-waste figure has no capture sizes", file=sys.stderr)
    try:
        written = rebuild(root, capture_sizes=capture_sizes, commit=code_commit())
    except (ResultFileError, AggregationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for kind, paths in written.items():
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files in {Path(paths[0]).parent}/"
        print(f"{kind}: {where}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """One screen: where the outputs are, and how many cells are in each state."""
    print(summary_text(_root_of(args.results)), end="")
    return 0


def summary_text(root: Path) -> str:
    from .aggregate import find_result_files
    from .figures import FIGURE_NAMES
    from .tables import TABLE_NAMES

    results = root / "results"
    lines = [f"cudagraph-bench outputs in {results}/", ""]
    summary = results / "summary.csv"
    lines.append(f"  raw/           {len(find_result_files(root))} result files, one per cell")
    if summary.exists():
        import pandas as pd

        counts = pd.read_csv(summary, usecols=["status"])["status"].value_counts()
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"  summary.csv    one row per cell: {states or 'no cells'}")
    else:
        lines.append("  summary.csv    not built yet: python -m cudagraph_bench figures")

    def present(folder: str, names, exts) -> str:
        have = [n for n in names if all((results / folder / f"{n}.{e}").exists() for e in exts)]
        return f"{len(have)} of {len(names)} built ({' '.join('.' + e for e in exts)})"

    lines.append(f"  tables/        {present('tables', TABLE_NAMES, ('csv', 'md', 'tex'))}: {', '.join(TABLE_NAMES)}")
    lines.append(f"  figures/       {present('figures', FIGURE_NAMES, ('pdf', 'png', 'json'))}")
    for name in FIGURE_NAMES:
        lines.append(f"                   {name}")
    status = results / "status.md"
    lines.append(
        f"  status.md      {'the study grid' if status.exists() else 'not written yet: python -m cudagraph_bench status'}"
    )
    return "\n".join(lines) + "\n"


VERBS: dict[str, Verb] = {
    "status": Verb(
        cmd_status,
        "per workload, the GPU x mode x batch-size grid of cell states (also written to results/status.md)",
        lambda p: (_add_config(p), p.add_argument("--root", default=".", help="the folder holding results/")),
    ),
    "figures": Verb(
        cmd_figures,
        "rebuild summary.csv, every table and figure from results/ (no GPU, Slurm or vLLM needed)",
        lambda p: (_add_results(p), _add_config(p)),
    ),
    "summary": Verb(cmd_summary, "one screen: where the outputs are", _add_results),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cudagraph_bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, verb in VERBS.items():
        p = sub.add_parser(name, help=verb.help, description=verb.help)
        verb.add_arguments(p)
        p.set_defaults(run=verb.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
