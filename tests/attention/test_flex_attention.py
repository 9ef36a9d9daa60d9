"""``attn_impl="flex"``: exact window attention through FlexAttention, on the CPU (eager: torch's unfused reference
path; compiled: inductor's C++ flex template), against ``"softmax"``."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import load_golden

import nystra_hub
from nystra_hub.attention import (
    ATTENTION_REGISTRY,
    ATTN_IMPLS,
    FLEX_IMPL,
    TableBiasWindowAttention,
    flex_unavailable_reason,
    shifted_window_mask,
)
from nystra_hub.attention import flex as flex_module
from nystra_hub.attention.core import softmax_attention
from nystra_hub.attention.flex import flex_head_dim, flex_window_attention

FLEX_MISSING = flex_unavailable_reason()
requires_flex = pytest.mark.skipif(FLEX_MISSING is not None, reason=f"attn_impl 'flex' cannot run: {FLEX_MISSING}")
# Inductor's C++ flex template needs x86 with AVX2 or better, and not macOS (torch/_inductor/kernel/flex/flex_cpu.py)
COMPILED_FLEX_ON_CPU = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") and sys.platform != "darwin"
requires_compiled_flex = pytest.mark.skipif(
    FLEX_MISSING is not None or not COMPILED_FLEX_ON_CPU,
    reason=f"compiled flex on the CPU needs flex_attention ({FLEX_MISSING or 'present'}) and x86 with AVX2 "
           f"(this CPU: {torch.backends.cpu.get_cpu_capability()}, {sys.platform})",
)
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

HEADS = 3
# (module window, window the tokens come from, feature map, shift): square, rectangular, smaller than the module's
GEOMETRIES = {
    "square-8x8": ((8, 8), (8, 8), (16, 32), (4, 4)),
    "rectangular-4x8": ((4, 8), (4, 8), (8, 32), (2, 4)),
    "smaller-4x4-in-8x8": ((8, 8), (4, 4), (8, 12), (2, 2)),
}
GOLDEN_CASES = ["swinir_sr_x2_pixelshuffle", "uformer_tiny_modulator", "dehazeformer_tiny_dwconv"]


def window_case(geometry: str, head_dim: int, shifted: bool, use_bias: bool, images: int = 2, dtype=torch.float32):
    """(flex module, softmax module with the same weights, q, k, v, mask, window): a bias table of unit scale (the
    trained tables' order of magnitude, where the default 0.02 init would hide a wrong bias)."""
    module_window, window, (h, w), shift = GEOMETRIES[geometry]
    flex = TableBiasWindowAttention(module_window, HEADS, head_dim**-0.5, attn_impl=FLEX_IMPL)
    with torch.no_grad():
        flex.relative_position_bias_table.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(1))
    reference = TableBiasWindowAttention(module_window, HEADS, head_dim**-0.5)
    reference.load_state_dict(flex.state_dict())
    for module in (flex, reference):
        module.use_position_bias = use_bias
    windows = (h // window[0]) * (w // window[1])
    gen = torch.Generator().manual_seed(head_dim)
    q, k, v = (torch.randn(images * windows, HEADS, window[0] * window[1], head_dim, generator=gen).to(dtype)
               for _ in range(3))
    mask = shifted_window_mask(h, w, window, shift) if shifted else None
    return flex, reference, q, k, v, mask, window


def test_flex_is_registered_and_selectable_like_the_others():
    assert FLEX_IMPL == "flex" and FLEX_IMPL in ATTENTION_REGISTRY and FLEX_IMPL not in ATTN_IMPLS
    assert ATTENTION_REGISTRY.get(FLEX_IMPL) is flex_window_attention
    model = nystra_hub.build_model("swinir", upscale=2, in_chans=3, img_size=16, window_size=4, depths=[2],
                                   embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler="pixelshuffle",
                                   resi_connection="1conv", attn_impl="flex")
    assert model.attn_impl == "flex"
    assert model.set_attn_impl("softmax").attn_impl == "softmax"
    assert model.set_attn_impl("flex").attn_impl == "flex"


@pytest.mark.parametrize(("head_dim", "device", "runs_at"), [
    (30, "cpu", 32), (12, "cpu", 16), (24, "cpu", 32), (8, "cpu", 8), (3, "cpu", 4), (32, "cpu", 32),
    (8, "cuda", 16), (12, "cuda", 16), (30, "cuda", 32), (64, "cuda", 64),
])
def test_head_dim_is_padded_to_a_power_of_two_at_least_16_off_the_cpu(head_dim, device, runs_at):
    assert flex_head_dim(head_dim, device) == runs_at


@requires_flex
@pytest.mark.parametrize("head_dim", [30, 12, 8, 5])
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_matches_softmax_in_float32(geometry, head_dim):
    """Every window shape, shifted (masked) or not, bias on and off, through module.attend as a model calls it."""
    for shifted in (False, True):
        for use_bias in (True, False):
            flex, reference, q, k, v, mask, window = window_case(geometry, head_dim, shifted, use_bias)
            with torch.no_grad():
                out = flex.attend(q, k, v, mask, window)
                expected = reference.attend(q, k, v, mask, window)
            assert out.shape == expected.shape and out.dtype == torch.float32
            assert (out - expected).abs().max().item() <= 1e-5, (shifted, use_bias)


@requires_flex
@pytest.mark.parametrize("head_dim", [30, 12])
def test_bfloat16_is_within_bfloat16_rounding(head_dim):
    """flex in bfloat16 against float32 math on the same bfloat16 inputs (bias rounded to bfloat16 as attend does).

    Tolerance 2^-8·max|v|: flex keeps the scores and the softmax in float32, rounds the probabilities to bfloat16
    before P·v (a relative error ≤ 2^-9 on each, so ≤ 2^-9·max|v| on an output that is their weighted sum of v)
    and rounds the output to bfloat16 (≤ 2^-9·|out| ≤ 2^-9·max|v|). "softmax" in bfloat16 rounds the scores
    themselves to bfloat16 (logits of a few units lose ~1e-2 each), so flex is at least as close as it."""
    flex, reference, q, k, v, mask, window = window_case("square-8x8", head_dim, True, True, dtype=torch.bfloat16)
    with torch.no_grad():
        out = flex.attend(q, k, v, mask, window)
        bias = flex.position_bias(torch.bfloat16, q.device, window).float()
        exact = softmax_attention(reference, q.float(), k.float(), v.float(), bias, mask, window)
        softmax_bf16 = reference.attend(q, k, v, mask, window)
    assert out.dtype == torch.bfloat16
    flex_error = (out.float() - exact).abs().max().item()
    assert flex_error <= 2**-8 * v.float().abs().max().item()
    assert flex_error <= (softmax_bf16.float() - exact).abs().max().item()


@requires_flex
@pytest.mark.parametrize("case", GOLDEN_CASES)
def test_golden_models_match_their_official_outputs(case):
    """Whole models, under inference mode as restore runs them: SwinIR (head dim 12, shifted windows), Uformer
    (8, shift masks, modulator), DehazeFormer (4, MLP bias, no mask)."""
    model, io, _ = load_golden(case, "flex")
    with torch.inference_mode():
        out = model(io["input"])
        assert (out - io["output"]).abs().max().item() < 1e-4
        assert (model.set_attn_impl("softmax")(io["input"]) - out).abs().max().item() < 1e-4


@requires_flex
def test_gradients_on_the_cpu_say_to_use_sdpa():
    flex, _, q, k, v, mask, window = window_case("square-8x8", 12, True, True)
    with pytest.raises(NotImplementedError, match="no backward on the CPU.*'sdpa'"):
        flex.attend(q.requires_grad_(), k, v, mask, window)


def test_a_torch_without_flex_gets_a_clear_error(monkeypatch):
    monkeypatch.setattr(flex_module, "_IMPORT_ERROR", "torch 2.4 has no torch.nn.attention.flex_attention")
    flex, _, q, k, v, mask, window = window_case("square-8x8", 12, True, True)
    with torch.no_grad(), pytest.raises(RuntimeError, match="'flex' cannot run: torch 2.4 has no .*use 'sdpa'"):
        flex.attend(q, k, v, mask, window)


@requires_compiled_flex
@pytest.mark.slow
def test_compiled_attention_matches_softmax():
    """torch.compile of module.attend: inductor's C++ flex template, the bias gathered in the graph, SwinIR-M's
    head dim 30 padded to 32, shifted windows. 25 s to compile on a cold cache here (2 cores, shared)."""
    flex, reference, q, k, v, mask, window = window_case("square-8x8", 30, True, True)
    with torch.no_grad():
        compiled = torch.compile(flex.attend, dynamic=False)(q, k, v, mask, window)
        assert (compiled - reference.attend(q, k, v, mask, window)).abs().max().item() <= 1e-5


@requires_compiled_flex
@pytest.mark.slow
def test_compiled_golden_model_matches_its_official_output():
    """The smallest golden SwinIR (head dim 6, a shifted block) compiled whole. 37 s on a cold cache here (2 cores,
    shared)."""
    model, io, _ = load_golden("swinir_lightsr_x3_direct", "flex")
    with torch.inference_mode():
        out = torch.compile(model, dynamic=False)(io["input"])
    assert (out - io["output"]).abs().max().item() < 1e-4
