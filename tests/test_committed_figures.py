"""The paper outputs rebuild byte for byte from the committed results (no GPU, Slurm or vLLM)."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def committed(path: str) -> bytes | None:
    proc = subprocess.run(["git", "-C", str(REPO), "show", f"HEAD:{path}"], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def committed_raw() -> list[str]:
    proc = subprocess.run(["git", "-C", str(REPO), "ls-files", "results/raw"], capture_output=True, text=True)
    return proc.stdout.split() if proc.returncode == 0 else []


@pytest.mark.skipif(not committed_raw(), reason="no committed results (or no git) to rebuild from")
def test_figures_and_tables_rebuild_identically_from_committed_results(tmp_path):
    for rel in committed_raw():
        dest = tmp_path / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(committed(rel))
    proc = subprocess.run([sys.executable, "-m", "cudagraph_bench", "rebuild", "--results", str(tmp_path / "results")],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    built = sorted(
        p
        for p in (tmp_path / "results").rglob("*")
        if p.is_file() and p.suffix in (".pdf", ".png", ".csv", ".md", ".tex")
    )
    built = [p for p in built if "raw" not in p.parts]
    assert len(built) >= 6 * 2 + 3 * 3
    for p in built:
        rel = p.relative_to(tmp_path).as_posix()
        want = committed(rel)
        assert want is not None, f"{rel} is built but not committed"
        assert hashlib.sha256(p.read_bytes()).hexdigest() == hashlib.sha256(want).hexdigest(), rel
    shutil.rmtree(tmp_path / "results")
