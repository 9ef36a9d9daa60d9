"""Comparison attention implementations for the measurement harness (``bench``, ``fidelity``).

Registered in the attention registry by :func:`register_baselines` (an explicit call; importing this module
registers nothing); training-free, no parameters, no effect unless a model is switched to one of them
(``model.set_attn_impl("performer")``). Each is called as ``fn(module, q, k, v, bias, mask, window)`` with the
tensors :meth:`WindowAttentionBase.attend` works on: q, k, v (B·nW, heads, N, d) with q unscaled, ``bias``
(heads, N, N) or None, ``mask`` a :class:`WindowMask` or None, ``window`` the (h, w) window the tokens come
from (the module's, or a smaller one for a feature map smaller than the window; None means the module's); they
read ``module.scale`` and ``module.nystra``.

- ``"exact-paper"``: exact softmax attention with the relative-position bias and the shifted-window mask
  ignored: the "Original" the paper times and scores at an enlarged window (pnp-nystra.md). Unfused
  (scores, softmax, @ v) like the reference code and like the ``"softmax"`` arm.
- ``"nystromformer"``: a windowed Nyströmformer (Xiong et al., 2021) with softmax-normalised factors,
  softmax(q k̄ᵀ) · pinv(softmax(q̄ k̄ᵀ)) · softmax(q̄ kᵀ) v, on the same pooled landmarks as PnP-Nystra
  (``module.nystra.landmarks`` on the same grid, ``module.nystra.iters`` pseudo-inverse iterations with the
  same per-matrix initial scaling). Bias: ``module.nystra.bias`` — "pooled" adds the block-pooled bias to the
  three logit blocks exactly as PnP-Nystra does, "drop" ignores it. Mask: ``module.nystra.mask`` — "exact"
  recomputes the windows a shift mask cuts with exact attention, "drop" ignores it.
- ``"performer"``: Performer's FAVOR+ positive orthogonal random features (Choromanski et al., 2021),
  φ(x) = exp(wᵀx − ‖x‖²/2)/√r with x = q·scale^½ (resp. k·scale^½), so E[φ(q)ᵀφ(k)] = exp(scale·qᵀk).
  r = ``module.performer_features`` when set (:func:`set_performer_features`), else ``module.nystra.landmarks``
  (the same rank budget as the Nyström methods). The features are drawn once per (d, r, seed) from a fixed
  seed (``module.performer_seed``, default 0), so outputs are deterministic. The position bias cannot enter a
  random-feature kernel (it is not low rank): always ignored. Mask: as for ``"nystromformer"``.

Two memory-bounded exact implementations serve the quality measurements at enlarged windows, where a window-64
score matrix of a large image does not fit in memory: ``"exact-chunked"`` (the original math: scores + bias +
mask, softmax, @ v) and ``"exact-paper-chunked"`` (bias and mask dropped), both computed a few windows at a time
(at most :data:`CHUNK_BYTES` of scores per chunk). Same function as ``"softmax"`` / ``"exact-paper"``; they exist
so ``nystra-hub fidelity`` can score those arms on whole images, and are not timed by ``bench``.

The approximations fall back to exact attention (:func:`~.core.sdpa_attention`) when the landmark/feature
count is at least the number of tokens, like PnP-Nystra. Half-precision inputs are computed in float32.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nystra_hub.attention.core import (
    ATTENTION_REGISTRY,
    WindowAttentionBase,
    attention_modules,
    cut_window_indices,
    redo_exact,
    register_attn_impl,
    sdpa_attention,
)
from nystra_hub.attention.nystrom import iterative_pinv, landmark_grid, pool_tokens
from nystra_hub.attention.windows import WindowMask, geometry_cache

BASELINE_IMPLS = ("exact-paper", "nystromformer", "performer")
CHUNKED_IMPLS = ("exact-chunked", "exact-paper-chunked")
DEFAULT_PERFORMER_SEED = 0
CHUNK_BYTES = 256 * 2**20


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _redo_cut_windows(module: WindowAttentionBase, out: Tensor, q, k, v, bias, mask: WindowMask | None) -> None:
    """Apply ``module.nystra.mask``: "exact" recomputes the windows the shift mask cuts (bias and mask applied)."""
    if mask is not None and module.nystra.mask == "exact" and mask.cut.numel():
        redo_exact(module, out, q, k, v, bias, mask, cut_window_indices(q.shape[0], mask))


def exact_paper_attention(
    module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window=None
) -> Tensor:
    """softmax(q kᵀ·scale) v: exact attention with bias and mask dropped (the paper's enlarged-window baseline)."""
    attn = (q * module.scale) @ k.transpose(-2, -1)
    return attn.softmax(dim=-1) @ v


def _chunked_exact(module: WindowAttentionBase, q, k, v, bias, mask, with_bias: bool) -> Tensor:
    windows, heads, n, _ = q.shape
    per_window = heads * n * n * q.element_size() * 3  # scores, softmax and a temporary
    step = max(1, CHUNK_BYTES // per_window)
    out = torch.empty_like(v)
    for start in range(0, windows, step):
        stop = min(windows, start + step)
        logits = (q[start:stop] * module.scale) @ k[start:stop].transpose(-2, -1)
        if with_bias:
            if bias is not None:
                logits = logits + bias.unsqueeze(0)
            if mask is not None:
                index = torch.arange(start, stop, device=q.device) % mask.num_windows
                logits = logits + mask.additive.index_select(0, index).unsqueeze(1)
        out[start:stop] = logits.softmax(dim=-1) @ v[start:stop]
    return out


def exact_chunked_attention(module: WindowAttentionBase, q, k, v, bias, mask, window=None) -> Tensor:
    """The original exact attention (bias and mask applied), a few windows at a time."""
    return _chunked_exact(module, q, k, v, bias, mask, with_bias=True)


def exact_paper_chunked_attention(module: WindowAttentionBase, q, k, v, bias, mask, window=None) -> Tensor:
    """:func:`exact_paper_attention` (bias and mask dropped), a few windows at a time."""
    return _chunked_exact(module, q, k, v, bias, mask, with_bias=False)


def nystromformer_attention(
    module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window=None
) -> Tensor:
    """Windowed softmax-normalised Nyströmformer on PnP-Nystra's pooled landmarks (see the module docstring)."""
    params = module.nystra
    window = module.window_size if window is None else tuple(window)
    n = q.shape[-2]
    if params.landmarks >= n:
        return sdpa_attention(module, q, k, v, bias, mask, window)
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    q, k, v = q.to(compute), k.to(compute), v.to(compute)
    grid = landmark_grid(window, params.landmarks)
    qs = q * module.scale
    q_landmarks = pool_tokens(qs, window, grid)
    k_landmarks = pool_tokens(k, window, grid)
    logits_l = qs @ k_landmarks.transpose(-1, -2)  # (..., N, m)
    logits_u = q_landmarks @ k.transpose(-1, -2)  # (..., m, N)
    logits_a = q_landmarks @ k_landmarks.transpose(-1, -2)  # (..., m, m)
    if params.bias == "pooled" and bias is not None:
        bias_l, bias_u, bias_a = (b.to(compute) for b in module.pooled_position_bias(bias, window, grid))
        logits_l, logits_u, logits_a = logits_l + bias_l, logits_u + bias_u, logits_a + bias_a
    kernel_l = logits_l.softmax(dim=-1)
    kernel_u = logits_u.softmax(dim=-1)
    pinv = iterative_pinv(logits_a.softmax(dim=-1), params.iters)
    out = (kernel_l @ (pinv @ (kernel_u @ v))).to(out_dtype)
    _redo_cut_windows(module, out, q.to(out_dtype), k.to(out_dtype), v.to(out_dtype), bias, mask)
    return out


@geometry_cache(maxsize=32)
def _orthogonal_features(d: int, r: int, seed: int) -> Tensor:
    """(r, d) float64 FAVOR+ projection: stacked blocks of orthogonal rows, each row scaled to the norm of a
    Gaussian vector (chi-distributed lengths), from a fixed seed."""
    gen = torch.Generator().manual_seed(seed)
    blocks = []
    for _ in range(math.ceil(r / d)):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        blocks.append(q.T)
    rows = torch.cat(blocks)[:r]
    norms = torch.randn(r, d, generator=gen, dtype=torch.float64).norm(dim=1, keepdim=True)
    return rows * norms


def performer_features(module: nn.Module) -> int:
    return int(getattr(module, "performer_features", None) or module.nystra.landmarks)


def performer_attention(
    module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window=None
) -> Tensor:
    """FAVOR+ positive random-feature attention per window and head (see the module docstring)."""
    n, d = q.shape[-2:]
    r = performer_features(module)
    if r >= n:
        return sdpa_attention(module, q, k, v, bias, mask, window)
    out_dtype = v.dtype
    compute = _compute_dtype(q.dtype)
    qc, kc, vc = q.to(compute), k.to(compute), v.to(compute)
    seed = int(getattr(module, "performer_seed", DEFAULT_PERFORMER_SEED))
    w = _orthogonal_features(d, r, seed).to(device=q.device, dtype=compute)
    root = module.scale**0.5
    qs, ks = qc * root, kc * root
    q_proj, k_proj = qs @ w.T, ks @ w.T  # (..., N, r)
    q_log = q_proj - 0.5 * (qs * qs).sum(dim=-1, keepdim=True)
    k_log = k_proj - 0.5 * (ks * ks).sum(dim=-1, keepdim=True)
    # Stabilisers that cancel in the normalisation: per query row, and one per (window, head) for the keys.
    q_feat = torch.exp(q_log - q_log.amax(dim=-1, keepdim=True))
    k_feat = torch.exp(k_log - k_log.amax(dim=(-2, -1), keepdim=True))
    numerator = q_feat @ (k_feat.transpose(-1, -2) @ vc)
    denominator = q_feat @ k_feat.sum(dim=-2).unsqueeze(-1)
    out = (numerator / denominator.clamp_min(torch.finfo(compute).tiny)).to(out_dtype)
    _redo_cut_windows(module, out, q, k, v, bias, mask)
    return out


def set_performer_features(model: nn.Module, features: int | None, seed: int | None = None) -> nn.Module:
    """Set the random-feature count (None: the landmark count) and optionally the seed of every attention
    module of ``model`` for the ``"performer"`` implementation."""
    if features is not None and (isinstance(features, bool) or not isinstance(features, int) or features < 1):
        raise ValueError(f"performer features must be a positive int or None, got {features!r}")
    for _, module in attention_modules(model):
        module.performer_features = features
        if seed is not None:
            module.performer_seed = int(seed)
    return model


BASELINE_FUNCTIONS = {
    "exact-paper": exact_paper_attention,
    "nystromformer": nystromformer_attention,
    "performer": performer_attention,
    "exact-chunked": exact_chunked_attention,
    "exact-paper-chunked": exact_paper_chunked_attention,
}


def register_baselines() -> tuple[str, ...]:
    """Register the baselines and the chunked exact implementations in the attention registry; idempotent (every
    harness entry point may call it). Returns the baselines' names (:data:`BASELINE_IMPLS`)."""
    for name, fn in BASELINE_FUNCTIONS.items():
        if name in ATTENTION_REGISTRY and ATTENTION_REGISTRY.get(name) is fn:
            continue  # registered by an earlier call
        register_attn_impl(name, fn)  # raises if another function holds the name
    return BASELINE_IMPLS

__all__ = [
    "BASELINE_FUNCTIONS",
    "BASELINE_IMPLS",
    "CHUNKED_IMPLS",
    "exact_chunked_attention",
    "exact_paper_chunked_attention",
    "exact_paper_attention",
    "nystromformer_attention",
    "performer_attention",
    "register_baselines",
    "set_performer_features",
]
