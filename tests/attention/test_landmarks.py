"""Landmark counts are checked against the windows when the attention is chosen, not on every image."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GOLDEN

import nystra_hub
from nystra_hub.attention import attention_modules
from nystra_hub.attention.core import landmarks_fit, sdpa_attention

CASE = "swinir_sr_x2_pixelshuffle"  # window 8


def kwargs(case=CASE) -> dict:
    return json.loads((GOLDEN / case / "case.json").read_text())["official_constructor_kwargs"]


def test_a_count_without_a_grid_on_the_window_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"landmarks=17 cannot be laid out on a 8x8 window.*nearest usable counts: "
                                         r"16 or 18"):
        nystra_hub.build_model("swinir", **kwargs(), attn_impl="nystra", nystra={"landmarks": 17})


def test_switching_validates_every_module_before_changing_any():
    model = nystra_hub.build_model("swinir", **kwargs())
    with pytest.raises(ValueError, match=r"layers\.0\..*attn: landmarks=17"):
        model.set_attn_impl("nystra", landmarks=17)
    assert model.attn_impl == "softmax"
    name, module = next(attention_modules(model))
    with pytest.raises(ValueError, match="landmarks=17"):  # one module, directly
        module.set_attn_impl("nystra", module.nystra.replace(landmarks=17))
    assert module.attn_impl == "softmax"
    model.set_attn_impl("softmax", landmarks=17)  # stored for later, not used: no error until nystra is chosen
    model.set_attn_impl("nystra", landmarks=64)  # as many landmarks as tokens: exact attention, allowed
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        model(x)


def test_a_feature_map_smaller_than_the_window_falls_back_to_exact_attention():
    """32 landmarks fit an 8x8 window (4x8) but not a 6x6 map (36 tokens): that map is attended exactly."""
    assert landmarks_fit((8, 8), 32) and not landmarks_fit((6, 6), 32) and not landmarks_fit((8, 8), 17)
    model = nystra_hub.build_model("swinir", **kwargs(), attn_impl="nystra", nystra={"landmarks": 32})
    _, module = next(attention_modules(model))
    q, k, v = (torch.randn(2, module.num_heads, 36, 8) for _ in range(3))
    with torch.no_grad():
        out = module.attend(q, k, v, window=(6, 6))
        torch.testing.assert_close(out, sdpa_attention(module, q, k, v, module.position_bias(q.dtype, q.device,
                                                                                            (6, 6)), None, (6, 6)))
