"""Random-weight checkpoints of real Nucleotide Transformer shapes, for tests and benchmarks.

The Hub is out of reach here, so GPU checks and benchmarks use a checkpoint with the exact
layout and size of a real model (NT-2.5B: 2560 wide, 32 blocks) but random weights, saved
with `save_pretrained` beside nt-tiny's tokenizer files so it loads through the same code
as a downloaded one. Speed and numerics depend on the shape, not on the weight values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from genome_index.embedding.backends.checkpoints import BUNDLED

SHAPES: dict[str, dict[str, int] | None] = {
    "nt-tiny": None,
    "nt-500m": {"hidden_size": 1280, "num_hidden_layers": 24, "num_attention_heads": 20, "intermediate_size": 5120},
    "nt-2.5b": {"hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 20, "intermediate_size": 10240},
}
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def random_checkpoint(
    shape: str, folder: Path, device: str = "cpu", num_layers: int | None = None, seed: int = 0
) -> Path:
    """nt-tiny itself for `nt-tiny`; otherwise a bf16 checkpoint of `shape` in `folder`.

    A folder that already holds the checkpoint is reused (benchmarks share one 5 GB file).
    `num_layers` keeps the width but fewer blocks, for CPU tests of a real shape.
    """
    if SHAPES[shape] is None:
        return BUNDLED["nt-tiny"]
    from transformers import EsmConfig, EsmForMaskedLM

    folder = Path(folder)
    if (folder / "config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(BUNDLED["nt-tiny"] / name, folder / name)
    overrides = dict(SHAPES[shape] or {})
    if num_layers is not None:
        overrides["num_hidden_layers"] = num_layers
    config = EsmConfig.from_pretrained(BUNDLED["nt-tiny"], **overrides)
    torch.manual_seed(seed)
    with torch.device(device):
        model = EsmForMaskedLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    if device != "cpu":
        torch.cuda.empty_cache()
    return folder
