"""DNABERT-2 double, its Triton flash attention: importable wherever `triton` is, while its
kernels take CUDA tensors only and assert so, which on the CPU is a bare `AssertionError`
(upstream: zhihan1996/DNABERT-2-117M flash_attn_triton.py, `_flash_attn_forward`)."""

import triton  # noqa: F401
import triton.language as tl  # noqa: F401


def flash_attn_qkvpacked_func(qkv, bias=None, causal=False, softmax_scale=None):
    assert qkv.is_cuda
    raise RuntimeError("the double has no kernels: this path is only taken on a GPU")
