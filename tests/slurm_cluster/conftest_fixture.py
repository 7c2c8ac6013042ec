"""The `slurm_cluster` pytest fixture: a real one-node Slurm cluster for the session.

Register it once, in tests/conftest.py:

    from tests.slurm_cluster.conftest_fixture import slurm_cluster  # noqa: F401

(or `pytest_plugins = ["tests.slurm_cluster.conftest_fixture"]`), then ask for
`slurm_cluster` in a test; it gets a cluster.ClusterInfo. Skipped when
CGB_SKIP_SLURM=1, when not root, on a machine with neither Slurm nor apt-get,
and when /etc/slurm/slurm.conf belongs to a real Slurm setup.
CGB_SLURM_REUSE=1 uses a cluster already started by hand and leaves it running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

try:
    from .cluster import ClusterInfo, foreign_slurm_conf, start_cluster, stop_cluster
except ImportError:  # imported as a top-level module, not as part of the package
    import importlib.util
    import sys
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("cgb_slurm_cluster", Path(__file__).with_name("cluster.py"))
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["cgb_slurm_cluster"] = _mod
    _spec.loader.exec_module(_mod)
    ClusterInfo = _mod.ClusterInfo
    foreign_slurm_conf = _mod.foreign_slurm_conf
    start_cluster = _mod.start_cluster
    stop_cluster = _mod.stop_cluster


def skip_reason() -> str | None:
    """Why the cluster cannot be started here, or None if it can."""
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
    if foreign_slurm_conf():
        return (
            "/etc/slurm/slurm.conf belongs to a real Slurm setup; the test cluster "
            "will not overwrite it (CGB_SLURM_FORCE=1 tests/slurm_cluster/start.sh "
            "moves it aside)"
        )
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[ClusterInfo]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)
    reuse = os.environ.get("CGB_SLURM_REUSE") == "1"
    info = start_cluster(reuse_running=reuse)
    yield info
    if not info.reused:
        stop_cluster()
