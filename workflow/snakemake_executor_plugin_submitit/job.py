"""What runs inside the submitted job: Snakemake's own command for that one job.

submitit pickles a call of `SnakemakeJob()(argv, cwd)` and runs it on the node,
so the rule body (the cell's measurement) runs there, not on the login node.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

import submitit

# Shell operators Snakemake may put in front of its command (envvar exports, a
# precommand). Only then is a shell needed; otherwise the argv runs as is.
_SHELL_TOKENS = {"&&", "||", ";", "|"}


def job_argv(exec_command: str) -> list[str]:
    """Split Snakemake's job command into an argv, or wrap it in bash when it chains commands."""
    argv = shlex.split(exec_command)
    if any(tok in _SHELL_TOKENS for tok in argv):
        return ["bash", "-c", exec_command]
    return argv


class SnakemakeJob(submitit.helpers.Checkpointable):
    """Runs one Snakemake job command. Checkpointable: a preempted job is
    requeued by submitit and runs the cell again from the start."""

    def __call__(self, argv: list[str], cwd: str) -> int:
        print(f"[cgb] running in {cwd}: {shlex.join(argv)}", flush=True)
        proc = subprocess.run(argv, cwd=cwd, stdout=sys.stdout, stderr=sys.stderr)
        if proc.returncode != 0:
            raise RuntimeError(f"the Snakemake job exited with status {proc.returncode}")
        return 0
