"""DNABERT-2 double, its padding helpers: between blocks the hidden states are the real tokens
only, (tokens, dim) in row-major order (upstream: MAGICS-LAB/DNABERT_S
train/pretrain/DNABERT2_MIX/bert_padding.py @ e33f440f)."""

import torch


def unpad_input(hidden, attention_mask):
    """(rows, width, dim) -> ((tokens, dim), indices of the kept tokens, cumulative lengths, longest)."""
    lengths = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()
    cu_seqlens = torch.nn.functional.pad(torch.cumsum(lengths, dim=0, dtype=torch.int32), (1, 0))
    return hidden.reshape(-1, *hidden.shape[2:])[indices], indices, cu_seqlens, int(lengths.max())


def unpad_input_only(hidden, attention_mask):
    return hidden.reshape(-1, *hidden.shape[2:])[torch.nonzero(attention_mask.flatten(), as_tuple=False).flatten()]


def pad_input(hidden, indices, batch, seqlen):
    """(tokens, ...) -> (batch, seqlen, ...), zeros where the padding was."""
    out = torch.zeros(batch * seqlen, *hidden.shape[1:], device=hidden.device, dtype=hidden.dtype)
    out[indices] = hidden
    return out.reshape(batch, seqlen, *hidden.shape[1:])


def index_first_axis(hidden, indices):
    return hidden[indices]
