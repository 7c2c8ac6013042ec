"""What a latency cell records of its host and of its timings' spread (the CPU-testable parts)."""

import os

import pytest
from cudagraph_bench import host


def test_cpu_info_names_the_cores_this_job_may_use():
    info = host.cpu_info()
    assert info["cpu_cores_usable"] == len(os.sched_getaffinity(0))
    assert info["cpu_model"]
    assert host._ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_spread_and_cv():
    sp = host.spread([10.0, 10.0, 10.0, 10.0])
    assert sp == {"median": 10.0, "p10": 10.0, "p90": 10.0, "cv": 0.0}
    assert host.spread([9.0, 11.0])["cv"] == pytest.approx(2**0.5 / 10)


def test_a_noisy_eager_cell_gets_more_rounds_up_to_the_cap_and_is_flagged():
    noisy = iter([[1.0, 2.0]] * 10)
    times, stab = host.timed_until_stable(lambda: next(noisy), adaptive=True)
    assert stab["rounds"] == host.MAX_ROUNDS and len(times) == 2 * host.MAX_ROUNDS and stab["cv_over_limit"]
    settles = iter([[1.0, 1.1], [1.05] * 200, [9.0] * 9])
    times, stab = host.timed_until_stable(lambda: next(settles), adaptive=True)
    assert stab["rounds"] == 2 and len(times) == 202 and stab["cv"] <= host.CV_LIMIT and not stab["cv_over_limit"]
    once = iter([[1.0, 2.0], [1.5] * 50])
    _, stab = host.timed_until_stable(lambda: next(once), adaptive=False)  # graph cells: one round
    assert stab["rounds"] == 1 and stab["cv_over_limit"]


def test_step_and_host_metrics_are_numbers_with_units():
    m = host.step_metrics([1.0, 1.0, 1.0], {"cv_over_limit": False})
    assert m["decode_steps_timed"] == 3.0 and m["decode_step_cv_over_limit"] == 0.0
    rec = {"aten_launch_us": 10.6, "cpu_cores_usable": 16, "cpu_affinity": "0-15", "launch_costs_error": "x"}
    assert host.host_metrics(rec) == {"host_aten_launch_us": 10.6, "host_cpu_cores_usable": 16.0}
    assert "launch_costs_error" not in host.host_record("cpu") and "aten_launch_us" not in host.host_record("cpu")


def test_step_metrics_add_the_host_time_of_the_timed_steps():
    from cudagraph_bench.host import step_metrics

    stab = {"rounds": 1, "cv": 0.0, "cv_over_limit": False}
    m = step_metrics([5.0, 5.0, 5.0], stab, host_ms=[1.0, 2.0, 3.0])
    assert (m["step_host_ms_median"], m["step_host_ms_p10"], m["step_host_ms_p90"]) == (2.0, 1.2, 2.8)
    assert "step_host_ms_median" not in step_metrics([5.0], stab)


def test_the_garbage_collector_is_off_while_timing_and_back_after():
    import gc

    from cudagraph_bench.host import timed_until_stable

    seen = []
    times, stab = timed_until_stable(lambda: seen.append(gc.isenabled()) or [1.0, 1.0], adaptive=False)
    assert seen == [False] and gc.isenabled() and stab["gc"] == "off while timing"
