"""Seed this GPU machine's tile cache from a committed result file's tuning record.

    PYTHONPATH=workflow python3 workflow/offline/seed_tile_cache.py RESULT.json [MODEL]

On a lent machine with little device time left, the graph pool's first cell would spend about
two minutes tuning again what an earlier machine of the same kind measured. This writes that
tuning (RESULT.json's details.tuning) into the cache (tuning.seed_cache), which refuses a record
made under another cache key. The cells then record cache_hit true and the record's tuned_utc;
say so where their results are described. MODEL: a key of config/config.yaml `models` (default:
llama-3.1-8b).
"""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

from cudagraph_bench.config import load as load_config

CONFIG = "config/config.yaml"


def main(result: str, model: str = "llama-3.1-8b") -> None:
    try:
        record = json.loads(Path(result).read_text()).get("details", {}).get("tuning")
    except (OSError, ValueError, AttributeError) as e:
        sys.exit(f"{result}: not a readable result file ({type(e).__name__}: {e})")
    if not record or "cache_file" not in record:
        sys.exit(
            f"{result}: no details.tuning with a cache_file (a graph_pool cell of the triton backend on a GPU has one)"
        )
    models = load_config([CONFIG])["models"]
    if model not in models:
        sys.exit(f"{CONFIG}: no model {model!r} under `models` (there: {', '.join(models)})")
    # the inputs are checked first: these need Triton and a GPU
    import torch
    from cudagraph_bench.backends.graph_pool.kernels import default_kernel_options
    from cudagraph_bench.backends.graph_pool.model import ModelArgs
    from cudagraph_bench.backends.graph_pool.tuning import seed_cache

    args = ModelArgs.from_preset(models[model])
    # what the cache key reads of a model: its shape, its device and its launch options (no weights)
    m = SimpleNamespace(args=args, output=SimpleNamespace(weight=torch.empty(0, device="cuda")),
                        kernel_opts=default_kernel_options("cuda"))  # fmt: skip
    print(f"seeded {seed_cache(m, record)} from {result} (tuned {record.get('tuned_utc')})")


if __name__ == "__main__":
    main(*sys.argv[1:])
