"""A whole golden model through plain ``torch.compile`` on the CPU (inductor, no freezing: the user's own call) with
``attn_impl="sdpa"``, and its blocks compiled with ``"nystra"`` and a bounded redo, against eager. The compile
runner (freezing, inference mode) has its own test in test_backends.py; compiled ``"flex"`` is in
test_flex_attention.py; the bounded redo's own tests are in test_no_host_sync.py."""

from __future__ import annotations

import pytest
import torch
from conftest import load_golden

from nystra_hub.attention import core as attention_core


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


@pytest.mark.slow
def test_compiled_nystra_blocks_with_a_bounded_redo_match_eager(monkeypatch):
    """Blocks compiled by inductor (``compile_blocks``, what the GPU arm ``nystra-compile-bf16`` runs) with
    ``redo="bounded"``, the CUDA default: every nystra layer goes through the bounded redo, and the output is the
    eager one. 16 s to compile here (2 shared cores)."""
    bounded_layers = []
    real = attention_core.redo_bounded

    def counted(*args):
        bounded_layers.append(1)
        return real(*args)

    monkeypatch.setattr(attention_core, "redo_bounded", counted)
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "nystra")
    x = model.official_pad(io["input"])[0]
    with torch.no_grad():
        eager = model(x)
        model.redo = "bounded"
        model.validate_inputs = False
        compiled = model.compile_blocks(dynamic=False)(x)
    assert len(bounded_layers) == 4  # 2 stages of 2 blocks
    assert (compiled - eager).abs().max().item() < 1e-5
