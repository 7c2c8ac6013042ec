"""The graph pool against the memory floor and its peers, from one run's tidy table.

Reads the summary.csv that the pipeline built from its result files (one row per cell) and
prints, for one GPU type, per batch size of the `latency` workload (256 in / 64 out):

    bs | pool graph ms | floor ms | pool/floor | torch_compile graph ms | pool/torch_compile
       | vLLM graph e2e s | pool graph e2e s

pool graph ms is the decode step's median (CUDA events), floor ms the bytes a step must read
over the GPU's measured copy bandwidth (both recorded by the pool's latency cell). A column
whose cells the run does not have prints "-". Before the table, one line per backend names the
commits its cells ran at and when they finished: a table whose backends come from different
runs (a study measured over several sessions) says so.

    python benchmarks/pool_vs_floor.py [--summary results/summary.csv] [--gpu h200]
"""

from __future__ import annotations

import argparse
import math

import pandas as pd


def _value(df: pd.DataFrame, backend: str, mode: str, bs: int, metric: str) -> float:
    rows = df[(df.backend == backend) & (df["mode"] == mode) & (df.batch_size == bs) & (df.status == "ok")]
    if rows.empty or metric not in rows or pd.isna(rows[metric].iloc[0]):
        return math.nan
    return float(rows[metric].iloc[0])


def table(summary: pd.DataFrame, gpu: str, workload: str = "latency") -> list[dict]:
    df = summary[(summary.gpu == gpu) & (summary.workload == workload)]
    out = []
    for bs in sorted({int(b) for b in df.batch_size.dropna()}):
        pool = _value(df, "graph_pool", "cudagraph", bs, "decode_step_ms_median")
        floor = _value(df, "graph_pool", "cudagraph", bs, "hbm_floor_ms")
        peer = _value(df, "torch_compile", "cudagraph", bs, "decode_step_ms_median")
        out.append(
            {
                "bs": bs,
                "pool graph ms": pool,
                "floor ms": floor,
                "pool/floor": pool / floor,
                "torch_compile graph ms": peer,
                "pool/torch_compile": pool / peer,
                "vLLM graph e2e s": _value(df, "vllm", "cudagraph", bs, "e2e_latency_s_mean"),
                "pool graph e2e s": _value(df, "graph_pool", "cudagraph", bs, "e2e_latency_s_mean"),
            }
        )
    return out


def provenance(summary: pd.DataFrame, gpu: str, workload: str = "latency") -> list[str]:
    """'backend: commit(s) ..., finished ...' for the cudagraph cells the table reads."""
    df = summary[(summary.gpu == gpu) & (summary.workload == workload) & (summary["mode"] == "cudagraph")]
    df = df[df.status == "ok"]
    lines, commits = [], {}
    for backend in ("graph_pool", "torch_compile", "vllm"):
        rows = df[df.backend == backend]
        if rows.empty:
            continue
        commits[backend] = sorted({str(c)[:7] for c in rows.git_commit.dropna()})
        done = sorted(str(t)[:16] for t in rows.finished_utc.dropna())
        when = f", finished {done[0]} .. {done[-1]} UTC" if done else ""
        lines.append(f"{backend}: commit {', '.join(commits[backend]) or 'unknown'}{when}")
    if {"graph_pool", "torch_compile"} <= commits.keys() and commits["graph_pool"] != commits["torch_compile"]:
        lines.append("pool/torch_compile compares cells of different runs: measure both in one run for that ratio")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", default="results/summary.csv", help="the run's tidy table")
    ap.add_argument("--gpu", default="h200", help="GPU type (a gpu column value)")
    args = ap.parse_args(argv)
    summary = pd.read_csv(args.summary)
    rows = table(summary, args.gpu)
    if not rows:
        print(f"{args.summary} has no latency cells for GPU type {args.gpu!r}")
        return 1
    for line in provenance(summary, args.gpu):
        print(line)
    cols = list(rows[0])
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join("-" if isinstance(v, float) and math.isnan(v) else f"{v:.3g}" for v in r.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
