"""Exact window attention through PyTorch FlexAttention: ``attn_impl="flex"``, a fused-kernel candidate.

``torch.nn.attention.flex_attention`` computes softmax(q·kᵀ·scale + mod) · v where ``mod`` is a ``score_mod``
function of (score, batch, head, query, key) that a compiled kernel evaluates tile by tile: the position bias and
the shift mask enter the kernel as gathers, ``bias[head, q, k]`` and the mask of the row's window, with no
(windows, heads, N, N) score tensor in memory. The values are those of ``"softmax"``: the same scores, the same
additive bias, the same -100 mask (not -inf: the released models depend on exp(-100) ≠ 0, which also means the mask
cannot be a block mask, whose masked pairs are skipped, i.e. -inf).

What flex_attention does on the CPU (torch 2.14.1, this package's CI machine, x86 with AVX2):

- eager (no ``torch.compile``): runs, any head dim, float32/bfloat16/float16, inference only. It is torch's
  *unfused reference path*: torch compiles the higher-order op with the "eager" backend (3-4 s the first time in a
  process, then once per new shape until shapes go dynamic; a new ``score_mod`` closure over other tensors does
  not recompile) and runs ``math_attention``: the full (windows, heads, N, N) scores in float32, the score_mod
  vmapped over them, softmax, probabilities cast to the input dtype, @ v. Torch says so in a one-time warning.
  It is slower than ``"softmax"`` on the CPU; it exists to check the function, not to run models.
- compiled (``torch.compile`` of the model or of flex_attention): inductor's C++ flex template (x86 with AVX2 or
  better, not macOS; float32/bfloat16/float16; inference only): fused, scores in float32 tiles. Matches
  ``"softmax"`` to ~1e-6 in float32; about 11 s to compile one shape here (2 shared cores).
- gradients: none on the CPU in either mode ("FlexAttention does not support backward on CPU"); this module says
  so, naming ``"sdpa"`` for CPU training. CUDA has a backward (not used or tested here).

Head dims: on the CPU torch 2.14.1 accepts any (eager and compiled). The CUDA Triton template needs at least 16
and rounds other dims up to a power of two inside the kernel (``QK_HEAD_DIM_ROUNDED``, with masked loads), and torch
2.6 (and later releases, at least into 2026, per public bug reports) rejected any head dim not a power of two in
``flex_attention``'s own input check, eager or compiled. So q, k, v are zero-padded to the next power of two, at
least 16 off the CPU (:func:`flex_head_dim`): SwinIR-M's 30 → 32, 12 → 16, 24 → 32, 8 as it is on the CPU (16 on
CUDA), 32 as it is. Exact: zero columns add nothing to q·k (the scale is passed explicitly, not
derived from the padded size) and produce output columns that are dropped.

Torch versions: flex_attention appeared in torch 2.5 with score_mod, CPU eager and CUDA; the CPU compiled template
came in 2.6. The package's oldest torch (2.11, ``.ci/oldest.txt``, also the GPU machine's) has both; this module
was run here on 2.14.1 only. A torch without the module, or a Python that dynamo does not support (the eager path
needs dynamo), gets a RuntimeError naming the reason on the first attention call (:func:`flex_unavailable_reason`);
the name is registered either way, so a saved configuration naming "flex" still loads.

Block masks: none. Windows hold N = 64…256 tokens, one or two of flex's 128-token sparse blocks, and every
pair inside a window is attended (the shift mask is additive, see above), so a block mask has nothing to skip; the
windows are the batch dimension, which already keeps tokens of different windows apart.

Cached: nothing of its own. The score_mod needs no index tensor (flex hands it b, h, q, k; the window of batch row b
is b % nW, windows being batch-major), and the tensors it reads are cached already: the bias by the core
(:meth:`WindowAttentionBase.position_bias`), the (nW, N, N) mask by the geometry cache (graph constants under
torch.compile). A compact mask, one zero block plus the cut windows' blocks read through a per-window slot index,
would spare a fused GPU kernel the full mask (SwinIR at 1024², 16384 windows of 64 tokens: 128 MB of bfloat16 mask
read per head, against ~1.2 GB of q, k, v); it was tried and dropped: with the slot index built inside the compiled
graph (``zeros().index_copy``, ``scatter`` or ``index_put``) inductor's C++ flex template returned wrong values
(max error 1.3 where the same index built outside the graph gave 1e-6, torch 2.14.1), and the index cannot be a
graph constant without a change to :class:`WindowMask`. The same template also refused to lower a bias gathered
and permuted from graph *inputs* in a standalone function ("All the buffers in the score and mask subgraph should
be in kernel_group.args.input_buffers"); the core's bias, gathered in the graph from the module's table, compiles
and matches (tests/attention/test_flex_attention.py: ``module.attend`` and a whole golden SwinIR compiled; Uformer and
DehazeFormer golden models compiled whole also matched, 2 and 1.5 minutes to compile on a cold cache here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from nystra_hub.attention.core import WindowAttentionBase, register_attn_impl
from nystra_hub.attention.windows import WindowMask

try:
    from torch.nn.attention.flex_attention import flex_attention
except ImportError as error:  # a torch older than 2.5: the package asks for 2.11, but a user may force one
    flex_attention = None
    _IMPORT_ERROR = f"torch {torch.__version__} has no torch.nn.attention.flex_attention ({error})"
else:
    _IMPORT_ERROR = None

FLEX_IMPL = "flex"
ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def flex_unavailable_reason() -> str | None:
    """Why ``attn_impl="flex"`` cannot run in this process, or None when it can."""
    if _IMPORT_ERROR is not None:
        return _IMPORT_ERROR
    if not torch._dynamo.is_dynamo_supported():  # flex_attention runs through dynamo even without torch.compile
        return f"flex_attention needs torch.compile's dynamo, which torch {torch.__version__} lacks on this Python"
    return None


def flex_head_dim(head_dim: int, device_type: str) -> int:
    """The head dim flex_attention runs at: the next power of two, at least 16 off the CPU (module docstring)."""
    padded = 1 << (head_dim - 1).bit_length()
    return padded if device_type == "cpu" else max(padded, 16)


def window_score_mod(bias: Tensor | None, mask: WindowMask | None) -> ScoreMod | None:
    """The score_mod adding ``bias[h, q, k]`` and the mask of batch row ``b``'s window, window ``b % nW``
    (windows are batch-major); None when there is neither."""
    if mask is not None and not mask.cut.numel():
        mask = None  # no window cut: the mask is all zeros
    if mask is None:
        if bias is None:
            return None

        def add_bias(score, b, h, q_idx, kv_idx):
            return score + bias[h, q_idx, kv_idx]

        return add_bias
    additive = mask.additive
    windows = mask.num_windows
    if bias is None:

        def add_mask(score, b, h, q_idx, kv_idx):
            return score + additive[b % windows, q_idx, kv_idx]

        return add_mask

    def add_bias_and_mask(score, b, h, q_idx, kv_idx):
        return score + bias[h, q_idx, kv_idx] + additive[b % windows, q_idx, kv_idx]

    return add_bias_and_mask


def flex_window_attention(
    module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window
) -> Tensor:
    """Exact window attention (``"softmax"``'s function) in one flex_attention call, bias and mask in its
    score_mod, the head dim zero-padded where flex needs it (module docstring)."""
    reason = flex_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"attn_impl {FLEX_IMPL!r} cannot run: {reason}; use 'sdpa' (same function)")
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        raise NotImplementedError(
            f"attn_impl {FLEX_IMPL!r} has no backward on the CPU (torch's FlexAttention is inference-only there); "
            "use 'sdpa' to train on the CPU, or run under torch.no_grad()"
        )
    d = q.shape[-1]
    padded = flex_head_dim(d, q.device.type)
    if padded != d:
        pad = (0, padded - d)
        q, k, v = F.pad(q, pad), F.pad(k, pad), F.pad(v, pad)
    out = flex_attention(q, k, v, score_mod=window_score_mod(bias, mask), scale=module.scale)
    return out[..., :d]


register_attn_impl(FLEX_IMPL, flex_window_attention)
