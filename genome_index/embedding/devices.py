"""Which device and number format a run computes in."""

from __future__ import annotations

import torch

from genome_index.errors import GenomeIndexError
from genome_index.settings import DEVICES_HELP, DTYPES

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str = "auto") -> torch.device:
    """`auto` -> the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise GenomeIndexError(f"unknown device {device!r}: use {DEVICES_HELP}") from None
    if chosen.type not in ("cpu", "cuda"):
        raise GenomeIndexError(f"unsupported device {device!r}: use {DEVICES_HELP}")
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise GenomeIndexError(f"device {device!r} asked for, but no CUDA GPU is available")
    return chosen


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` -> bfloat16 on CUDA (float16 where bf16 is missing), float32 on the CPU."""
    if dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in TORCH_DTYPES:
        raise GenomeIndexError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    return TORCH_DTYPES[dtype]
