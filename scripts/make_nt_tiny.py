"""Write the bundled `nt-tiny` checkpoint: Nucleotide Transformer v1 architecture, random weights.

The files are exactly what a Hub checkpoint of InstaDeep's v1 models holds (config.json,
vocab.txt, tokenizer_config.json, special_tokens_map.json, model.safetensors), so the same
`from_pretrained` code loads both. The weights are random (fixed seed): for tests and demos only.

    python scripts/make_nt_tiny.py [OUT_DIR]
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch
from transformers import EsmConfig, EsmForMaskedLM

SPECIAL_TOKENS = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]
BASES = "ATCG"
K = 6
MAX_TOKENS = 1000  # v1 models: 1000 tokens including <cls>
SEED = 20261127


def vocabulary() -> list[str]:
    """The NT v1 vocabulary: special tokens, every 6-mer over ATCG, then single bases and N."""
    kmers = ["".join(p) for p in itertools.product(BASES, repeat=K)]
    return SPECIAL_TOKENS + kmers + list(BASES) + ["N"]


def config(vocab_size: int) -> EsmConfig:
    """An NT-v1-shaped ESM config (absolute positions, token dropout), scaled down."""
    return EsmConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=MAX_TOKENS + 2,  # positions start at pad_token_id + 1
        position_embedding_type="absolute",
        token_dropout=True,
        emb_layer_norm_before=False,
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=1,
        mask_token_id=2,
        is_folding_model=False,
        tie_word_embeddings=True,
        architectures=["EsmForMaskedLM"],
    )


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    special = {
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "cls_token": "<cls>",
        "bos_token": "<bos>",
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    tokenizer_config = {
        "tokenizer_class": "EsmTokenizer",
        "model_max_length": MAX_TOKENS,
        "eos_token": None,  # NT prepends <cls> and appends nothing
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    torch.manual_seed(SEED)
    model = EsmForMaskedLM(config(len(vocab))).eval()
    model.save_pretrained(out, safe_serialization=True)
    for stray in ("generation_config.json",):
        (out / stray).unlink(missing_ok=True)


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "genome_index" / "assets" / "nt-tiny"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
