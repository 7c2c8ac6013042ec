"""The `slurm_cluster` pytest fixture: a real one-node Slurm cluster for the session.

Register it once, in tests/conftest.py:

    from slurm_cluster.conftest_fixture import slurm_cluster  # noqa: F401

then ask for `slurm_cluster` in a test; it gets a cluster.ClusterInfo.

When the cluster cannot be had here (CGB_SKIP_SLURM=1, not root, neither Slurm
nor apt-get, or start.sh refuses: a Slurm in use owns /etc/slurm/slurm.conf,
its ports are taken) the test is skipped with the reason, except under CI
(CI=true): there it fails with the reason, so a CI run can never pass without
its Slurm tests. A cluster that does not come up is an error everywhere.
A slurm.conf left by another test cluster is no reason: start.sh moves it aside
and stop.sh (the fixture's teardown, or start.sh's own clean-up on failure)
puts it back. CGB_SLURM_REUSE=1 uses a cluster already started by hand and
leaves it running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

try:
    from .cluster import ClusterInfo, ClusterRefused, start_cluster, stop_cluster
except ImportError:  # imported as a top-level module, not as part of the package
    import importlib.util
    import sys
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("cgb_slurm_cluster", Path(__file__).with_name("cluster.py"))
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["cgb_slurm_cluster"] = _mod
    _spec.loader.exec_module(_mod)
    ClusterInfo = _mod.ClusterInfo
    ClusterRefused = _mod.ClusterRefused
    start_cluster = _mod.start_cluster
    stop_cluster = _mod.stop_cluster


def in_ci() -> bool:
    """True under CI (CI=true, as GitHub Actions, GitLab CI and .ci/run's callers set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_reason() -> str | None:
    """Why the cluster cannot be started here (checked before trying), or None if it may be."""
    if os.environ.get("CGB_SKIP_SLURM") == "1":
        return "CGB_SKIP_SLURM=1"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return (
            "the Slurm test cluster needs root (it starts munge, MariaDB and the "
            "Slurm daemons and writes /etc/slurm); run pytest as root or set "
            "CGB_SKIP_SLURM=1"
        )
    sbin_path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    if shutil.which("slurmctld", path=sbin_path) is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it"
    return None


def unavailable(reason: str) -> None:
    """Skip the test for `reason`; under CI fail it instead (pytest.fail/skip raise)."""
    if in_ci():
        pytest.fail(
            f"the Slurm test cluster cannot start: {reason}. Under CI (CI=true) the Slurm tests must run, "
            "never be skipped (tests/slurm_cluster/README.md)",
            pytrace=False,
        )
    pytest.skip(f"Slurm test cluster: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[ClusterInfo]:
    reason = skip_reason()
    if reason is not None:
        unavailable(reason)
    reuse = os.environ.get("CGB_SLURM_REUSE") == "1"
    try:
        info = start_cluster(reuse_running=reuse)
    except ClusterRefused as e:
        unavailable(f"start.sh refused: {e}")
    yield info
    if not info.reused:
        stop_cluster()
