"""Exact window attention in one Triton kernel: ``attn_impl="triton"``, a fused-kernel candidate for CUDA.

One program per (window·batch row, head, block of up to 64 queries) computes softmax(q·kᵀ·scale + bias + mask)·v
with the scores in on-chip memory only: the position bias ``bias[head]`` and the shift mask of the row's window
(``additive[row % nW]``, windows batch-major) are read inside the kernel, so no (windows, heads, N, N) tensor is
written. Keys are visited in blocks with the running-maximum (online) softmax, so any window size fits; the scores
and the running sums are float32 whatever the input dtype, and the probabilities enter the second product in the
input dtype (as ``"softmax"``'s ``attn @ v`` does). Head dims that are not a power of two (SwinIR-M's 30, SwinIR-S's
10) are padded to the next power of two inside the kernel by masked loads (at least 16, ``tl.dot``'s minimum), not
by copies of q, k and v. The mask keeps the released models' -100 (not -inf): ``exp(-100)`` is not zero.

Where it runs: a CUDA device (the kernel is compiled by Triton on first use per shape and dtype), or the CPU under
Triton's interpreter when the environment has ``TRITON_INTERPRET=1`` before this module is imported (the
interpreter executes the kernel in numpy: slow, for tests; tests/attention/test_triton_window.py runs it so).
Anything else gets a RuntimeError naming the alternatives. Inference only: no backward (training uses "sdpa").
Not chosen by default anywhere: it is a benchmark arm until a GPU run measures it against "sdpa" and "flex".
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from nystra_hub.attention.core import WindowAttentionBase, register_attn_impl
from nystra_hub.attention.flex import flex_head_dim

try:
    import triton
    import triton.language as tl
except ImportError as error:  # Triton ships with torch's Linux wheels only
    triton = tl = None
    _IMPORT_ERROR = f"Triton is not installed ({error})"
else:
    _IMPORT_ERROR = None

TRITON_IMPL = "triton"
BLOCK_QUERIES = 64  # queries per program: a 64-token window is one program per head
BLOCK_KEYS = 64  # keys per step of the online softmax


def triton_interpreting() -> bool:
    """Whether Triton kernels of this process run in its interpreter (CPU tensors allowed)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_unavailable_reason(device: torch.device) -> str | None:
    """Why ``attn_impl="triton"`` cannot run on ``device`` in this process, or None when it can."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if device.type == "cuda" or triton_interpreting():
        return None
    return (f"the Triton kernel runs on CUDA devices, or on the CPU under Triton's interpreter (TRITON_INTERPRET=1 "
            f"set before importing nystra_hub; slow, for tests), not on {device.type}")


if triton is not None:

    @triton.jit
    def _window_attention_kernel(
        q_ptr, k_ptr, v_ptr, bias_ptr, mask_ptr, out_ptr, scale, tokens, head_dim, num_heads, num_windows,
        stride_row, stride_head, stride_token,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, UPCAST: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        row_head = tl.program_id(0)
        row = row_head // num_heads
        head = row_head % num_heads
        queries = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        base = row * stride_row + head * stride_head
        query_ok = queries < tokens
        q = tl.load(q_ptr + base + queries[:, None] * stride_token + dims[None, :],
                    mask=query_ok[:, None] & (dims[None, :] < head_dim), other=0.0)
        if UPCAST:
            q = q.to(tl.float32)
        running_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
        running_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
        for start in range(0, tokens, BLOCK_N):
            keys = start + tl.arange(0, BLOCK_N)
            key_ok = keys < tokens
            tile_ok = key_ok[:, None] & (dims[None, :] < head_dim)
            k = tl.load(k_ptr + base + keys[:, None] * stride_token + dims[None, :], mask=tile_ok, other=0.0)
            v = tl.load(v_ptr + base + keys[:, None] * stride_token + dims[None, :], mask=tile_ok, other=0.0)
            if UPCAST:
                k, v = k.to(tl.float32), v.to(tl.float32)
            scores = tl.dot(q, tl.trans(k)).to(tl.float32) * scale
            pair = queries[:, None] * tokens + keys[None, :]
            pair_ok = query_ok[:, None] & key_ok[None, :]
            if HAS_BIAS:
                scores += tl.load(bias_ptr + head * tokens * tokens + pair, mask=pair_ok, other=0.0).to(tl.float32)
            if HAS_MASK:
                window = row % num_windows
                scores += tl.load(mask_ptr + window * tokens * tokens + pair, mask=pair_ok, other=0.0).to(tl.float32)
            scores = tl.where(key_ok[None, :], scores, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(scores, 1))
            probabilities = tl.exp(scores - new_max[:, None])
            rescale = tl.exp(running_max - new_max)
            running_sum = running_sum * rescale + tl.sum(probabilities, 1)
            acc = acc * rescale[:, None] + tl.dot(probabilities.to(v.dtype), v).to(tl.float32)
            running_max = new_max
        out = acc / running_sum[:, None]
        tl.store(out_ptr + base + queries[:, None] * stride_token + dims[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=query_ok[:, None] & (dims[None, :] < head_dim))


def _interpreter_needs_float32(dtype: torch.dtype) -> bool:
    """Triton's interpreter (3.8) multiplies bfloat16 tiles in ``tl.dot`` as raw bits (a 16×16 product off by
    1e10), while loads, stores and casts of bfloat16 are right: there the tiles are cast to float32 before the
    products. A compiled kernel multiplies bfloat16 on the tensor cores."""
    return dtype == torch.bfloat16 and triton_interpreting()


def _kernel_head_dim(head_dim: int) -> int:
    """The head dim the kernel's tiles use: the next power of two, at least 16 (``tl.dot``'s minimum), as flex's
    Triton template on CUDA."""
    return flex_head_dim(head_dim, "cuda")


def triton_window_attention(
    module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window
) -> Tensor:
    """Exact window attention (``"softmax"``'s function) in one Triton kernel launch (module docstring)."""
    reason = triton_unavailable_reason(q.device)
    if reason is not None:
        raise RuntimeError(f"attn_impl {TRITON_IMPL!r} cannot run: {reason}; use 'sdpa' (same function)")
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(f"attn_impl {TRITON_IMPL!r} has no backward; use 'sdpa' to train, or run under "
                                  "torch.no_grad()")
    rows, heads, tokens, head_dim = q.shape
    q, k, v = (t.contiguous() for t in (q, k, v))
    out = torch.empty_like(q)
    bias_ = bias.contiguous() if bias is not None else q  # never read when HAS_BIAS is false
    mask_ = mask.additive.contiguous() if mask is not None and mask.cut.numel() else None
    grid = (rows * heads, triton.cdiv(tokens, BLOCK_QUERIES))
    _window_attention_kernel[grid](
        q, k, v, bias_, mask_ if mask_ is not None else q, out, float(module.scale), tokens, head_dim, heads,
        mask_.shape[0] if mask_ is not None else 1, q.stride(0), q.stride(1), q.stride(2),
        HAS_BIAS=bias is not None, HAS_MASK=mask_ is not None, UPCAST=_interpreter_needs_float32(q.dtype),
        BLOCK_M=BLOCK_QUERIES, BLOCK_N=BLOCK_KEYS, BLOCK_D=_kernel_head_dim(head_dim),
    )
    return out


register_attn_impl(TRITON_IMPL, triton_window_attention)
