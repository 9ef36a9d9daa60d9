"""PnP-Nystra: training-free Nyström approximation of windowed softmax attention (arXiv 2506.08520).

For one window of N tokens and one head, with A = q kᵀ·scale (+ position bias):
    exact      O = exp(A) v / exp(A) 1
    Nyström    exp(A) ≈ G_L · pinv(G_A) · G_U,   G_L = φ(q k̄ᵀ), G_U = φ(q̄ kᵀ), G_A = φ(q̄ k̄ᵀ)
where q̄, k̄ are m landmarks (2-D average pools of the window's token grid) and φ(x) = exp(min(x, τ)) + relu(x − τ).
The numerator and the softmax denominator come out of the same products (the reference appends a ones column to v).

Differences from the reference code, on purpose (see ../shared/reference/pnp-nystra.md):
- the pseudo-inverse is scaled per matrix (per window and head), so a window's output never depends on which
  other windows share its batch; the reference scales by one max over the whole batch;
- the kernel blocks and the pseudo-inverse run in float32 when the inputs are half precision;
- rows whose approximate denominator is not safely positive are reported to the caller (which recomputes their
  windows exactly) instead of dividing by ≤ 0;
- any window works, square or not: landmark blocks that do not divide it are contiguous blocks of unequal size;
- the position bias can be kept: it is pooled exactly like the landmarks (see :func:`pool_bias`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from nystra_hub.attention.windows import geometry_cache

# A row's approximate denominator must be at least this fraction of the crude landmark estimate of the true one
# ((N/m)·Σ_l G_L[i, l]); below it the Nyström estimate has lost its meaning and the window is recomputed exactly.
DENOMINATOR_FLOOR = 1e-3


def landmark_grid(window: tuple[int, int], landmarks: int) -> tuple[int, int]:
    """The (lh, lw) grid of landmark blocks, lh·lw = m.

    Square windows follow the reference: the factor pair of m closest to square with lh ≤ lw (16 → 4×4,
    32 → 4×8). Non-square windows prefer, among the pairs that divide the window, the one with the most square
    blocks, then any pair that fits. A grid that does not divide the window uses contiguous blocks of unequal
    size (window 7, 4 blocks: 2, 2, 2, 1 tokens): see :func:`pool_tokens`.
    """
    wh, ww = window
    if isinstance(landmarks, bool) or not isinstance(landmarks, int) or landmarks < 1:
        raise ValueError(f"landmarks must be a positive int, got {landmarks!r}")
    pairs = [(a, landmarks // a) for a in range(1, landmarks + 1) if landmarks % a == 0]
    fitting = [p for p in pairs if p[0] <= wh and p[1] <= ww]
    if not fitting:
        raise ValueError(f"{landmarks} landmarks do not fit a {wh}x{ww} window (at most one per token)")
    if wh == ww:
        square = [p for p in fitting if p[0] <= p[1]]
        return max(square, key=lambda p: p[0]) if square else min(fitting, key=lambda p: abs(p[0] - p[1]))
    dividing = [p for p in fitting if wh % p[0] == 0 and ww % p[1] == 0]
    return min(dividing or fitting, key=lambda p: abs(wh / p[0] - ww / p[1]))


def _block_bounds(size: int, blocks: int) -> list[tuple[int, int]]:
    edges = [round(i * size / blocks) for i in range(blocks + 1)]
    return list(zip(edges[:-1], edges[1:]))


def pooling_weights(window: tuple[int, int], grid: tuple[int, int]) -> list[list[float]]:
    """The (m, N) weights averaging each landmark block's tokens (contiguous, possibly unequal blocks), as lists:
    a constant that torch.compile and torch.export take as it is."""
    wh, ww = window
    rows = []
    for r0, r1 in _block_bounds(wh, grid[0]):
        for c0, c1 in _block_bounds(ww, grid[1]):
            weight = 1.0 / ((r1 - r0) * (c1 - c0))
            rows.append([weight if r0 <= r < r1 and c0 <= c < c1 else 0.0 for r in range(wh) for c in range(ww)])
    return rows


@geometry_cache(maxsize=64)
def pooling_matrix(
    window: tuple[int, int], grid: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> Tensor:
    """(m, N) matrix averaging each landmark block's tokens (:func:`pooling_weights`), cached."""
    return torch.tensor(pooling_weights(window, grid), dtype=torch.float64).to(device=device, dtype=dtype)


def pool_tokens(x: Tensor, window: tuple[int, int], grid: tuple[int, int]) -> Tensor:
    """Average (..., N, d) window tokens over the blocks of ``grid``: (..., m, d), landmarks in row-major order.

    A product with the cached (m, N) averaging matrix: one GEMM, much faster on CPU than a mean over the
    strided block dims of a reshaped view (which measured ~half the Nyström time at window 8). Under
    torch.compile the matrix is a constant built from the weights: dynamo cannot enter the cache's lock, and
    ``assume_constant_result`` fails when a graph asks for it twice (inductor: "ConstantSource already in
    seen_sources").
    """
    window, grid = tuple(window), tuple(grid)
    if torch.compiler.is_compiling() and not torch.compiler.is_exporting():
        return torch.tensor(pooling_weights(window, grid), dtype=x.dtype, device=x.device) @ x
    return pooling_matrix(window, grid, x.device, x.dtype) @ x


def pool_bias(bias: Tensor, window: tuple[int, int], grid: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """Pool an (H, N, N) logit bias the way the landmarks pool tokens.

    A landmark query's logit against key j is the mean of its block's logits q_i·k_j, so the consistent bias
    is the block mean of b_ij. Returns (token→landmark (H, N, m), landmark→token (H, m, N), landmark→landmark
    (H, m, m)). All three depend only on the bias table and the window: cache them.
    """
    from_landmarks = pool_tokens(bias, window, grid)  # pools queries: (H, m, N)
    to_landmarks = pool_tokens(bias.transpose(-1, -2), window, grid).transpose(-1, -2)  # pools keys: (H, N, m)
    between = pool_tokens(to_landmarks, window, grid)  # (H, m, m)
    return to_landmarks.contiguous(), from_landmarks.contiguous(), between.contiguous()


def thresholded_exp(x: Tensor, tau: float, inplace: bool = False) -> Tensor:
    """φ(x) = exp(min(x, τ)) + relu(x − τ): exp, continued linearly above τ so it cannot overflow.

    ``inplace`` overwrites ``x`` (one temporary instead of three; only where no gradient is needed)."""
    if not inplace:
        return torch.exp(torch.clamp(x, max=tau)) + F.relu(x - tau)
    excess = (x - tau).clamp_(min=0)
    return x.clamp_(max=tau).exp_().add_(excess)


def iterative_pinv(a: Tensor, iters: int) -> Tensor:
    """Razavi et al.'s iteration for pinv(a) on (..., m, m), initial scaling per matrix (not per batch)."""
    absolute = a.abs()
    max_row_sum = absolute.sum(dim=-1).amax(dim=-1)
    max_col_sum = absolute.sum(dim=-2).amax(dim=-1)
    z = a.transpose(-1, -2) / (max_row_sum * max_col_sum)[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - az @ (15 * eye - az @ (7 * eye - az)))
    return z


def nystrom_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    window: tuple[int, int],
    landmarks: int,
    iters: int,
    tau: float,
    scale: float,
    pooled_bias: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """PnP-Nystra attention on (..., N, d) windows (q unscaled). Returns (output, trustworthy_rows (..., N)).

    ``pooled_bias`` is :func:`pool_bias` of the position bias (or None to drop it, as the paper does); each part
    broadcasts over the leading dims. The output has the dtype of ``v``; rows flagged untrustworthy hold
    unusable values and must be recomputed by the caller. Autocast is switched off inside: the kernel and the
    pseudo-inverse are computed in float32 for half-precision inputs, whatever the surrounding context.
    """
    if not torch.is_autocast_enabled(q.device.type):
        # (entered only when needed: a traced autocast block becomes a wrapped subgraph the converters handle
        # slowly, and an export traces without autocast)
        return _nystrom_attention(q, k, v, window, landmarks, iters, tau, scale, pooled_bias)
    with torch.autocast(device_type=q.device.type, enabled=False):
        return _nystrom_attention(q, k, v, window, landmarks, iters, tau, scale, pooled_bias)


def _nystrom_attention(q, k, v, window, landmarks, iters, tau, scale, pooled_bias):
    out_dtype = v.dtype
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    # One contiguous copy each (they are strided views of a fused qkv projection); every product below reads
    # q and k twice, and a strided operand would be copied by every product.
    q, k, v = (t.to(compute).contiguous() for t in (q, k, v))
    inplace = not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad))
    n = q.shape[-2]
    grid = landmark_grid(window, landmarks)
    # The reference scales q before pooling; scaling the small pooled tensors instead is the same product
    # (pool(s·q) = s·pool(q), (s·q)k̄ᵀ = q(s·k̄)ᵀ) and saves a pass over q.
    q_landmarks = pool_tokens(q, window, grid) * scale
    k_landmarks = pool_tokens(k, window, grid)
    logits_l = q @ (k_landmarks * scale).transpose(-1, -2)  # (..., N, m)
    logits_u = q_landmarks @ k.transpose(-1, -2)  # (..., m, N)
    logits_a = q_landmarks @ k_landmarks.transpose(-1, -2)  # (..., m, m)
    if pooled_bias is not None:
        bias_l, bias_u, bias_a = (b.to(compute) for b in pooled_bias)
        if inplace:
            logits_l.add_(bias_l), logits_u.add_(bias_u), logits_a.add_(bias_a)
        else:
            logits_l, logits_u, logits_a = logits_l + bias_l, logits_u + bias_u, logits_a + bias_a
    kernel_l = thresholded_exp(logits_l, tau, inplace)
    kernel_u = thresholded_exp(logits_u, tau, inplace)
    pinv = iterative_pinv(thresholded_exp(logits_a, tau, inplace), iters)
    # G_U [v, 1] without materialising the ones column: numerator and denominator together, (..., m, d+1).
    landmark_values = torch.cat([kernel_u @ v, kernel_u.sum(dim=-1, keepdim=True)], dim=-1)
    # Associate as G_L (Z (G_U [v,1])): m·m·(d+1) instead of the reference's N·m·m for G_L Z.
    product = kernel_l @ (pinv @ landmark_values)
    numerator, denominator = product[..., :-1], product[..., -1]
    crude = kernel_l.sum(dim=-1).mul_(n / grid[0] / grid[1])
    trustworthy = torch.isfinite(denominator) & (denominator > DENOMINATOR_FLOOR * crude)
    safe = torch.where(trustworthy, denominator, torch.ones_like(denominator)).unsqueeze(-1)
    out = numerator.div_(safe) if inplace else numerator / safe
    return out.to(out_dtype), trustworthy
