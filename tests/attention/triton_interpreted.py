"""Run ``attn_impl="triton"`` on the CPU through Triton's interpreter and print, as JSON, how far it is from
``"softmax"`` in every case test_triton_window.py checks. Run with ``TRITON_INTERPRET=1`` in the environment (the
interpreter is chosen when the kernel is defined, i.e. at import): test_triton_window.py starts it so.

    TRITON_INTERPRET=1 python tests/attention/triton_interpreted.py
"""

from __future__ import annotations

import json
import sys

import torch
from conftest import GOLDEN, load_golden
from test_flex_attention import GEOMETRIES, GOLDEN_CASES, window_case

from nystra_hub.attention import TRITON_IMPL
from nystra_hub.attention.core import softmax_attention

# beyond flex's geometries: a 16x16 window (256 tokens: several query and key blocks per program) and a 10x10 one
# (100 tokens: a partial last block)
EXTRA_GEOMETRIES = {"square-16x16": ((16, 16), (16, 16), (32, 32), (8, 8)),
                    "square-10x10": ((10, 10), (10, 10), (20, 30), (5, 5))}
HEAD_DIMS = (30, 10, 8, 5)


def float32_errors() -> dict[str, float]:
    errors = {}
    for geometry in sorted(GEOMETRIES):
        for head_dim in HEAD_DIMS:
            for shifted in (False, True):
                for use_bias in (False, True):
                    module, reference, q, k, v, mask, window = window_case(geometry, head_dim, shifted, use_bias)
                    module.set_attn_impl(TRITON_IMPL)
                    out = module.attend(q, k, v, mask, window)
                    expected = reference.attend(q, k, v, mask, window)
                    key = f"{geometry} d{head_dim} shifted={shifted} bias={use_bias}"
                    errors[key] = (out - expected).abs().max().item() if out.shape == expected.shape else float("inf")
    return errors


def bfloat16_errors() -> dict[str, dict[str, float]]:
    """Per head dim: the kernel's and softmax-in-bfloat16's distance from float32 math on the same bfloat16 inputs."""
    errors = {}
    for head_dim in (30, 10):
        module, reference, q, k, v, mask, window = window_case("square-8x8", head_dim, True, True,
                                                               dtype=torch.bfloat16)
        module.set_attn_impl(TRITON_IMPL)
        out = module.attend(q, k, v, mask, window)
        bias = module.position_bias(torch.bfloat16, q.device, window).float()
        exact = softmax_attention(reference, q.float(), k.float(), v.float(), bias, mask, window)
        errors[f"d{head_dim}"] = {"dtype": str(out.dtype), "triton": (out.float() - exact).abs().max().item(),
                                  "softmax_bf16": (reference.attend(q, k, v, mask, window).float() - exact)
                                  .abs().max().item(), "max_abs_v": v.float().abs().max().item()}
    return errors


def golden_errors() -> dict[str, float]:
    """Empty without ../shared's golden cases (a copy of the repository alone)."""
    errors = {}
    if not GOLDEN.is_dir():
        return errors
    for case in GOLDEN_CASES:
        model, io, _ = load_golden(case, TRITON_IMPL)
        errors[case] = (model(io["input"]) - io["output"]).abs().max().item()
    return errors


def main() -> None:
    GEOMETRIES.update(EXTRA_GEOMETRIES)
    with torch.no_grad():
        report = {"float32": float32_errors(), "bfloat16": bfloat16_errors(), "golden": golden_errors()}
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
