"""The shared attention core: golden PnP-Nystra math, the reference code's traps fixed, caching, masks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import GOLDEN
from safetensors.torch import load_file

from nystra_hub.attention import (
    NystraParams,
    TableBiasWindowAttention,
    WindowMask,
    bounded_redo,
    iterative_pinv,
    landmark_grid,
    nystrom_attention,
    pool_bias,
    pool_tokens,
    redo_capacity,
    redo_overflowed,
    relative_position_index,
    set_attn_impl,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from nystra_hub.attention import core as attention_core

PNP_CASES = sorted(p.parent.name for p in (GOLDEN / "pnp_attention").glob("*/case.json"))


def exact_attention(q, k, v, scale, bias=None, mask=None):
    logits = (q * scale) @ k.transpose(-1, -2)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits + mask
    return logits.softmax(-1) @ v


class ToyAttention(TableBiasWindowAttention):
    """The core with a bias table and nothing else, to test it in isolation."""


@pytest.mark.parametrize("case", PNP_CASES)
def test_reference_pnp_nystra_reproduced(case):
    info = json.loads((GOLDEN / "pnp_attention" / case / "case.json").read_text())
    t = load_file(str(GOLDEN / "pnp_attention" / case / "tensors.safetensors"))
    x = t["input"]
    b, n, c = x.shape
    heads = info["num_heads"]
    qkv = F.linear(x, t["qkv.weight"], t["qkv.bias"]).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    window = (info["window_size"], info["window_size"])
    assert landmark_grid(window, info["num_landmarks"]) == tuple(info["landmark_grid"])
    out, trustworthy = nystrom_attention(
        qkv[0], qkv[1], qkv[2], window=window, landmarks=info["num_landmarks"], iters=info["pinv_iterations"],
        tau=info["kernel_threshold"], scale=(c // heads) ** -0.5,
    )
    assert trustworthy.all()
    y = F.linear(out.transpose(1, 2).reshape(b, n, c), t["proj.weight"], t["proj.bias"])
    assert (y - t["output"]).abs().max().item() < 1e-5


def test_window_output_independent_of_batch_mates():
    # The reference scales the pseudo-inverse by one max over the whole batch; ours is per window and head.
    q, k, v = (torch.randn(3, 2, 64, 16) for _ in range(3))
    kw = dict(window=(8, 8), landmarks=16, iters=2, tau=5.0, scale=0.25)
    alone, _ = nystrom_attention(q[:1], k[:1], v[:1], **kw)
    q2, k2 = q.clone(), k.clone()
    q2[1:] *= 6.0  # batch-mates with much larger logits (hence much larger kernel sums)
    k2[1:] *= 6.0
    together, _ = nystrom_attention(q2, k2, v, **kw)
    assert torch.allclose(alone[0], together[0], atol=1e-6, rtol=0)


def test_per_matrix_pinv_scaling():
    a = torch.rand(4, 16, 16) + torch.eye(16)
    a[1] *= 1000
    z = iterative_pinv(a, iters=25)
    for i in range(4):
        assert torch.allclose(a[i] @ z[i], torch.eye(16), atol=1e-3)


def test_untrustworthy_denominators_fall_back_to_exact():
    torch.manual_seed(3)
    module = ToyAttention(8, 2, scale=1.0, attn_impl="nystra", nystra=NystraParams(landmarks=16, iters=6, bias="drop"))
    # Unstructured (non-smooth) tokens: the half-converged pseudo-inverse gives some rows denominators <= 0.
    q, k, v = (torch.randn(6, 2, 64, 8) for _ in range(3))
    with torch.no_grad():
        _, trustworthy = nystrom_attention(q, k, v, window=(8, 8), landmarks=16, iters=6, tau=5.0, scale=1.0)
        out = module.attend(q, k, v)
        exact = exact_attention(q, k, v, 1.0, module.position_bias(q.dtype, q.device))
    bad_windows = (~trustworthy).flatten(1).any(1)
    assert bad_windows.any(), "the construction should produce untrustworthy rows"
    assert torch.isfinite(out).all()
    assert torch.allclose(out[bad_windows], exact[bad_windows], atol=1e-5)


def untrustworthy_qkv(bad_windows: list[int], windows: int = 8) -> tuple[torch.Tensor, ...]:
    """q, k, v of ``windows`` windows whose ``bad_windows`` have queries ~1e19: their Nyström products overflow."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(windows, 2, 64, 8, generator=gen) for _ in range(3))
    q[bad_windows] *= 1e19
    return q, k, v


@pytest.mark.parametrize("masked", [False, True])
def test_bounded_redo_matches_the_unbounded_one_within_capacity(monkeypatch, masked):
    """Inside bounded_redo a layer recomputes redo_capacity windows, the untrustworthy first: with no more of
    them than that, the same output as the eager path's redo of exactly the untrustworthy ones."""
    monkeypatch.setattr(attention_core, "REDO_CAPACITY_SHARE", 1 / 4)  # 2 of 8 windows
    module = ToyAttention(8, 2, 8**-0.5, attn_impl="nystra", nystra=NystraParams())
    mask = shifted_window_mask(16, 32, (8, 8), (4, 4)) if masked else None  # 8 windows, 4 cut
    q, k, v = untrustworthy_qkv([1, 5])
    with torch.no_grad():
        unbounded = module.attend(q, k, v, mask)
        with bounded_redo() as flags:
            bounded = module.attend(q, k, v, mask)
    assert len(flags) == 1 and not redo_overflowed(flags)
    assert torch.isfinite(bounded).all() and (bounded - unbounded).abs().max() <= 1e-6


def test_bounded_redo_flags_a_layer_with_more_untrustworthy_windows_than_it_redoes():
    assert redo_capacity(8) == 1 and redo_capacity(64) == 2 and redo_capacity(1000) == 32
    module = ToyAttention(8, 2, 8**-0.5, attn_impl="nystra", nystra=NystraParams())
    with torch.no_grad(), bounded_redo() as flags:
        module.attend(*untrustworthy_qkv([1]))
        module.attend(*untrustworthy_qkv([1, 5]))
    assert [bool(flag) for flag in flags] == [False, True] and redo_overflowed(flags)
    assert not redo_overflowed([])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_pinv_in_float32(dtype):
    q, k, v = (torch.randn(4, 2, 64, 16) for _ in range(3))
    kw = dict(window=(8, 8), landmarks=16, iters=2, tau=5.0, scale=0.25)
    ref, _ = nystrom_attention(q, k, v, **kw)
    out, ok = nystrom_attention(q.to(dtype), k.to(dtype), v.to(dtype), **kw)
    assert out.dtype == dtype and torch.isfinite(out).all() and ok.all()
    assert (out.float() - ref).abs().max() < (2e-2 if dtype == torch.bfloat16 else 5e-3)


def test_landmark_grids():
    assert landmark_grid((8, 8), 16) == (4, 4)
    assert landmark_grid((32, 32), 32) == (4, 8)  # the reference's 4x8 for m=32
    assert landmark_grid((8, 16), 32) == (4, 8)  # non-square: 2x2 blocks
    assert landmark_grid((7, 7), 16) == (4, 4)  # does not divide: unequal blocks
    with pytest.raises(ValueError, match="do not fit"):
        landmark_grid((2, 2), 16)
    with pytest.raises(ValueError, match="positive"):
        landmark_grid((8, 8), 0)


@pytest.mark.parametrize("window,grid", [((8, 8), (4, 4)), ((4, 8), (2, 4)), ((7, 7), (4, 4)), ((6, 9), (2, 3))])
def test_pooling_is_block_mean(window, grid):
    x = torch.randn(3, window[0] * window[1], 5)
    pooled = pool_tokens(x, window, grid)
    tokens = x.view(3, window[0], window[1], 5)
    rows = [round(i * window[0] / grid[0]) for i in range(grid[0] + 1)]
    cols = [round(j * window[1] / grid[1]) for j in range(grid[1] + 1)]
    expected = torch.stack([
        tokens[:, rows[i]:rows[i + 1], cols[j]:cols[j + 1]].mean((1, 2))
        for i in range(grid[0]) for j in range(grid[1])
    ], 1)
    assert torch.allclose(pooled, expected, atol=1e-6)


def test_pooled_bias_matches_pooled_logits():
    # A landmark's logit is the block mean of logits: pooling q (or k) and the bias must commute with it.
    window, grid = (8, 8), (4, 4)
    q, k = torch.randn(64, 8), torch.randn(64, 8)
    bias = torch.randn(1, 64, 64)
    to_lm, from_lm, between = pool_bias(bias, window, grid)
    logits = q @ k.T + bias[0]
    qb, kb = pool_tokens(q, window, grid), pool_tokens(k, window, grid)
    assert torch.allclose(q @ kb.T + to_lm[0], pool_tokens(logits.T, window, grid).T, atol=1e-5)
    assert torch.allclose(qb @ k.T + from_lm[0], pool_tokens(logits, window, grid), atol=1e-5)
    assert torch.allclose(qb @ kb.T + between[0],
                          pool_tokens(pool_tokens(logits, window, grid).T, window, grid).T, atol=1e-5)


def test_one_landmark_per_token_is_exact_with_bias():
    # m = N: landmarks are the tokens, G_A = G, and the converged pseudo-inverse makes the kernel exact.
    torch.manual_seed(1)
    q, k, v = torch.randn(2, 1, 16, 8) * 0.3, torch.randn(2, 1, 16, 8) * 0.3, torch.randn(2, 1, 16, 8)
    bias = torch.randn(1, 16, 16) * 0.5
    out, ok = nystrom_attention(q, k, v, window=(4, 4), landmarks=16, iters=40, tau=50.0, scale=0.35,
                                pooled_bias=pool_bias(bias, (4, 4), (4, 4)))
    assert ok.all()
    assert (out - exact_attention(q, k, v, 0.35, bias)).abs().max() < 1e-3


def test_error_shrinks_with_landmarks_on_smooth_windows():
    # Smooth token fields (like image features) are well approximated by block landmarks.
    torch.manual_seed(0)
    base = torch.randn(8, 2, 1, 4, 4, 16)
    field = F.interpolate(base.view(16, 4, 4, 16).permute(0, 3, 1, 2), size=(8, 8), mode="bilinear",
                          align_corners=True).permute(0, 2, 3, 1).reshape(8, 2, 64, 16)
    q, k, v = field, field.roll(1, dims=-1), torch.randn(8, 2, 64, 16)
    exact = exact_attention(q, k, v, 0.25)
    errors = []
    for m in (4, 16, 64):
        out, _ = nystrom_attention(q, k, v, window=(8, 8), landmarks=m, iters=6, tau=5.0, scale=0.25)
        errors.append(((out - exact).norm() / exact.norm()).item())
    assert errors[0] > errors[1] > errors[2]  # measured: 0.37, 0.077, 0.053
    assert errors[1] < 0.1
    # With one landmark per token the only error left is the unconverged pseudo-inverse.
    converged, _ = nystrom_attention(q, k, v, window=(8, 8), landmarks=64, iters=20, tau=5.0, scale=0.25)
    assert ((converged - exact).norm() / exact.norm()).item() < 1e-3


def test_window_partition_roundtrip_and_order():
    x = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).view(2, 8, 12, 3)
    windows = window_partition(x, (4, 6))
    assert windows.shape == (2 * 2 * 2, 24, 3)
    assert torch.equal(windows[1].view(4, 6, 3), x[0, :4, 6:])  # row-major windows, batch outermost
    assert torch.equal(window_reverse(windows, (4, 6), 8, 12), x)


def test_shift_mask_cached_and_official():
    a = shifted_window_mask(16, 24, (8, 8), (4, 4))
    assert shifted_window_mask(16, 24, (8, 8), (4, 4)).additive is a.additive  # built once
    assert a.additive.shape == (6, 64, 64)
    assert set(a.additive.unique().tolist()) == {0.0, -100.0}
    # Only the last row and the last column of windows are cut by the cyclic shift.
    assert a.cut.tolist() == [2, 3, 4, 5]
    assert torch.equal(a.cut_additive, a.additive[a.cut])
    assert not a.additive[[0, 1]].any()
    with pytest.raises(ValueError, match="multiple"):
        shifted_window_mask(20, 24, (8, 8), (4, 4))


def _block_inputs(windows=6, heads=2):
    return tuple(torch.randn(windows * 2, heads, 64, 8) for _ in range(3))


@pytest.mark.parametrize("impl", ["sdpa", "nystra"])
def test_masked_windows_exact_elsewhere_unmasked(impl):
    mask = shifted_window_mask(16, 24, (8, 8), (4, 4))
    module = ToyAttention(8, 2, scale=8**-0.5, attn_impl="softmax")
    q, k, v = _block_inputs()
    with torch.no_grad():
        exact = module.attend(q, k, v, mask)
        module.set_attn_impl(impl, NystraParams(landmarks=16, mask="exact"))
        out = module.attend(q, k, v, mask)
        module.set_attn_impl(impl, NystraParams(landmarks=16, mask="drop"))
        dropped = module.attend(q, k, v, mask)
    cut = torch.cat([mask.cut, mask.cut + mask.num_windows])
    assert torch.allclose(out[cut], exact[cut], atol=1e-5)  # cut windows: exact with their mask
    keep = torch.tensor([i for i in range(12) if i not in cut.tolist()])
    assert torch.allclose(out[keep], dropped[keep], atol=1e-6)
    if impl == "sdpa":
        assert torch.allclose(out, exact, atol=1e-5)
    else:
        assert not torch.allclose(dropped[cut], exact[cut], atol=1e-2)  # dropping the mask is visible


def test_position_bias_cached_until_table_changes():
    module = ToyAttention(8, 2, scale=0.3)
    calls = []
    original = module.compute_position_bias

    def counting(window):
        calls.append(1)
        return original(window)

    module.compute_position_bias = counting
    q, k, v = _block_inputs(1)
    with torch.no_grad():
        module.attend(q, k, v)
        module.attend(q, k, v)
        assert len(calls) == 1
        module.relative_position_bias_table.add_(1.0)  # in-place update bumps the version
        module.attend(q, k, v)
        assert len(calls) == 2
    out = module.attend(q, k, v)  # gradients flow: no cache, bias is differentiable
    out.sum().backward()
    assert module.relative_position_bias_table.grad is not None and len(calls) == 3


def test_attention_switching_validates():
    module = ToyAttention(8, 2, scale=0.3)
    with pytest.raises(ValueError, match="attn_impl"):
        set_attn_impl(module, "flash")
    with pytest.raises(TypeError, match="unknown nystra parameter"):
        set_attn_impl(module, "nystra", landmark=16)
    with pytest.raises(ValueError, match="bias"):
        set_attn_impl(module, "nystra", bias="keep")
    with pytest.raises(ValueError, match="landmarks"):
        NystraParams(landmarks=0)
    assert module.attn_impl == "softmax"  # a failed switch changes nothing
    set_attn_impl(module, "nystra", landmarks=4)
    assert module.attn_impl == "nystra" and module.nystra.landmarks == 4
    assert NystraParams.paper().bias == "drop" and NystraParams.paper().mask == "drop"


def test_window_mask_from_additive():
    additive = torch.zeros(4, 16, 16)
    additive[2, 3, 5] = -100.0
    m = WindowMask.from_additive(additive)
    assert m.cut.tolist() == [2] and m.cut_additive.shape == (1, 16, 16)


@pytest.mark.parametrize("method", ["bicubic", "geometric", "centre"])
def test_bias_table_resize(method):
    module = ToyAttention(8, 3, scale=0.3)
    table = module.relative_position_bias_table.detach().clone()
    module.set_window_size(16, method)
    assert module.relative_position_bias_table.shape == (31 * 31, 3)
    assert torch.equal(module.relative_position_index, relative_position_index((16, 16)))
    new = module.relative_position_bias_table.detach().view(31, 31, 3)
    old = table.view(15, 15, 3)
    assert torch.allclose(new[15, 15], old[7, 7], atol=0.05 if method == "bicubic" else 1e-6)  # offset (0, 0)
    if method == "centre":
        assert torch.equal(new[8:23, 8:23], old)  # trained offsets keep their exact values
        assert torch.equal(new[0, 0], old[0, 0])  # beyond: nearest trained offset
    q, k, v = (torch.randn(1, 3, 256, 4) for _ in range(3))
    with torch.no_grad():
        assert module.attend(q, k, v).shape == (1, 3, 256, 4)
