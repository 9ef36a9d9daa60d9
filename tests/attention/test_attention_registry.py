"""The attention registry (one signature for every implementation) and the attention-capture hook."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import nystra_hub
from nystra_hub.attention import (
    ATTENTION_REGISTRY,
    ATTN_IMPLS,
    TRITON_IMPL,
    AttentionRegistry,
    NystraParams,
    TableBiasWindowAttention,
    attention_modules,
    baselines,
    capture_attention,
    check_attn_impl,
    register_attn_impl,
    set_attn_impl,
    shifted_window_mask,
    triton_unavailable_reason,
)
from nystra_hub.attention.core import sdpa_attention, softmax_attention

HEADS, D, WINDOW = 2, 8, (8, 8)


class ToyAttention(TableBiasWindowAttention):
    """The core with a bias table and nothing else."""


def unused_impl(module, q, k, v, bias, mask, window):
    return v


def tiny_swinir():
    # depths [2]: one unshifted and one shifted (masked) block; a 16x16 input is 4x4 windows of 4x4
    return nystra_hub.build_model("swinir", upscale=2, in_chans=3, img_size=16, window_size=4, depths=[2],
                                  embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler="pixelshuffle",
                                  resi_connection="1conv").eval()


def test_builtins_are_registered_first():
    assert ATTN_IMPLS == ATTENTION_REGISTRY.builtin_names() == ("softmax", "sdpa", "nystra")
    assert ATTENTION_REGISTRY.names()[:3] == ATTN_IMPLS


@pytest.mark.parametrize("masked", [False, True])
def test_every_implementation_runs_through_the_registry_with_one_signature(masked):
    baselines.register_baselines()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(8, HEADS, 64, D, generator=gen) for _ in range(3))
    mask = shifted_window_mask(16, 32, WINDOW, (4, 4)) if masked else None  # 8 windows, the last 4 cut
    for name in ATTENTION_REGISTRY.names():
        if triton_unavailable_reason(q.device) is not None and name == TRITON_IMPL:
            continue  # CUDA or Triton's interpreter only: tests/attention/test_triton_window.py runs it there
        module = ToyAttention(WINDOW, HEADS, D**-0.5, attn_impl=name, nystra=NystraParams(landmarks=16))
        with torch.no_grad():
            bias = module.position_bias(q.dtype, q.device)
            direct = ATTENTION_REGISTRY.get(name)(module, q, k, v, bias, mask, WINDOW)
            assert direct.shape == q.shape and torch.isfinite(direct).all(), name
            assert torch.equal(direct, module.attend(q, k, v, mask)), name


def test_nystra_with_as_many_landmarks_as_tokens_runs_exact_sdpa():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(4, HEADS, 64, D, generator=gen) for _ in range(3))
    module = ToyAttention(WINDOW, HEADS, D**-0.5, attn_impl="nystra", nystra=NystraParams(landmarks=64))
    with torch.no_grad():
        bias = module.position_bias(q.dtype, q.device)
        assert torch.equal(module.attend(q, k, v), sdpa_attention(module, q, k, v, bias, None, WINDOW))


def test_duplicate_and_builtin_names_raise():
    baselines.register_baselines()
    with pytest.raises(ValueError, match="'softmax' is a built-in"):
        register_attn_impl("softmax", unused_impl)
    with pytest.raises(ValueError, match="'performer' is an already registered"):
        register_attn_impl("performer", unused_impl)
    assert ATTENTION_REGISTRY.get("softmax") is softmax_attention  # nothing replaced
    assert ATTENTION_REGISTRY.get("performer") is baselines.performer_attention
    assert baselines.register_baselines() == baselines.BASELINE_IMPLS  # idempotent

    registry = AttentionRegistry()  # a private one, to leave the global registry as the package made it
    registry.register("mine", unused_impl)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mine", softmax_attention)
    with pytest.raises(TypeError, match="callable"):
        registry.register("broken", "not a function")
    assert registry.names() == ("mine",) and registry.builtin_names() == ()


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="attn_impl must be one of") as error:
        check_attn_impl("flash")
    assert "'flash'" in str(error.value)
    assert all(repr(name) in str(error.value) for name in ATTENTION_REGISTRY.names())
    with pytest.raises(ValueError, match="'sdpa'"):
        ToyAttention(WINDOW, HEADS, 0.3, attn_impl="flash")
    with pytest.raises(ValueError, match="'nystra'"):
        set_attn_impl(ToyAttention(WINDOW, HEADS, 0.3), "flash")


def test_importing_baselines_registers_nothing():
    # A fresh interpreter: in this one the tests above have registered the baselines already.
    code = ("import nystra_hub.attention.baselines as b; from nystra_hub.attention import ATTENTION_REGISTRY as r; "
            "assert r.names() == ('softmax', 'sdpa', 'nystra', 'flex', 'triton'), r.names(); b.register_baselines(); "
            "assert set(b.BASELINE_FUNCTIONS) <= set(r.names())")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


def test_capture_sees_every_attention_call_and_is_removed():
    model = tiny_swinir()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    forwards, seen = [], []
    for _, module in attention_modules(model):
        module.register_forward_hook(lambda m, args, out: forwards.append(m))

    def hook(module, q, k, v, bias, mask, window, out):
        seen.append((module, mask is not None))
        # the hook sees exactly what the implementation worked on
        assert torch.equal(softmax_attention(module, q, k, v, bias, mask, window), out)

    with torch.no_grad(), capture_attention(model, hook):
        model(x)
    assert len(seen) == len(forwards) == 2
    assert [m for m, _ in seen] == forwards
    assert [masked for _, masked in seen] == [False, True]  # the unshifted block, then the shifted one
    with torch.no_grad():
        model(x)
    assert len(seen) == 2  # removed on exit


def test_capture_is_removed_after_an_error():
    model = tiny_swinir()
    calls = []
    with pytest.raises(RuntimeError, match="stop"), capture_attention(model, lambda *args: calls.append(1)):
        raise RuntimeError("stop")
    with torch.no_grad():
        model(torch.rand(1, 3, 16, 16))
    assert not calls
