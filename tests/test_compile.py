"""A whole golden model through plain ``torch.compile`` on the CPU (inductor, no freezing: the user's own call) with
``attn_impl="sdpa"``, against eager. The compile runner (freezing, inference mode) has its own test in
test_backends.py; compiled ``"flex"`` is in test_flex_attention.py."""

from __future__ import annotations

import pytest
import torch
from conftest import load_golden


@pytest.mark.slow
def test_compiled_sdpa_model_matches_eager():
    """SwinIR x2 (two stages, shifted blocks, bias gathered in the graph): 34 s to compile on a cold cache here
    (2 shared cores)."""
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "sdpa")
    with torch.no_grad():
        eager = model(io["input"])
        compiled = torch.compile(model, dynamic=False)(io["input"])
    assert (compiled - eager).abs().max().item() < 1e-4
    assert (compiled - io["output"]).abs().max().item() < 1e-4
