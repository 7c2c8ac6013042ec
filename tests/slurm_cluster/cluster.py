"""Start and stop the real one-node Slurm cluster of start.sh/stop.sh from Python.

    info = start_cluster()      # installs if needed, (re)starts, waits until usable
    ... sbatch -p info.partitions[1] --gres=info.gres("gpu-h200") ...
    stop_cluster()

Needs root (the daemons, /etc/slurm, apt-get). See README.md beside this file.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
START_SH = HERE / "start.sh"
STOP_SH = HERE / "stop.sh"
DEFAULT_STATE = "/tmp/cgb-slurm"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
# First line of the slurm.conf that start.sh writes (see _common.sh).
MARKER = "# Written by cgb-bench tests/slurm_cluster/start.sh; state dir:"

# Which GRES type each GPU partition's jobs ask for (the node has 2 of each).
GPU_TYPES = {"gpu-h200": "H200", "gpu-h100": "H100", "gpu-a100": "A100", "gpu-l40s": "L40S"}

# Set in os.environ to the pid of the process that started the cluster, so a
# second start_cluster() in the same process (e.g. two fixture registrations)
# reuses it instead of wiping it.
_STARTED_BY = "CGB_SLURM_STARTED_BY_PID"


# start.sh's exit status when it will not take over this machine (EXIT_REFUSED in _common.sh).
EXIT_REFUSED = 3


class ClusterError(RuntimeError):
    """start.sh or stop.sh failed; the message holds their output and log tails."""


class ClusterRefused(ClusterError):
    """start.sh would not take over this machine: a Slurm in use (its slurm.conf, its daemons,
    its ports), not root. The message says what; no config in /etc/slurm was moved."""


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    state_dir: Path
    slurm_conf: Path
    cluster: str
    node: str
    partitions: tuple[str, ...]
    default_partition: str
    account: str
    qos: str
    env: dict[str, str]  # what start.sh exported (SLURM_CONF, CGB_SLURM_*)
    reused: bool = False  # True when it was already running and was not (re)started

    @property
    def gpu_partitions(self) -> dict[str, str]:
        """GPU partition -> its GRES type, e.g. {"gpu-h200": "H200", ...}."""
        return {p: t for p, t in GPU_TYPES.items() if p in self.partitions}

    def gres(self, partition: str, count: int = 1) -> str:
        """The --gres value for `count` GPUs of `partition`, e.g. "gpu:H200:1"."""
        return f"gpu:{GPU_TYPES[partition]}:{count}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    # Paths of the Slurm commands (submitit calls them by name from PATH).
    @property
    def sbatch(self) -> str:
        return _which("sbatch")

    @property
    def sacct(self) -> str:
        return _which("sacct")

    @property
    def squeue(self) -> str:
        return _which("squeue")

    @property
    def scancel(self) -> str:
        return _which("scancel")

    @property
    def sinfo(self) -> str:
        return _which("sinfo")

    @property
    def scontrol(self) -> str:
        return _which("scontrol")


def _which(cmd: str) -> str:
    path = shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if path is None:
        raise ClusterError(f"{cmd} not found; run {HERE / 'install.sh'} as root")
    return path


def _state_dir() -> Path:
    return Path(os.environ.get("CGB_SLURM_STATE", DEFAULT_STATE))


def _parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            env[key] = value
    return env


def _info(env: dict[str, str], reused: bool) -> ClusterInfo:
    try:
        return ClusterInfo(
            state_dir=Path(env["CGB_SLURM_STATE"]),
            slurm_conf=Path(env["SLURM_CONF"]),
            cluster=env["CGB_SLURM_CLUSTER"],
            node=env["CGB_SLURM_NODE"],
            partitions=tuple(env["CGB_SLURM_PARTITIONS"].split(",")),
            default_partition=env["CGB_SLURM_DEFAULT_PARTITION"],
            account=env["CGB_SLURM_ACCOUNT"],
            qos=env["CGB_SLURM_QOS"],
            env=env,
            reused=reused,
        )
    except KeyError as e:
        raise ClusterError(f"start.sh did not export {e}; got {env}") from None


def foreign_slurm_conf() -> bool:
    """True when /etc/slurm/slurm.conf exists and start.sh did not write it (then no cluster of
    start.sh runs; start.sh moves it aside, or refuses when a Slurm in use reads it)."""
    try:
        with SLURM_CONF.open() as f:
            return not f.readline().startswith(MARKER)
    except FileNotFoundError:
        return False


def running_cluster() -> ClusterInfo | None:
    """The cluster start.sh started, if it is up now (slurmctld answers)."""
    env_file = _state_dir() / "env"
    if foreign_slurm_conf() or not env_file.exists():
        return None
    try:
        ping = subprocess.run([_which("scontrol"), "ping"], capture_output=True, text=True, timeout=15)
    except (ClusterError, subprocess.TimeoutExpired):
        return None
    if "is UP" not in ping.stdout:
        return None
    return _info(_parse_exports(env_file.read_text()), reused=True)


def start_cluster(*, fresh: bool = False, reuse_running: bool = False, timeout: float = 900) -> ClusterInfo:
    """Install Slurm if needed and start a fresh cluster; return what to use.

    Raises ClusterRefused when start.sh will not take over this machine (see its
    message), ClusterError when the cluster did not come up.

    fresh: restart even if this process already started one (which is reused
        otherwise, so two callers in one pytest session share it).
    reuse_running: use a cluster that is already up (started by hand with
        start.sh, say) as it is, without wiping it.
    timeout: seconds for the whole start, apt-get install on a bare machine
        included (start.sh itself gives each daemon 60 s).
    """
    if not fresh:
        mine = os.environ.get(_STARTED_BY) == str(os.getpid())
        if mine or reuse_running:
            info = running_cluster()
            if info is not None:
                return info
    try:
        proc = subprocess.run(
            ["bash", str(START_SH)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        stop_cluster(check=False)
        raise ClusterError(f"start.sh took more than {timeout} s:\n{stderr}") from None
    if proc.returncode == EXIT_REFUSED:
        refused = [ln.split("refused: ", 1)[1] for ln in proc.stderr.splitlines() if "refused: " in ln]
        raise ClusterRefused("; ".join(refused) or proc.stderr.strip())
    if proc.returncode != 0:
        raise ClusterError(f"start.sh failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    os.environ[_STARTED_BY] = str(os.getpid())
    return _info(_parse_exports(proc.stdout), reused=False)


def stop_cluster(*, check: bool = True) -> None:
    """Stop everything start.sh started (idempotent). Logs stay in the state dir."""
    os.environ.pop(_STARTED_BY, None)
    proc = subprocess.run(
        ["bash", str(STOP_SH)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise ClusterError(f"stop.sh failed (exit {proc.returncode}):\n{proc.stderr}")
