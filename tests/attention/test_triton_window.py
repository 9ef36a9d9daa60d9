"""``attn_impl="triton"``: exact window attention in one Triton kernel, run on the CPU through Triton's interpreter
(tests/attention/triton_interpreted.py, in a subprocess with TRITON_INTERPRET=1: the interpreter is chosen when the
kernel is defined), against ``"softmax"``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_flex_attention import window_case

import nystra_hub
from nystra_hub.attention import ATTENTION_REGISTRY, ATTN_IMPLS, TRITON_IMPL, triton_window_attention
from nystra_hub.attention import triton_window as triton_module

HERE = Path(__file__).parent
TRITON_MISSING = triton_module._IMPORT_ERROR
requires_triton = pytest.mark.skipif(TRITON_MISSING is not None, reason=f"{TRITON_MISSING}")


@pytest.fixture(scope="module")
def interpreted() -> dict:
    """The report of triton_interpreted.py: every case's max-abs difference from "softmax" (about 40 s here)."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]))
    proc = subprocess.run([sys.executable, str(HERE / "triton_interpreted.py")], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_triton_is_registered_and_selectable_like_the_others():
    assert TRITON_IMPL == "triton" and TRITON_IMPL in ATTENTION_REGISTRY and TRITON_IMPL not in ATTN_IMPLS
    assert ATTENTION_REGISTRY.get(TRITON_IMPL) is triton_window_attention
    model = nystra_hub.build_model("swinir", upscale=2, in_chans=3, img_size=16, window_size=4, depths=[2],
                                   embed_dim=12, num_heads=[2], mlp_ratio=2, upsampler="pixelshuffle",
                                   resi_connection="1conv", attn_impl=TRITON_IMPL)
    assert model.attn_impl == TRITON_IMPL


@pytest.mark.parametrize(("head_dim", "tile"), [(30, 32), (10, 16), (8, 16), (5, 16), (32, 32), (64, 64)])
def test_head_dims_are_padded_inside_the_kernel_to_a_power_of_two_at_least_16(head_dim, tile):
    assert triton_module._kernel_head_dim(head_dim) == tile


@requires_triton
@pytest.mark.slow
def test_matches_softmax_in_float32_for_every_window_shift_and_bias(interpreted):
    """Square, rectangular, smaller-than-the-module's, 16x16 (several blocks) and 10x10 (a partial block) windows;
    head dims 30, 10, 8, 5; shifted or not; bias on or off."""
    errors = interpreted["float32"]
    assert len(errors) == 5 * 4 * 2 * 2
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, (worst, errors[worst])


@requires_triton
@pytest.mark.slow
def test_bfloat16_is_within_bfloat16_rounding(interpreted):
    """Against float32 math on the same bfloat16 inputs; the tolerance is flex's, argued in its test: scores and
    softmax in float32, probabilities and output rounded to bfloat16, so ≤ 2^-8·max|v| and no worse than
    "softmax" in bfloat16."""
    for head_dim, case in interpreted["bfloat16"].items():
        assert case["dtype"] == "torch.bfloat16", head_dim
        assert case["triton"] <= 2**-8 * case["max_abs_v"], (head_dim, case)
        assert case["triton"] <= case["softmax_bf16"], (head_dim, case)


@requires_triton
@pytest.mark.slow
def test_golden_models_match_their_official_outputs(interpreted):
    """SwinIR (head dim 12, shifted windows), Uformer (8, shift masks, modulator), DehazeFormer (4, MLP bias)."""
    if not interpreted["golden"]:
        pytest.skip("../shared's golden cases are not here")
    assert len(interpreted["golden"]) == 3
    for case, error in interpreted["golden"].items():
        assert error < 1e-4, (case, error)


@requires_triton
@pytest.mark.skipif(triton_module.triton_interpreting(), reason="this process runs Triton's interpreter")
def test_the_cpu_without_the_interpreter_gets_a_clear_error():
    module, _, q, k, v, mask, window = window_case("square-8x8", 12, True, True)
    module.set_attn_impl(TRITON_IMPL)
    with torch.no_grad(), pytest.raises(RuntimeError, match="'triton' cannot run: .*CUDA.*TRITON_INTERPRET=1.*'sdpa'"):
        module.attend(q, k, v, mask, window)


def test_gradients_say_to_use_sdpa(monkeypatch):
    monkeypatch.setattr(triton_module, "triton_unavailable_reason", lambda device: None)
    module, _, q, k, v, mask, window = window_case("square-8x8", 12, True, True)
    module.set_attn_impl(TRITON_IMPL)
    with pytest.raises(NotImplementedError, match="no backward; use 'sdpa'"):
        module.attend(q.requires_grad_(), k, v, mask, window)


def test_a_machine_without_triton_gets_a_clear_error(monkeypatch):
    monkeypatch.setattr(triton_module, "_IMPORT_ERROR", "Triton is not installed (No module named 'triton')")
    module, _, q, k, v, mask, window = window_case("square-8x8", 12, True, True)
    module.set_attn_impl(TRITON_IMPL)
    with torch.no_grad(), pytest.raises(RuntimeError, match="'triton' cannot run: Triton is not installed.*'sdpa'"):
        module.attend(q, k, v, mask, window)
