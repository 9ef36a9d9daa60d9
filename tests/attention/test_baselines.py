"""The comparison baselines (exact-paper, windowed Nyströmformer, Performer) in the attention registry."""

from __future__ import annotations

import pytest
import torch
from test_attention import exact_attention as exact

from nystra_hub.attention import (
    ATTENTION_REGISTRY,
    NystraParams,
    TableBiasWindowAttention,
    WindowMask,
    baselines,
    check_attn_impl,
    shifted_window_mask,
)

baselines.register_baselines()  # importing the module registers nothing

HEADS, D, WINDOW = 2, 16, 8
N = WINDOW * WINDOW


class ToyAttention(TableBiasWindowAttention):
    """The core with a bias table and nothing else."""


def toy(impl: str, **nystra) -> ToyAttention:
    module = ToyAttention(WINDOW, HEADS, D**-0.5)
    module.set_attn_impl(impl, NystraParams(**nystra) if nystra else None)
    return module


def block_constant(windows: int, scale: float, gen: torch.Generator) -> torch.Tensor:
    """(windows, heads, N, d) tokens constant over the 2x2 blocks of an 8x8 window (16 distinct values)."""
    values = torch.randn(windows, HEADS, 4, 4, D, generator=gen) * scale
    grid = values.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (w, h, 8, 8, d)
    return grid.reshape(windows, HEADS, N, D)


def test_registered_and_selectable():
    for name in baselines.BASELINE_IMPLS + baselines.CHUNKED_IMPLS:
        assert ATTENTION_REGISTRY.get(name) is baselines.BASELINE_FUNCTIONS[name]
        assert check_attn_impl(name) == name
    assert baselines.register_baselines() == baselines.BASELINE_IMPLS  # idempotent


@pytest.mark.parametrize("impl", baselines.BASELINE_IMPLS)
def test_shapes_dtype_and_determinism(impl):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(6, HEADS, N, D, generator=gen) for _ in range(3))
    module = toy(impl)
    out = module.attend(q, k, v)
    assert out.shape == (6, HEADS, N, D) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out, module.attend(q, k, v))
    half = module.attend(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert half.dtype == torch.bfloat16 and torch.isfinite(half.float()).all()


def test_exact_paper_drops_bias_and_mask():
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(4, HEADS, N, D, generator=gen) for _ in range(3))
    module = toy("exact-paper")
    with torch.no_grad():
        module.relative_position_bias_table.normal_(0, 1.0, generator=gen)
    mask = shifted_window_mask(16, 16, (WINDOW, WINDOW), (4, 4))
    out = module.attend(q, k, v, mask)
    torch.testing.assert_close(out, exact(q, k, v, D**-0.5), atol=1e-5, rtol=1e-5)
    # ... whereas the exact arm uses both
    module.set_attn_impl("softmax")
    assert (module.attend(q, k, v, mask) - out).abs().max() > 1e-2


def test_nystromformer_exact_on_rank_m_windows():
    """Tokens constant over the landmark blocks make the kernel exactly rank m: with a converged pseudo-inverse
    the softmax-normalised Nyström factorisation reproduces exact attention."""
    gen = torch.Generator().manual_seed(3)
    q, k = block_constant(3, 1.5, gen), block_constant(3, 1.5, gen)
    v = torch.randn(3, HEADS, N, D, generator=gen)
    module = toy("nystromformer", landmarks=16, iters=30, bias="drop")
    out = module.attend(q, k, v)
    reference = exact(q, k, v, D**-0.5)
    assert (out - reference).abs().max() < 1e-3
    # few iterations (the reference's 2) do not converge: a bounded but visible error
    module.set_attn_impl("nystromformer", NystraParams(landmarks=16, iters=2, bias="drop"))
    err_2 = (module.attend(q, k, v) - reference).abs().max()
    assert 1e-3 < err_2 < 1.0


def test_nystromformer_pooled_bias_consistent_with_block_bias():
    """With a bias that is constant over landmark blocks the pooled bias is exact, like the tokens."""
    gen = torch.Generator().manual_seed(4)
    q, k = block_constant(2, 1.5, gen), block_constant(2, 1.5, gen)
    v = torch.randn(2, HEADS, N, D, generator=gen)
    module = toy("nystromformer", landmarks=16, iters=30, bias="pooled")
    coords = torch.arange(N)
    block = (coords // WINDOW // 2) * 4 + (coords % WINDOW) // 2
    block_bias = torch.randn(HEADS, 16, 16, generator=gen)
    bias = block_bias[:, block][:, :, block]  # (heads, N, N) constant over block pairs
    module.compute_position_bias = lambda window=None: bias
    out = module.attend(q, k, v)
    assert (out - exact(q, k, v, D**-0.5, bias)).abs().max() < 1e-3


def test_performer_unbiased_estimate_converges():
    gen = torch.Generator().manual_seed(5)
    q, k = (torch.randn(4, HEADS, N, D, generator=gen) * 0.5 for _ in range(2))
    v = torch.randn(4, HEADS, N, D, generator=gen)
    reference = exact(q, k, v, D**-0.5)
    errors = {}
    for features in (8, 4096):
        module = toy("performer", bias="drop")
        module.performer_features = features
        with torch.no_grad():
            errors[features] = float((module.attend(q, k, v) - reference).norm() / reference.norm())
    assert errors[4096] < 0.05
    assert errors[4096] < errors[8] / 3


def test_performer_features_default_to_landmarks_and_setter():
    model_module = toy("performer", landmarks=8)
    assert baselines.performer_features(model_module) == 8
    container = torch.nn.Sequential(model_module)
    baselines.set_performer_features(container, 32, seed=3)
    assert baselines.performer_features(model_module) == 32 and model_module.performer_seed == 3
    with pytest.raises(ValueError):
        baselines.set_performer_features(container, 0)


@pytest.mark.parametrize("impl", ["nystromformer", "performer"])
def test_fallback_to_exact_when_budget_covers_the_window(impl):
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, HEADS, N, D, generator=gen) for _ in range(3))
    module = toy(impl, landmarks=N)
    torch.testing.assert_close(module.attend(q, k, v), exact(q, k, v, D**-0.5, module.position_bias(
        q.dtype, q.device)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["nystromformer", "performer"])
def test_mask_modes(impl):
    """mask="exact": the windows a shift mask cuts are exact (bias and mask); mask="drop": they are not."""
    gen = torch.Generator().manual_seed(7)
    mask: WindowMask = shifted_window_mask(16, 16, (WINDOW, WINDOW), (4, 4))
    q, k, v = (torch.randn(mask.num_windows, HEADS, N, D, generator=gen) for _ in range(3))
    module = toy(impl, mask="exact")
    bias = module.position_bias(q.dtype, q.device)
    reference = exact(q, k, v, D**-0.5, bias, mask.additive.unsqueeze(1))
    out = module.attend(q, k, v, mask)
    cut = mask.cut
    assert cut.numel() == 3
    torch.testing.assert_close(out[cut], reference[cut], atol=1e-5, rtol=1e-5)
    module.set_attn_impl(impl, module.nystra.replace(mask="drop"))
    dropped = module.attend(q, k, v, mask)
    assert (dropped[cut] - reference[cut]).abs().max() > 1e-2
    uncut = [i for i in range(mask.num_windows) if i not in set(cut.tolist())]
    torch.testing.assert_close(dropped[uncut], out[uncut])


def test_model_level_switch_runs():
    import nystra_hub

    model = nystra_hub.build_model("swinir", upscale=2, in_chans=3, img_size=16, window_size=8, depths=[2],
                                   embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler="pixelshuffledirect")
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        reference = model(x)
        for impl in baselines.BASELINE_IMPLS:
            model.set_attn_impl(impl)
            out = model(x)
            assert out.shape == reference.shape and torch.isfinite(out).all()


def test_chunked_exact_implementations_are_the_same_function(monkeypatch):
    monkeypatch.setattr(baselines, "CHUNK_BYTES", 1)  # one window per chunk
    gen = torch.Generator().manual_seed(8)
    mask = shifted_window_mask(16, 32, (WINDOW, WINDOW), (4, 4))
    q, k, v = (torch.randn(2 * mask.num_windows, HEADS, N, D, generator=gen) for _ in range(3))
    for chunked, plain in (("exact-chunked", "softmax"), ("exact-paper-chunked", "exact-paper")):
        module = toy(chunked)
        with torch.no_grad():
            module.relative_position_bias_table.normal_(0, 1.0, generator=gen)
            out = module.attend(q, k, v, mask)
            module.set_attn_impl(plain)
            torch.testing.assert_close(out, module.attend(q, k, v, mask), atol=1e-6, rtol=1e-6)


def test_geometry_first_made_in_inference_mode_serves_autograd_later():
    """The process-wide geometry caches are built outside inference mode: restoring an image (inference mode)
    and then computing gradients through the same window geometry must both work."""
    size, shift = (24, 24), (4, 4)  # a geometry no other test uses, so this test makes it first
    with torch.inference_mode():
        first = shifted_window_mask(*size, (WINDOW, WINDOW), shift)
    assert not first.cut.is_inference() and not first.additive.is_inference()
    module = toy("nystromformer", mask="exact")
    mask = shifted_window_mask(*size, (WINDOW, WINDOW), shift)
    q = torch.randn(mask.num_windows, HEADS, N, D, requires_grad=True)
    module.attend(q, q, q, mask)[mask.cut].sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
