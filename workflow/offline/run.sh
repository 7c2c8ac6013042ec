#!/usr/bin/env bash
# Run the pipeline on a GPU machine that has no network, from packages carried
# there (built here by workflow/offline/build_bundle.sh). Run from the
# repository root on that machine. The image must have python3 with PyTorch
# (CUDA), pandas, matplotlib, PyYAML and Jinja2.
#
#   bash workflow/offline/run.sh stash        # keep the vLLM bundle parts carried so far (.whl1 ..)
#   bash workflow/offline/run.sh install      # install .whl_pipeline/ (and the vLLM bundle once all its parts are there)
#   bash workflow/offline/run.sh snakemake ARGS...
#       # snakemake --profile profiles/local ARGS, with the installed packages, e.g.
#       #   --configfiles config/config.yaml config/studies/h200.yaml
#
# This is the same pipeline as on a laptop or the cluster: each cell is a
# local submitit job given the GPU(s) of its GPU type, writes one result file,
# and a second run measures only the cells that have none.
# State lives in /tmp (it lasts as long as the machine does):
#   /tmp/cgb_site   the pipeline's packages, /tmp/vllm_site   vLLM and its needs
#   /tmp/vllm_parts the bundle's parts as they arrive
set -euo pipefail

PARTS=/tmp/vllm_parts
SITE=/tmp/cgb_site
VLLM_SITE=/tmp/vllm_site
PY="$(command -v python3)"

stash() {
  mkdir -p "$PARTS"
  for d in .whl[0-9]*; do
    [[ -f "$d/bundle.part" ]] || continue
    i="$(cat "$d/INDEX")"
    mv "$d/bundle.part" "$PARTS/part.$i"
    [[ -f "$d/NPARTS" ]] && cp "$d/NPARTS" "$d/bundle.sha256" "$PARTS/"
  done
  echo "[offline] vLLM bundle parts here: $(find "$PARTS" -name 'part.*' | wc -l) of $(cat "$PARTS/NPARTS" 2>/dev/null || echo '?')"
}

install_pipeline() {
  if [[ -d .whl_pipeline ]] && compgen -G ".whl_pipeline/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl_pipeline/*.whl
    echo "[offline] pipeline packages installed in $SITE"
  elif [[ ! -x "$SITE/bin/snakemake" ]]; then
    echo "[offline] no .whl_pipeline/ carried and nothing installed in $SITE: run build_bundle.sh here and carry .whl_pipeline" >&2
    exit 1
  fi
}

install_vllm() {
  [[ -f "$PARTS/NPARTS" ]] || { echo "[offline] no vLLM bundle (part 1 never arrived): vllm cells will be 'unsupported'"; return 0; }
  n="$(cat "$PARTS/NPARTS")"
  files=()
  for i in $(seq 1 "$n"); do
    if [[ ! -f "$PARTS/part.$i" ]]; then
      echo "[offline] vLLM bundle part $i of $n missing: not installed yet" >&2
      return 0
    fi
    files+=("$PARTS/part.$i")
  done
  actual="$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)"
  if [[ "$actual" != "$(cat "$PARTS/bundle.sha256")" ]]; then
    echo "[offline] vLLM bundle sha256 $actual does not match $(cat "$PARTS/bundle.sha256"): a part is stale or damaged" >&2
    exit 1
  fi
  rm -rf "$VLLM_SITE" && mkdir -p "$VLLM_SITE/bin"
  cat "${files[@]}" | xz -d | tar -C "$VLLM_SITE" -xf -
  # vLLM's console script with this machine's interpreter. The __main__ guard matters: vLLM
  # starts its engine core with multiprocessing "spawn", which re-imports the main script.
  printf '#!%s\nimport sys\nfrom vllm.entrypoints.cli.main import main\nif __name__ == "__main__":\n    sys.exit(main())\n' "$PY" >"$VLLM_SITE/bin/vllm"
  chmod +x "$VLLM_SITE/bin/vllm"
  rm -f "$PARTS"/part.*
  # Byte-compile once: every vLLM cell starts Python processes that import all of vLLM.
  "$PY" -m compileall -q -j 0 "$VLLM_SITE" >/dev/null || true
  echo "[offline] vLLM installed in $VLLM_SITE"
}

env_vars() {
  export PATH="$SITE/bin:$VLLM_SITE/bin:$PATH"
  export PYTHONPATH="$PWD/workflow:$SITE:$VLLM_SITE${PYTHONPATH:+:$PYTHONPATH}"
  export VLLM_USE_FLASHINFER_SAMPLER=0 # flashinfer is not in the bundle
  export PYTHONUNBUFFERED=1
  unset PYTHONDONTWRITEBYTECODE
}

case "${1:-}" in
  stash) stash ;;
  install)
    stash
    install_pipeline
    install_vllm
    env_vars
    "$PY" -c "import snakemake, submitit, torch; print('[offline] snakemake', snakemake.__version__, '| torch', torch.__version__, '| GPUs:', torch.cuda.device_count(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    ;;
  snakemake)
    shift
    env_vars
    [[ -x "$SITE/bin/snakemake" ]] || { echo "[offline] run '$0 install' first" >&2; exit 1; }
    # A run killed at a time limit leaves Snakemake's lock behind; this machine runs one at a time.
    "$SITE/bin/snakemake" --profile profiles/local "$@" --unlock >/dev/null 2>&1 || true
    exec "$SITE/bin/snakemake" --profile profiles/local "$@"
    ;;
  *)
    echo "usage: $0 stash | install | snakemake [snakemake args...]" >&2
    exit 2
    ;;
esac
