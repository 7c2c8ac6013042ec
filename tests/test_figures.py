"""Figures: byte-identical rebuilds, labelled gaps, provenance sidecars, the figures-only path. Synthetic numbers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
from cudagraph_bench import aggregate as agg
from cudagraph_bench import figures as F
from cudagraph_bench import queue_model as Q
from cudagraph_bench import tables as T
from cudagraph_bench.__main__ import main
from cudagraph_bench.cells import Cell
from cudagraph_bench.outputs import figure_outputs
from helpers_results import synthetic_study, vllm_profiled_latency, write
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
    launches = agg.parse_launch_details(records)
    return df, F.build_figures(
        df, capture=capture, sequences=Q.cell_sequences(launches), capture_sizes=[1, 2, 4, 8, 16, 32, 64]
    )


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
            [sys.executable, "-m", "cudagraph_bench", "rebuild", "--results", "results", "--config", str(CONFIG)],
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
        wl = T.HEADLINE_WORKLOAD
        n_numbers += sum(
            not isinstance(lookup.value((gpu, backend, wl, m, 1), "e2e_latency_s_mean"), str)
            for m in ("eager", "cudagraph", "compile_nograph")
        )
    assert len(fig1.axes[0].patches) == n_numbers  # one bar per number, none for a gap
    legend = " ".join(texts(figs["fig2_speedup"][0]))
    assert "bs 64 OOM" in legend and "bs 1, 4, 16, 64 unsupported" in legend and "bs 16 error" in legend
    assert "OOM" in texts(figs["fig6_roofline"][0])


def visible_texts(fig) -> list:
    """Every text drawn on the figure: titles, labels, tick labels, legends, annotations."""
    fig.canvas.draw()
    out = [fig._suptitle] if fig._suptitle else []
    for ax in fig.axes:
        out += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts, *ax.get_xticklabels(), *ax.get_yticklabels()]
        if ax.get_legend():
            out += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    for legend in fig.legends:
        out += [*legend.get_texts(), legend.get_title()]
    return [t for t in out if t.get_text()]


@pytest.mark.parametrize("name", F.FIGURE_NAMES)
def test_nothing_is_cut_off_at_the_figure_edges(drawn, name):
    """Titles, tick labels, legends and annotations all lie inside the saved figure."""
    fig = drawn[1][name][0]
    with matplotlib.rc_context(F.STYLE):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        box = fig.bbox
        parts = [ax.get_tightbbox(renderer) for ax in fig.axes]  # what each axes draws, its legend included
        parts += [legend.get_window_extent(renderer) for legend in fig.legends]
        if fig._suptitle is not None:
            parts.append(fig._suptitle.get_window_extent(renderer))
    for e in parts:
        assert e.x0 >= box.x0 - 1 and e.x1 <= box.x1 + 1 and e.y0 >= box.y0 - 1 and e.y1 <= box.y1 + 1, (name, e)


def test_startup_parts_name_each_backends_compile():
    # vLLM's log: its compile time; torch_compile: its first three steps; the pool: its first step (JIT)
    vllm = {"status": "ok", "startup_s": 60.0, "model_load_s": 2.0, "compile_s": 20.0, "capture_s": 5.0}
    peer = {"status": "ok", "startup_s": 94.0, "weight_init_s": 0.1, "compile_and_first_steps_s": 93.0}
    pool = {"status": "ok", "startup_s": 22.0, "weight_init_s": 0.2, "first_step_s": 7.0, "capture_s_total": 14.6}
    assert F.startup_parts(vllm) == {"weight load": 2.0, "compile / JIT": 20.0, "graph capture": 5.0, "rest": 33.0}
    assert F.startup_parts(peer) == {"weight load": 0.1, "compile / JIT": 93.0, "rest": pytest.approx(0.9)}
    assert F.startup_parts(pool) == {"weight load": 0.2, "compile / JIT": 7.0, "graph capture": 14.6,
                                     "rest": pytest.approx(0.2)}  # fmt: skip
    assert F.startup_parts({"status": "ok", "startup_s": 3.0}) == {"rest": 3.0}
    # torch_compile's eager steps compile nothing; the pool's eager first step is still its JIT
    eager_peer = dict(peer, mode="eager", startup_s=0.6, compile_and_first_steps_s=0.5)
    assert F.startup_parts(eager_peer) == {"weight load": 0.1, "rest": pytest.approx(0.5)}
    assert F.startup_parts(dict(pool, mode="eager"))["compile / JIT"] == 7.0


def test_startup_legend_covers_no_bar_or_total(drawn):
    fig = drawn[1]["fig3_startup"][0]
    with matplotlib.rc_context(F.STYLE):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1
    legend = fig.legends[0].get_window_extent(renderer)
    for artist in [*ax.patches, *ax.texts]:
        assert not legend.overlaps(artist.get_window_extent(renderer)), artist
    assert not legend.overlaps(ax.get_window_extent(renderer))
    for text in ax.texts:  # every total inside the axes
        assert ax.get_window_extent(renderer).contains(*text.get_window_extent(renderer).p1)


def test_every_figure_names_the_model(drawn):
    _, figs = drawn
    labels = {name: " ".join(t.get_text() for t in visible_texts(fig)) for name, (fig, _, _) in figs.items()}
    for name in ("fig1_latency_throughput", "fig2_speedup", "fig3_startup", "fig4_capture_cost", "fig5_padding",
                 "fig6_roofline"):  # fmt: skip
        assert "synthetic-8b" in labels[name], name
    for name in ("fig2_speedup", "fig3_startup", "fig4_capture_cost", "fig5_padding", "fig6_roofline"):
        assert "synthetic-1b, imported" in labels[name], name
    ticks = [t.get_text() for t in figs["fig1_latency_throughput"][0].axes[0].get_xticklabels()]
    assert ticks == ["gpu_a\ngraph_pool\nsynthetic-8b", "gpu_a\nvllm\nsynthetic-8b",
                     "gpu_b\ngraph_pool\nsynthetic-1b\nimported", "gpu_b\nvllm\nsynthetic-1b\nimported"]  # fmt: skip


def test_capture_cost_is_drawn_from_the_pipelines_cells(drawn, study):
    df, figs = drawn
    fig, used, _ = figs["fig4_capture_cost"]
    mem = fig.axes[0]
    lines = [line for line in mem.get_lines() if line.get_linestyle() == "-"]
    # one running-total line per GPU: the bs=1 latency cell's pool, 7 sizes
    assert len(lines) == 2 and all(len(line.get_xdata()) == 7 for line in lines)
    study_points = [line for line in mem.get_lines() if line.get_marker() == "D"]
    (diamonds,) = study_points  # gpu_a only: gpu_b's capture study ran out of memory
    assert list(diamonds.get_xdata()) == [1, 3, 7, 256]
    assert {t.get_text() for t in mem.texts} == {"1", "1,4,16", "1,2,4,8,16,32,64", "1..256"}
    assert "results/raw/gpu_a/graph_pool/capture_study/cudagraph/single.json" in used
    assert "results/raw/gpu_a/graph_pool/startup/cudagraph/single.json" in used  # a cross: its pool's total
    assert "results/raw/gpu_a/graph_pool/latency/cudagraph/bs1.json" in used  # the line
    legend = " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "gpu_a / graph_pool / synthetic-8b" in legend and "gpu_b / graph_pool / synthetic-1b" in legend


def test_model_prediction_drawn_beside_measurement(drawn):
    _, figs = drawn
    ax = figs["fig2_speedup"][0].axes[0]
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 2  # one per GPU of the graph pool (this study's vLLM cells record no launch sequence)
    xs = sorted(float(x) for x in dashed[0].get_xdata())
    assert xs == [1.0, 4.0, 16.0, 64.0]


def test_a_step_that_waits_for_the_gpu_shows_its_launches_alone_as_a_lower_bound(tmp_path):
    """vLLM's eager step (a profiled decode step that ends in a host wait): figure 2 marks the
    speedup its launches alone would give (x), not a queue-model line."""
    from cudagraph_bench import derived as D

    vllm_profiled_latency(tmp_path, graph_ms_per_token=0.05)
    records, df = agg.aggregate(tmp_path)
    model = D.launch_model(df, launches=agg.parse_launch_details(records))
    ax = F.fig2_speedup(df, agg.Lookup(df), model).axes[0]
    (cross,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert list(cross.get_xdata()) == [1] and float(cross.get_ydata()[0]) == pytest.approx(model["speedup_pred"][0])
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert any("lower bound" in t.get_text() for t in ax.get_legend().get_texts())


def test_write_figures_outputs_and_sidecars(study, tmp_path):
    _, df = agg.aggregate(study)
    written = F.write_figures(df, tmp_path, capture_sizes=[1, 4], code=("abc", True))
    assert [p.as_posix() for p in written] == figure_outputs(tmp_path.as_posix())
    side = json.loads((tmp_path / "fig2_speedup.json").read_text())
    paths = [f["path"] for f in side["result_files"]]
    assert paths == sorted(paths) and paths
    assert all("/latency/" in p for p in paths)  # the sweep only, not startup or serving cells
    assert side["code_commit"] == "abc" and side["code_dirty"] is True and side["config_hashes"] == ["c0ffee0000000000"]
    assert side["result_git_commits"] == ["0" * 40]
    assert side["files"] == ["fig2_speedup.pdf", "fig2_speedup.png"]
    assert json.loads((tmp_path / "fig5_padding.json").read_text())["capture_sizes"] == [1, 4]


def test_figures_of_an_empty_study(tmp_path):
    from cudagraph_bench.rebuild import rebuild

    written = rebuild(tmp_path, capture_sizes=[])
    assert len(written["figures"]) == len(F.FIGURE_NAMES) * len(F.FIGURE_FORMATS)
    assert all(p.stat().st_size > 0 for p in written["figures"])


def test_figures_only_target_names_a_corrupt_file(study, tmp_path, capsys):
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    bad = tmp_path / "results/raw/gpu_b/graph_pool/latency/eager/bs4.json"
    bad.write_text("not json")
    rc = main(["rebuild", "--results", str(tmp_path / "results"), "--config", str(CONFIG)])
    assert rc == 1
    assert "gpu_b/graph_pool/latency/eager/bs4.json" in capsys.readouterr().err


def test_figures_only_target_names_a_schema_invalid_file(study, tmp_path, capsys):
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    bad = tmp_path / "results/raw/gpu_a/vllm/startup/eager/single.json"
    doc = json.loads(bad.read_text())
    doc["status"] = "fine"
    bad.write_text(json.dumps(doc))
    rc = main(["rebuild", "--results", str(tmp_path / "results"), "--config", str(CONFIG)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "gpu_a/vllm/startup/eager/single.json" in err and "does not match the result schema" in err


def test_figures_verb_rebuilds_the_committed_outputs_from_results_raw_only(study, tmp_path, monkeypatch):
    """A local run's results under results/local never reach the committed outputs, and are never touched."""
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    local = tmp_path / "results/local"
    write(tmp_path, Cell("local", "graph_pool", "latency", "eager", 1), "ok", {"decode_step_ms_median": 1.0},
          results_dir="results/local", model="tiny")  # fmt: skip
    (local / "status.md").write_text("the local run\n")
    before = {p: p.read_bytes() for p in local.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    assert main(["rebuild", "--config", str(CONFIG)]) == 0
    summary = (tmp_path / "results/summary.csv").read_text()
    assert "tiny" not in summary and "results/local" not in summary and "results/raw/gpu_a/" in summary
    for p in (tmp_path / "results").rglob("*"):
        if p.is_file() and p.suffix in (".md", ".csv", ".json") and "raw" not in p.parts and "local" not in p.parts:
            assert "tiny" not in p.read_text(), p
    assert {p: p.read_bytes() for p in local.rglob("*") if p.is_file()} == before
    # the local run's own outputs come from its config (or --results)
    local_config = tmp_path / "local.yaml"
    local_config.write_text("results_dir: results/local\n")
    assert main(["rebuild", "--config", str(CONFIG), str(local_config)]) == 0
    assert "tiny" in (local / "summary.csv").read_text() and (local / "figures/fig1_latency_throughput.png").exists()
    assert "tiny" in (local / "tables/headline.md").read_text()


def test_figures_verb_refuses_a_local_run_left_in_results_raw(study, tmp_path, capsys, monkeypatch):
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    write(tmp_path, Cell("local", "graph_pool", "latency", "eager", 1), "ok", {"decode_step_ms_median": 1.0})
    monkeypatch.chdir(tmp_path)
    assert main(["rebuild", "--config", str(CONFIG)]) == 1
    assert "results/raw/local/" in capsys.readouterr().err
    assert not (tmp_path / "results/summary.csv").exists()


def test_outputs_verb(study, tmp_path, capsys):
    shutil.copytree(study / "results" / "raw", tmp_path / "results" / "raw")
    assert main(["rebuild", "--results", str(tmp_path / "results"), "--config", str(CONFIG)]) == 0
    capsys.readouterr()
    assert main(["outputs", "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert "summary.csv" in out and "5 of 5 built" in out and "8 of 8 built" in out


def test_launch_cost_figure_runs_the_queue_at_every_host_cost(drawn):
    df, figs = drawn
    ax = figs["fig7_launch_cost"][0].axes[0]
    curves = [line for line in ax.get_lines() if len(line.get_xdata()) == len(F.HOST_US_AXIS)]
    assert len(curves) == 2  # one per GPU with a bs=1 eager launch sequence (synthetic GPUs: no bandwidth ratio)
    # gpu_a's host spends 80 µs per kernel, the axis' last point: the curve ends at the table's prediction
    a = next(c for c in curves if c.get_ydata()[-1] > 1.5)
    assert a.get_ydata()[-1] == pytest.approx((8.0 + 4.0 * (1 + 1 / 64) / 100) / (4.0 * (1 + 1 / 64)))
    assert a.get_ydata()[0] == pytest.approx(1.0, abs=0.02)  # a 2 µs host: the GPU is never starved
    bars = [line for line in ax.get_lines() if list(line.get_xdata()) == list(F.PUBLISHED_HOST_US)]
    assert sorted(round(line.get_ydata()[0], 3) for line in bars) == sorted(
        round(v, 3) for v in F.PUBLISHED_SPEEDUP.values()
    )


@pytest.mark.parametrize("old, new", [("figures", "rebuild"), ("summary", "outputs")])
def test_renamed_verbs_say_their_new_name(old, new, capsys):
    assert main([old]) == 2
    assert f"use '{new}'" in capsys.readouterr().err


def test_every_mode_and_backend_has_its_label_colour_and_marker():
    from cudagraph_bench.cells import BACKEND_KINDS, MODES

    assert set(T.MODE_LABELS) == set(F.MODE_COLORS) == set(F.MODE_MARKERS) == set(MODES)
    assert set(F.BACKEND_MARKERS) == set(BACKEND_KINDS)
