"""Half precision that never returns a non-finite image; dtype resolution; compiled and padded fast paths."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from conftest import load_golden

from nystra_hub.attention import core, shifted_window_mask
from nystra_hub.attention.windows import WindowMask
from nystra_hub.inference.precision import PrecisionFallbackWarning, resolve_dtype, run_guarded
from nystra_hub.models.common import stream_op


def psnr(a, b) -> float:
    mse = float(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == torch.float32  # half precision is slower than fp32 on CPUs
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("half", "cpu")
    with pytest.raises(ValueError, match="float32, bfloat16 or float16"):
        resolve_dtype(torch.int8, "cpu")


def test_run_guarded_recomputes_a_non_finite_half_call_in_float32():
    def fn(x):  # overflows whenever autocast runs the product in float16
        return (x @ torch.full((4, 4), 3e4)) / 1e4

    x = torch.ones(2, 4)
    with pytest.warns(PrecisionFallbackWarning, match="float16 gave non-finite values"):
        out = run_guarded(fn, x, torch.float16)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, fn(x))


def test_stream_op_runs_float32_under_float16_autocast_only():
    conv = torch.nn.Conv2d(2, 2, 1)
    x = torch.full((1, 2, 4, 4), 7e4)  # beyond float16's range
    with torch.autocast("cpu", dtype=torch.float16):
        assert stream_op(conv, x).dtype == torch.float32
        assert torch.isfinite(stream_op(conv, x)).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stream_op(conv, x).dtype == torch.bfloat16


def inflate(model, bias: float):
    """Grow the residual stream block after block (every MLP output bias + ``bias``), as in released SwinIR
    weights whose float16 runs overflow; the LayerNorms remove the constant."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("mlp.fc2"):
                module.bias.add_(bias)
    return model


def test_float16_never_goes_black_where_a_plain_cast_does():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    blocks = len(model.layers[0].residual_group.blocks)
    # Past 65504 inside the first RSTB, while each MLP output stays representable in float16.
    model = inflate(model, 1.5 * 65504 / blocks)
    x = io["input"]
    with torch.no_grad():
        reference = model(x)
        plain = copy.deepcopy(model).half()(x.half()).float()
    assert torch.isfinite(reference).all()
    assert not torch.isfinite(plain).all()  # the failure users report: a plain float16 cast
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionFallbackWarning)  # safe by construction: no float32 redo needed
        with torch.no_grad():
            ours = run_guarded(model, x, torch.float16)
    assert torch.isfinite(ours).all()
    assert psnr(ours, reference) > 60


def test_bfloat16_stays_close_to_float32():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", attn_impl="sdpa")
    with torch.no_grad():
        reference = model(io["input"])
        ours = run_guarded(model, io["input"], torch.bfloat16)
    assert ours.dtype == torch.float32 and psnr(ours, reference) > 45


@pytest.mark.parametrize("head_dim", [12, 30])
def test_fused_attention_pads_head_dims_exactly(monkeypatch, head_dim):
    q, k, v = (torch.randn(5, 3, 64, head_dim) for _ in range(3))
    bias = torch.randn(3, 64, 64)
    expected = core.fused_attention(q, k, v, bias, 0.3)
    monkeypatch.setattr(core, "PAD_HEAD_DIM_DEVICES", {"cpu"})
    padded = core.fused_attention(q, k, v, bias, 0.3)
    assert padded.shape == expected.shape
    torch.testing.assert_close(padded, expected, atol=1e-6, rtol=1e-5)


def test_shift_mask_cut_windows_come_from_the_geometry():
    for h, w, window, shift in [(16, 16, (8, 8), (4, 4)), (24, 40, (8, 8), (4, 4)), (32, 16, (8, 4), (4, 2)),
                                (16, 16, (8, 8), (0, 4)), (8, 8, (8, 8), (4, 4))]:
        mask = shifted_window_mask(h, w, window, shift)
        found = WindowMask.from_additive(mask.additive)  # the cut windows found in the data
        assert torch.equal(mask.cut, found.cut)


@pytest.mark.slow
def test_compiled_blocks_match_eager():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", attn_impl="sdpa")
    with torch.no_grad():
        eager = model(io["input"])
        model.compile_blocks(dynamic=False)
        compiled = model(io["input"])
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)
    torch.testing.assert_close(compiled, io["output"], atol=1e-4, rtol=0)


def test_restore_runs_half_precision_safely_tile_by_tile():
    import numpy as np

    import nystra_hub

    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle")
    image = (io["input"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    reference = nystra_hub.restore(model, image, dtype="float32")
    with pytest.warns(UserWarning, match="slower than float32"):
        half = nystra_hub.restore(model, image, dtype="bfloat16")
    assert half.dtype == np.uint8 and half.shape == reference.shape
    assert psnr(torch.from_numpy(half / 255.0), torch.from_numpy(reference / 255.0)) > 40
    # an MLP output past float16's range: every tile overflows in float16 and is redone in float32
    with torch.no_grad():
        model.layers[0].residual_group.blocks[0].mlp.fc2.bias.add_(1e5)
    # 8-px tiles (far below the quality minimum, which this test does not need) keep it fast
    model.spec = dataclasses.replace(model.spec, min_tile_multiples=None)
    overflowing = nystra_hub.restore(model, image, dtype="float32", tile=8, tile_overlap=0)
    with pytest.warns(PrecisionFallbackWarning):
        redone = nystra_hub.restore(model, image, dtype="float16", tile=8, tile_overlap=0)
    assert np.array_equal(redone, overflowing)
