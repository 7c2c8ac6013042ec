#!/usr/bin/env bash
# Installs what this project needs into .venv (idempotent; fast when done before).
#   bash workflow/scripts/setup_env.sh          # run the study
#   bash workflow/scripts/setup_env.sh --test   # also the test tools (pytest, ruff, snakefmt)
set -euo pipefail
cd "$(dirname "$0")/../.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

if [[ ! -x .venv/bin/python ]]; then
  echo "[setup] creating .venv with $(python3 --version)"
  python3 -m venv .venv
fi
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# torch first and pinned: on a machine without a GPU, 2.13.0 is a local CPU wheel;
# an unpinned torch would pull a multi-GB CUDA build. Skip if a torch is already there.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0"
  "${pip[@]}" "torch==2.13.0"
fi

extras=""
[[ $want_test == 1 ]] && extras="[test]"
echo "[setup] installing cudagraph-bench${extras} (editable) and its dependencies"
# compat mode: a plain .pth path entry, so Snakemake's plugin discovery
# (pkgutil over sys.path) finds snakemake_executor_plugin_submitit.
"${pip[@]}" -e ".${extras}" --config-settings editable_mode=compat

echo "[setup] ready: $(.venv/bin/snakemake --version | head -1) in .venv"
