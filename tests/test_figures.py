"""Figures: byte-identical rebuilds, labelled gaps, provenance sidecars, the figures-only path. Synthetic numbers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cudagraph_bench import aggregate as agg
from cudagraph_bench import figures as F
from cudagraph_bench import tables as T
from cudagraph_bench.__main__ import main
from helpers_results import synthetic_study
from matplotlib.patches import Rectangle

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.yaml"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("study")
    synthetic_study(root)
    return root


@pytest.fixture(scope="module")
def drawn(study):
    records, df = agg.aggregate(study)
    capture = agg.parse_capture_details(records)
    return df, F.build_figures(df, capture=capture, capture_sizes=[1, 2, 4, 8, 16, 32, 64])


def texts(fig) -> list[str]:
    out = [t.get_text() for ax in fig.axes for t in ax.texts]
    for ax in fig.axes:
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    return out


def sha256s(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "raw" not in p.parts
    }


def test_two_rebuilds_are_byte_identical(study, tmp_path):
    """The figures-only target, run twice in fresh processes and different folders."""
    digests = []
    for i, seed in enumerate(("1", "2")):
        root = tmp_path / f"build{i}"
        shutil.copytree(study / "results" / "raw", root / "results" / "raw")
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(REPO / "workflow"))
        subprocess.run(
            [sys.executable, "-m", "cudagraph_bench", "figures", "--results", "results", "--config", str(CONFIG)],
            cwd=root,
            env=env,
            check=True,
            capture_output=True,
            timeout=300,
        )
        digests.append(sha256s(root / "results"))
    expected = {f"figures/{n}.{e}" for n in F.FIGURE_NAMES for e in F.FIGURE_FORMATS}
    expected |= {f"tables/{n}.{e}" for n in T.TABLE_NAMES for e in T.TABLE_FORMATS} | {"summary.csv"}
    assert set(digests[0]) == expected
    assert digests[0] == digests[1]


def test_no_run_dependent_metadata(drawn):
    _, figs = drawn
    blobs = F.render(figs["fig1_latency_throughput"][0])
    assert blobs["pdf"].startswith(b"%PDF") and blobs["png"].startswith(b"\x89PNG")
    for field in (b"CreationDate", b"Producer", b"Creator", b"ModDate"):
        assert field not in blobs["pdf"]
    assert b"matplotlib" not in blobs["png"].lower() and b"Software" not in blobs["png"]


def test_fonts_are_matplotlibs_own_dejavu():
    assert Path(F.check_fonts()).name == "DejaVuSans.ttf"


def test_gaps_are_labelled_not_drawn_as_zero(drawn):
    df, figs = drawn
    fig1 = figs["fig1_latency_throughput"][0]
    labels = texts(fig1)
    assert "unsupported" in labels and "missing" in labels
    bars = [p for ax in fig1.axes for p in ax.patches if isinstance(p, Rectangle)]
    assert bars and all(b.get_height() > 0 for b in bars)
    lookup = agg.Lookup(df)
    n_numbers = 0
    for gpu, backend in T.gpu_backends(df[df["kind"] == "latency"]):
        wl = T.headline_workload(df, gpu, backend)
        n_numbers += sum(
            not isinstance(lookup.value((gpu, backend, wl, m, 1), "e2e_latency_s_mean"), str)
            for m in ("eager", "cudagraph", "compile_nograph")
        )
    assert len(fig1.axes[0].patches) == n_numbers  # one bar per number, none for a gap
    legend = " ".join(texts(figs["fig2_speedup"][0]))
    assert "bs 64 OOM" in legend and "bs 1, 4, 16, 64 unsupported" in legend and "bs 16 error" in legend
    assert "OOM" in texts(figs["fig6_roofline"][0])


def test_model_prediction_drawn_beside_measurement(drawn):
    _, figs = drawn
    ax = figs["fig2_speedup"][0].axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2  # one per GPU of the graph pool (vLLM reports no model inputs)
    xs = sorted(float(x) for x in dashed[0].get_xdata())
    assert xs == [1.0, 4.0, 16.0, 64.0]


def test_padding_waste_is_a_pure_function():
    sizes = [1, 2, 4, 8, 16, 32, 64]
    assert F.padded_size(37, sizes) == 64
    assert F.padding_waste(37, sizes) == pytest.approx(27 / 64)
    assert F.padding_waste(64, sizes) == 0
    assert F.padded_size(65, sizes) is None and F.padding_waste(65, sizes) is None
    assert F.padded_size(3, [4, 1]) == 4
    with pytest.raises(ValueError):
        F.padded_size(0, sizes)


def test_write_figures_outputs_and_sidecars(study, tmp_path):
    _, df = agg.aggregate(study)
    written = F.write_figures(df, tmp_path, capture_sizes=[1, 4], code_commit="abc")
    assert [p.as_posix() for p in written] == F.figure_outputs(tmp_path.as_posix())
    side = json.loads((tmp_path / "fig2_speedup.json").read_text())
    paths = [f["path"] for f in side["result_files"]]
    assert paths == sorted(paths) and paths
    assert all("/latency/" in p for p in paths)  # the sweep only, not startup or serving cells
    assert side["code_commit"] == "abc" and side["config_hashes"] == ["c0ffee0000000000"]
    assert side["result_git_commits"] == ["0" * 40]
    assert side["files"] == ["fig2_speedup.pdf", "fig2_speedup.png"]
    assert json.loads((tmp_path / "fig5_padding.json").read_text())["capture_sizes"] == [1, 4]


def test_figures_of_an_empty_study(tmp_path):
    written = F.rebuild(tmp_path, capture_sizes=[])
    assert len(written["figures"]) == len(F.FIGURE_NAMES) * len(F.FIGURE_FORMATS)
    assert all(p.stat().st_size > 0 for p in written["figures"])


def test_figures_only_target_names_a_corrupt_file(study, tmp_path, capsys):
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    bad = tmp_path / "results/raw/gpu_b/graph_pool/latency/eager/bs4.json"
    bad.write_text("not json")
    rc = main(["figures", "--results", str(tmp_path / "results"), "--config", str(CONFIG)])
    assert rc == 1
    assert "gpu_b/graph_pool/latency/eager/bs4.json" in capsys.readouterr().err


def test_figures_only_target_names_a_schema_invalid_file(study, tmp_path, capsys):
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    bad = tmp_path / "results/raw/gpu_a/vllm/startup/eager/single.json"
    doc = json.loads(bad.read_text())
    doc["status"] = "fine"
    bad.write_text(json.dumps(doc))
    rc = main(["figures", "--results", str(tmp_path / "results"), "--config", str(CONFIG)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "gpu_a/vllm/startup/eager/single.json" in err and "does not match the result schema" in err


def test_summary_verb(study, tmp_path, capsys):
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    assert main(["figures", "--results", str(tmp_path / "results"), "--config", str(CONFIG)]) == 0
    capsys.readouterr()
    assert main(["summary", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "summary.csv" in out and "3 of 3 built" in out and "6 of 6 built" in out
