"""The one windowed-attention core behind SwinIR, Uformer and DehazeFormer.

An architecture's attention module subclasses :class:`WindowAttentionBase`, keeps its official parameter names,
projects tokens to per-window q, k, v and calls :meth:`WindowAttentionBase.attend`, which runs the implementation
selected by name from :data:`ATTENTION_REGISTRY` (each one a function ``fn(module, q, k, v, bias, mask, window)``).
The built-ins:

- ``"softmax"``: the original math, operation for operation (scores, + bias, + mask, softmax, @ v);
- ``"sdpa"``: the same function through ``torch.nn.functional.scaled_dot_product_attention`` with the position
  bias as additive mask; only the windows a shift mask cuts get their mask (the others' mask is all zeros);
- ``"nystra"``: PnP-Nystra (:mod:`.nystrom`), with documented choices for the bias and the mask
  (:class:`NystraParams`).

Comparison baselines register by an explicit call (:func:`nystra_hub.attention.baselines.register_baselines`).
Diagnostics observe every attention through :func:`capture_attention` instead of patching :meth:`attend`.

The position bias depends only on parameters and the window: it is computed once and cached until a source
tensor changes (in-place update, ``load_state_dict``, ``.to()``), and recomputed every call while gradients flow.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from nystra_hub.attention.nystrom import landmark_grid, nystrom_attention, pool_bias
from nystra_hub.attention.windows import WindowMask, relative_position_index, sub_window_index_on, to_2tuple

NYSTRA_BIAS_MODES = ("pooled", "drop")
NYSTRA_MASK_MODES = ("exact", "drop")


@dataclass(frozen=True)
class NystraParams:
    """Parameters of the Nyström path.

    landmarks: number m of pooled landmark queries/keys per window (a grid that divides the window).
    iters: iterations of the pseudo-inverse (the reference uses 2 for SwinIR, 3-6 for Uformer).
    tau: kernel threshold τ: φ(x) = exp(min(x, τ)) + relu(x − τ) (reference: 5 SwinIR, 0 Uformer).
    bias: "pooled" keeps the relative-position bias, pooled over landmark blocks exactly like the landmarks
        themselves (a landmark's logit is the mean of its block's logits, content and position alike);
        "drop" ignores it, as the paper and its code do.
    mask: "exact" computes the windows a shifted-window mask cuts with exact attention and everything else
        with Nyström (a small fraction of windows: the last row and column); "drop" ignores the mask, as the
        paper does, letting tokens attend across the cyclic-shift seam.
    Use ``NystraParams.paper()`` for the paper's behaviour (bias and mask dropped).
    """

    landmarks: int = 16
    iters: int = 2
    tau: float = 5.0
    bias: str = "pooled"
    mask: str = "exact"

    def __post_init__(self) -> None:
        if isinstance(self.landmarks, bool) or not isinstance(self.landmarks, int) or self.landmarks < 1:
            raise ValueError(f"nystra landmarks must be a positive int, got {self.landmarks!r}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 0:
            raise ValueError(f"nystra iters must be a non-negative int, got {self.iters!r}")
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or self.tau != self.tau:
            raise ValueError(f"nystra tau must be a number, got {self.tau!r}")
        if self.bias not in NYSTRA_BIAS_MODES:
            raise ValueError(f"nystra bias must be one of {NYSTRA_BIAS_MODES}, got {self.bias!r}")
        if self.mask not in NYSTRA_MASK_MODES:
            raise ValueError(f"nystra mask must be one of {NYSTRA_MASK_MODES}, got {self.mask!r}")

    @classmethod
    def paper(cls, **overrides) -> NystraParams:
        """The published method: position bias and shift mask ignored."""
        return cls(**{"bias": "drop", "mask": "drop", **overrides})

    def replace(self, **overrides) -> NystraParams:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown nystra parameter(s) {unknown}; valid: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


# fn(module, q, k, v, bias, mask, window) -> (B·nW, heads, N, d), with the tensors WindowAttentionBase.attend
# works on: q, k, v (B·nW, heads, N, d) with q unscaled; bias (heads, N, N) or None; mask a WindowMask in q's dtype
# or None; window the (h, w) window the tokens come from. An implementation reads module.scale, module.nystra.
AttentionFn = Callable[..., Tensor]
# hook(module, q, k, v, bias, mask, window, out): the same arguments, and the implementation's output.
AttentionHook = Callable[..., None]


class AttentionRegistry:
    """Attention implementations by name, each an :data:`AttentionFn`.

    A name is registered once: registering a taken name raises instead of replacing the function, so a name
    (a benchmark arm, a saved config) always means the function first registered under it.
    """

    def __init__(self) -> None:
        self._impls: dict[str, AttentionFn] = {}
        self._builtins: list[str] = []

    def register(self, name: str, fn: AttentionFn, *, builtin: bool = False) -> None:
        if name in self._impls:
            kind = "a built-in" if name in self._builtins else "an already registered"
            raise ValueError(f"{name!r} is {kind} attention implementation")
        if not callable(fn):
            raise TypeError(f"attention implementation {name!r} must be callable, got {fn!r}")
        self._impls[name] = fn
        if builtin:
            self._builtins.append(name)

    def check(self, name: str) -> str:
        if name not in self._impls:
            raise ValueError(
                f"attn_impl must be one of {self.names()}, got {name!r} (the comparison baselines are registered "
                "by nystra_hub.attention.baselines.register_baselines())"
            )
        return name

    def get(self, name: str) -> AttentionFn:
        return self._impls[self.check(name)]

    def names(self) -> tuple[str, ...]:
        return tuple(self._impls)

    def builtin_names(self) -> tuple[str, ...]:
        return tuple(self._builtins)

    def __contains__(self, name: object) -> bool:
        return name in self._impls


ATTENTION_REGISTRY = AttentionRegistry()


def register_attn_impl(name: str, fn: AttentionFn, *, builtin: bool = False) -> None:
    """Make ``fn`` selectable as ``attn_impl=name`` (``model.set_attn_impl(name)``); raises if ``name`` is taken."""
    ATTENTION_REGISTRY.register(name, fn, builtin=builtin)


def check_attn_impl(name: str) -> str:
    """``name`` if it is registered; otherwise a ValueError listing the registered names."""
    return ATTENTION_REGISTRY.check(name)


# Devices whose fused attention kernels with an additive mask need a head dim that is a multiple of 8. On an H200
# (torch 2.11, benchmarks/gpu/gpu-bench-h200.json) head dims 30 (SwinIR-M) and 12 ran the unfused math kernel:
# 2.9 ms against 0.4 ms for head dim 32 (memory-efficient kernel), 4096 windows x 6 heads, bf16.
PAD_HEAD_DIM_DEVICES = {"cuda"}


def fused_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, scale: float) -> Tensor:
    """``scaled_dot_product_attention``, the head dim zero-padded to a multiple of 8 where the fused kernels need
    it. Exact: zero columns add nothing to q·k and produce output columns that are dropped."""
    d = q.shape[-1]
    if d % 8 == 0 or q.device.type not in PAD_HEAD_DIM_DEVICES:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)
    pad = (0, 8 - d % 8)
    out = F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), attn_mask=attn_mask,
                                         scale=scale)
    return out[..., :d]


class WindowAttentionBase(nn.Module):
    """Multi-head attention inside windows, with an additive position bias and optional per-window masks.

    Subclasses own the parameters (official names) and implement :meth:`compute_position_bias` (``(heads, N, N)``
    or None) and :meth:`position_bias_sources` (the tensors it is computed from, for cache invalidation).
    """

    def __init__(
        self,
        window_size: int | tuple[int, int],
        num_heads: int,
        scale: float,
        attn_impl: str = "softmax",
        nystra: NystraParams | None = None,
    ) -> None:
        super().__init__()
        self.window_size = to_2tuple(window_size)
        self.num_heads = num_heads
        self.scale = scale
        self.attn_impl = check_attn_impl(attn_impl)
        self.nystra = nystra if nystra is not None else NystraParams()
        if self.attn_impl == "nystra":
            check_landmarks(self.window_size, self.nystra.landmarks)
        self.use_position_bias = True  # False drops the bias (an ablation: what the model owes to it)
        # Input-independent terms per (window, dtype, device, source versions); a few windows at most.
        self._bias_cache: dict[tuple, Tensor | None] = {}
        self._pooled_cache: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}
        # An OrderedDict because RemovableHandle keeps a weak reference to it (a plain dict cannot have one).
        self._attention_hooks: OrderedDict[int, AttentionHook] = OrderedDict()

    # -- to implement per architecture -----------------------------------------------------------------------
    def compute_position_bias(self, window: tuple[int, int]) -> Tensor | None:
        """(heads, N, N) bias for ``window``: the module's own window, or a smaller one (a feature map smaller
        than the window attends as one window of its own size)."""
        raise NotImplementedError

    def position_bias_sources(self) -> list[Tensor]:
        raise NotImplementedError

    # -- switching ---------------------------------------------------------------------------------------------
    def set_attn_impl(self, attn_impl: str, nystra: NystraParams | None = None) -> None:
        """Switch this module; switching to ``"nystra"`` checks that the landmarks fit its window
        (:func:`check_landmarks`), so a bad count fails here rather than on every image."""
        attn_impl = check_attn_impl(attn_impl)
        params = self.nystra if nystra is None else nystra
        if attn_impl == "nystra":
            check_landmarks(self.window_size, params.landmarks)
        self.attn_impl, self.nystra = attn_impl, params

    def extra_repr(self) -> str:
        extra = f", nystra={self.nystra}" if self.attn_impl == "nystra" else ""
        return f"window_size={self.window_size}, num_heads={self.num_heads}, attn_impl={self.attn_impl}{extra}"

    # -- cached, input-independent terms ----------------------------------------------------------------------
    def _needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(t.requires_grad for t in self.position_bias_sources())

    def _cache_key(self, window: tuple[int, int], dtype: torch.dtype, device: torch.device) -> tuple:
        sources = self.position_bias_sources()
        # Inference tensors (a model converted under torch.inference_mode) have no version counter.
        versions = tuple((t.data_ptr(), 0 if t.is_inference() else t._version) for t in sources)
        return (window, dtype, device, versions)

    def clear_caches(self) -> None:
        self._bias_cache.clear()
        self._pooled_cache.clear()

    def _check_window(self, window: tuple[int, int]) -> None:
        if window[0] > self.window_size[0] or window[1] > self.window_size[1]:
            raise ValueError(f"cannot attend a {window} window with a module built for {self.window_size}")

    def position_bias(
        self, dtype: torch.dtype, device: torch.device, window: tuple[int, int] | None = None
    ) -> Tensor | None:
        """(heads, N, N) additive bias in ``dtype``; cached while no gradient flows through it."""
        window = self.window_size if window is None else window
        if self._needs_grad() or torch.compiler.is_compiling():
            # Under torch.compile the bias is part of the graph (a gather of the table): the cache key reads
            # data pointers, which a traced graph cannot.
            bias = self.compute_position_bias(window)
            return None if bias is None else bias.to(dtype)
        key = self._cache_key(window, dtype, device)
        if key not in self._bias_cache:
            if len(self._bias_cache) >= 4:  # stale versions of the sources: drop them
                self.clear_caches()
            # Built outside inference mode so the cached tensor stays usable in any later mode.
            with torch.inference_mode(False), torch.no_grad():
                bias = self.compute_position_bias(window)
                self._bias_cache[key] = None if bias is None else bias.to(device=device, dtype=dtype).contiguous()
        return self._bias_cache[key]

    def pooled_position_bias(
        self, bias: Tensor, window: tuple[int, int], grid: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        if self._needs_grad() or torch.compiler.is_compiling():
            return pool_bias(bias, window, grid)
        key = (*self._cache_key(window, bias.dtype, bias.device), grid)
        if key not in self._pooled_cache:
            if len(self._pooled_cache) >= 4:
                self._pooled_cache.clear()
            with torch.inference_mode(False), torch.no_grad():
                self._pooled_cache[key] = pool_bias(bias, window, grid)
        return self._pooled_cache[key]

    # -- attention ----------------------------------------------------------------------------------------------
    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, mask: WindowMask | None = None, window: tuple[int, int] | None = None
    ) -> Tensor:
        """q, k, v: (B·nW, heads, N, d), q unscaled, windows batch-major as :func:`window_partition` makes them.

        ``mask``: additive per-window mask shared by every image of the batch, or None.
        ``window``: the window the tokens come from when it is smaller than the module's (default: the module's).
        Returns (B·nW, heads, N, d).
        """
        window = self.window_size if window is None else tuple(window)
        self._check_window(window)
        bias = self.position_bias(q.dtype, q.device, window) if self.use_position_bias else None
        if mask is not None:
            mask = mask.to(q.dtype)
            if q.shape[0] % mask.num_windows:
                raise ValueError(f"{q.shape[0]} windows cannot be split into images of {mask.num_windows}")
        out = ATTENTION_REGISTRY.get(self.attn_impl)(self, q, k, v, bias, mask, window)
        for hook in self._attention_hooks.values():
            hook(self, q, k, v, bias, mask, window, out)
        return out

    def register_attention_hook(self, hook: AttentionHook) -> RemovableHandle:
        """Call ``hook(module, q, k, v, bias, mask, window, out)`` after every :meth:`attend`: the tensors the
        implementation worked on (bias and mask resolved), which a forward hook on the module cannot see.
        ``.remove()`` the returned handle to stop; :func:`capture_attention` does it for a whole model."""
        handle = RemovableHandle(self._attention_hooks)
        self._attention_hooks[handle.id] = hook
        return handle


# -- the built-in implementations, each registered right after its definition ------------------------------------
def softmax_attention(module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window) -> Tensor:
    """The original math, operation for operation: scores, + bias, + mask, softmax, @ v."""
    attn = (q * module.scale) @ k.transpose(-2, -1)
    # Without autograd the logits are updated in place: on CPU every fresh (windows, heads, N, N) tensor costs
    # page faults that took longer than the additions themselves (softmax 24 -> 8 ms at 1024x2x64x64).
    # Same operations, same order, same values. A traced graph (export, compile) gets the out-of-place ones: the
    # in-place updates of views leave reshapes between the additions and the softmax that keep OpenVINO from fusing
    # them (SwinIR-M x2 at 128² in OpenVINO float32, against the official graph: 0.94x in place, 1.01x out of
    # place; two runs of benchmarks' ov-default command on this project's 2-core machines).
    in_place = not (attn.requires_grad or (bias is not None and bias.requires_grad) or torch.compiler.is_compiling())
    if bias is not None:
        attn = attn.add_(bias) if in_place else attn + bias.unsqueeze(0)
    if mask is not None:
        n_w, n = mask.num_windows, q.shape[-2]
        additive = mask.additive.unsqueeze(1).unsqueeze(0)
        grouped = attn.view(-1, n_w, module.num_heads, n, n)
        attn = (grouped.add_(additive) if in_place else grouped + additive).view(-1, module.num_heads, n, n)
    # (not while the TorchScript ONNX exporter traces: it has no symbol for aten::_softmax; torch.export is fine)
    if in_place and attn.device.type == "cpu" and not torch.onnx.is_in_onnx_export():
        attn = torch.ops.aten._softmax.out(attn, -1, False, out=attn)  # row-wise: reads a row before writing it
    else:
        attn = attn.softmax(dim=-1)
    return attn @ v


register_attn_impl("softmax", softmax_attention, builtin=True)


def sdpa_attention(module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window) -> Tensor:
    """Fused exact attention, the bias as additive mask. Only the windows the shift mask cuts are redone with their
    mask: the other windows' mask is all zeros, and passing it for every window would cost a broadcast add."""
    out = fused_attention(q, k, v, bias, module.scale)
    if mask is not None and mask.cut.numel():
        redo_exact(module, out, q, k, v, bias, mask, cut_window_indices(q.shape[0], mask))
    return out


register_attn_impl("sdpa", sdpa_attention, builtin=True)


def landmarks_fit(window: tuple[int, int], landmarks: int) -> bool:
    """True when ``landmarks`` blocks can be laid out on ``window`` (a factor pair a·b with a ≤ rows, b ≤ columns),
    or when there are at least as many landmarks as tokens (attention is then computed exactly)."""
    if landmarks >= window[0] * window[1]:
        return True
    return any(landmarks % a == 0 and landmarks // a <= window[1] for a in range(1, min(landmarks, window[0]) + 1))


def check_landmarks(window: tuple[int, int], landmarks: int, where: str = "") -> None:
    """Raise, naming the counts that would work, unless ``landmarks`` fits ``window`` (:func:`landmarks_fit`)."""
    if landmarks_fit(window, landmarks):
        return
    tokens = window[0] * window[1]
    usable = [m for m in range(1, tokens) if landmarks_fit(window, m)]
    below = max((m for m in usable if m < landmarks), default=None)
    above = min((m for m in usable if m > landmarks), default=tokens)
    nearest = f"{below} or {above}" if below else f"{above}"
    raise ValueError(
        f"{where}landmarks={landmarks} cannot be laid out on a {window[0]}x{window[1]} window: the landmark grid "
        f"needs a factor pair a x b of {landmarks} with a <= {window[0]} and b <= {window[1]}; nearest usable "
        f"counts: {nearest} (>= {tokens}: exact attention)"
    )


def nystra_attention(module: WindowAttentionBase, q: Tensor, k: Tensor, v: Tensor, bias, mask, window) -> Tensor:
    """PnP-Nystra with ``module.nystra``'s bias and mask choices; the windows it cannot trust and (mask "exact")
    the windows the shift mask cuts are redone exactly."""
    params = module.nystra
    if not landmarks_fit(window, params.landmarks) or params.landmarks >= q.shape[-2]:
        # Nyström with as many landmarks as tokens saves nothing: exact is cheaper and exact. A feature map
        # smaller than the module's window (checked at set_attn_impl) may not hold the grid: exact there too.
        return sdpa_attention(module, q, k, v, bias, mask, window)
    grid = landmark_grid(window, params.landmarks)
    pooled = None
    if params.bias == "pooled" and bias is not None:
        pooled = module.pooled_position_bias(bias, window, grid)
    out, trustworthy = nystrom_attention(
        q, k, v, window=window, landmarks=params.landmarks, iters=params.iters,
        tau=params.tau, scale=module.scale, pooled_bias=pooled,
    )
    cut = None
    if mask is not None and params.mask == "exact" and mask.cut.numel():
        cut = cut_window_indices(q.shape[0], mask)
    untrustworthy = (~trustworthy).flatten(1).any(dim=1)
    overflow_flags = _redo_overflow.get()
    if overflow_flags is not None:
        if cut is not None:
            redo_exact(module, out, q, k, v, bias, mask, cut)
        out, overflow = redo_bounded(module, out, q, k, v, bias, mask, untrustworthy)
        overflow_flags.append(overflow)
        return out
    untrustworthy = untrustworthy.nonzero().flatten()
    if torch.compiler.is_exporting():
        # An exported graph cannot branch on how many windows are untrustworthy (known only when it runs,
        # possibly none): it redoes the cut windows, then the untrustworthy ones, always. A window in both gets
        # the same exact values twice. Plain matmul-softmax: fused SDPA cannot be traced on a batch of unknown size.
        # (Slow to export: the unknown size reaches the converters. nystra_hub's own exports use bounded_redo.)
        if cut is not None:
            redo_exact(module, out, q, k, v, bias, mask, cut)
        return out.index_copy(0, untrustworthy, exact_windows(module.scale, q, k, v, bias, mask, untrustworthy))
    redo = untrustworthy if cut is None else torch.cat([untrustworthy, cut]).unique()
    if redo.numel():
        # Untrustworthy denominators are recomputed with the true mask whatever the mask mode: a safety net
        # must not be wrong on purpose.
        redo_exact(module, out, q, k, v, bias, mask, redo)
    return out


register_attn_impl("nystra", nystra_attention, builtin=True)
ATTN_IMPLS = ATTENTION_REGISTRY.builtin_names()  # ("softmax", "sdpa", "nystra")


# -- helpers of the approximations: the windows they must compute exactly -----------------------------------------
def cut_window_indices(total_windows: int, mask: WindowMask) -> Tensor:
    """Flat indices, among ``total_windows`` batch-major windows, of the windows ``mask`` cuts in every image."""
    offsets = torch.arange(0, total_windows, mask.num_windows, device=mask.cut.device)
    return (offsets[:, None] + mask.cut[None, :]).flatten()


def exact_at(module: WindowAttentionBase, q, k, v, bias, mask, windows: Tensor) -> Tensor:
    """Exact attention (bias and mask applied) of the flat window indices ``windows``, in q's dtype; q, k, v, bias,
    mask as an implementation receives them."""
    windows = windows.to(q.device)
    attn_mask = None if bias is None else bias.unsqueeze(0)
    if mask is not None:
        window_mask = mask.additive.index_select(0, windows % mask.num_windows).unsqueeze(1)
        attn_mask = window_mask if attn_mask is None else attn_mask + window_mask
    return fused_attention(
        q.index_select(0, windows), k.index_select(0, windows), v.index_select(0, windows), attn_mask, module.scale
    )


def redo_exact(module: WindowAttentionBase, out: Tensor, q, k, v, bias, mask, windows: Tensor) -> None:
    """Overwrite ``out`` in place at the flat window indices ``windows`` with exact attention (:func:`exact_at`)."""
    out.index_copy_(0, windows.to(q.device), exact_at(module, q, k, v, bias, mask, windows).to(out.dtype))


def exact_windows(scale: float, q: Tensor, k: Tensor, v: Tensor, bias, mask, windows: Tensor) -> Tensor:
    """Exact attention of the flat window indices ``windows`` (bias and mask applied, as :func:`redo_exact`), in
    matmul-softmax form: traceable for a number of windows known only at run time."""
    logits = (q.index_select(0, windows) * scale) @ k.index_select(0, windows).transpose(-2, -1)
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits + mask.additive.index_select(0, windows % mask.num_windows).unsqueeze(1)
    return (logits.softmax(dim=-1) @ v.index_select(0, windows)).to(q.dtype)


# -- a bounded redo: static shapes, no host synchronisation -------------------------------------------------------
# The share of a layer's windows that bounded_redo recomputes exactly, at least one. Untrustworthy windows are rare:
# 1 of 46 368 Nyström windows on six 128² crops of Set14 and Kodak through the three reference models (SwinIR 0 of
# 36 864, Uformer 0 of 8 142, DehazeFormer 1 of 1 362, at most one in a layer); 1/32 costs about 3 % of the layer's
# exact attention.
REDO_CAPACITY_SHARE = 1 / 32
_redo_overflow: contextvars.ContextVar[list[Tensor] | None] = contextvars.ContextVar("nystra_redo_overflow",
                                                                                     default=None)


def redo_capacity(total_windows: int) -> int:
    """How many windows of a layer of ``total_windows`` windows :func:`bounded_redo` recomputes exactly."""
    return min(total_windows, max(1, math.ceil(total_windows * REDO_CAPACITY_SHARE)))


@contextmanager
def bounded_redo() -> Iterator[list[Tensor]]:
    """Inside the block, ``nystra`` layers recompute a fixed number of windows exactly (:func:`redo_capacity`: the
    untrustworthy ones first, then any) instead of exactly as many as are untrustworthy: every shape is known
    before the data, so the layer traces into a small static graph (an export with the data-dependent count took
    176 s against 26 s for exact attention) and runs without a host synchronisation on a GPU.

    Yields a list to which each such layer appends a boolean scalar tensor: True when the layer had more
    untrustworthy windows than it recomputed, and so its output is wrong. The caller must check the flags after
    the forward (a graph output, or one synchronisation at the end) and recompute that input without the bound.
    """
    flags: list[Tensor] = []
    token = _redo_overflow.set(flags)
    try:
        yield flags
    finally:
        _redo_overflow.reset(token)


def redo_bounded(module: WindowAttentionBase, out: Tensor, q, k, v, bias, mask, untrustworthy: Tensor
                 ) -> tuple[Tensor, Tensor]:
    """(``out`` with its untrustworthy windows, up to :func:`redo_capacity`, replaced by exact attention; whether
    there were more than that). ``untrustworthy``: (windows,) booleans."""
    capacity = redo_capacity(untrustworthy.shape[0])
    chosen = torch.topk(untrustworthy.to(torch.float32), capacity).indices  # the untrustworthy ones rank first
    exact = exact_at(module, q, k, v, bias, mask, chosen).to(out.dtype)
    redo = untrustworthy.index_select(0, chosen).view(-1, 1, 1, 1)
    out = out.index_copy(0, chosen, torch.where(redo, exact, out.index_select(0, chosen)))
    return out, untrustworthy.sum() > capacity


def redo_overflowed(flags: list[Tensor]) -> Tensor:
    """One boolean scalar: whether any layer of a :func:`bounded_redo` block overflowed (False without layers)."""
    if not flags:
        return torch.zeros((), dtype=torch.bool)
    return torch.stack(flags).any()


# -- model-wide helpers --------------------------------------------------------------------------------------------
def attention_modules(model: nn.Module) -> Iterator[tuple[str, WindowAttentionBase]]:
    for name, module in model.named_modules():
        if isinstance(module, WindowAttentionBase):
            yield name, module


@contextmanager
def capture_attention(model: nn.Module, hook: AttentionHook) -> Iterator[None]:
    """Inside the ``with`` block, call ``hook(module, q, k, v, bias, mask, window, out)`` after every attention of
    ``model`` (see :meth:`WindowAttentionBase.register_attention_hook`); removed on exit, error or not."""
    handles = [module.register_attention_hook(hook) for _, module in attention_modules(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def set_attn_impl(model: nn.Module, attn_impl: str, **nystra_overrides) -> nn.Module:
    """Switch every attention module of ``model`` in place; nystra overrides apply on top of each module's
    current parameters (so a per-layer plan survives a switch to softmax and back)."""
    check_attn_impl(attn_impl)
    modules = list(attention_modules(model))
    updated = [(module, module.nystra.replace(**nystra_overrides)) for _, module in modules]  # validate first
    if attn_impl == "nystra":
        for (name, module), (_, params) in zip(modules, updated):
            check_landmarks(module.window_size, params.landmarks, where=f"{name}: ")
    for module, params in updated:
        module.set_attn_impl(attn_impl, params)
    return model


def set_position_bias(model: nn.Module, enabled: bool) -> nn.Module:
    """Keep (True) or drop (False) the relative-position bias in every attention module of ``model``."""
    for _, module in attention_modules(model):
        module.use_position_bias = bool(enabled)
    return model


def position_bias_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned parameters the position bias of ``model``'s attention modules is computed from (Swin bias
    tables, DehazeFormer's ``meta`` MLPs), each once: what training can give its own learning rate."""
    found: dict[int, nn.Parameter] = {}
    for _, module in attention_modules(model):
        for source in module.position_bias_sources():
            if isinstance(source, nn.Parameter):
                found.setdefault(id(source), source)
    return list(found.values())


WINDOW_RESIZE_METHODS = ("bicubic", "geometric", "centre")


class TableBiasWindowAttention(WindowAttentionBase):
    """Window attention with a learned ((2wh−1)(2ww−1), heads) bias table, the Swin scheme (SwinIR, Uformer).

    Official names: ``relative_position_bias_table`` (parameter), ``relative_position_index`` (int64 buffer).
    """

    def __init__(self, window_size, num_heads, scale, attn_impl="softmax", nystra=None) -> None:
        super().__init__(window_size, num_heads, scale, attn_impl, nystra)
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self.register_buffer("relative_position_index", relative_position_index(self.window_size))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def compute_position_bias(self, window: tuple[int, int]) -> Tensor:
        n = window[0] * window[1]
        if window == self.window_size:
            index = self.relative_position_index
        else:
            # A smaller window's offsets are all offsets of the trained window: take their exact table rows
            # (the centre of the table), nothing interpolated.
            index = sub_window_index_on(window, self.window_size, self.relative_position_index.device)
        bias = self.relative_position_bias_table[index.reshape(-1)]
        return bias.view(n, n, -1).permute(2, 0, 1)

    def position_bias_sources(self) -> list[Tensor]:
        return [self.relative_position_bias_table, self.relative_position_index]

    def reset_position_index(self) -> None:
        """Rebuild the index buffer (after meta-device initialisation it holds garbage)."""
        with torch.no_grad():
            index = relative_position_index(self.window_size).to(self.relative_position_index.device)
            self.relative_position_index.copy_(index)

    @torch.no_grad()
    def set_window_size(self, window_size: int | tuple[int, int], method: str = "bicubic") -> None:
        """Run this trained module at another window: resize the bias table, rebuild the index.

        method: "bicubic" (Swin's resize: the whole table stretched, timm's simple resize), "geometric" (BEiT's
        geometric-progression interpolation, timm's resize, denser near the centre), "centre" (the trained
        offsets keep their exact values; offsets beyond them take the value of the nearest trained offset).
        """
        if method not in WINDOW_RESIZE_METHODS:
            raise ValueError(f"window resize method must be one of {WINDOW_RESIZE_METHODS}, got {method!r}")
        new = to_2tuple(window_size)
        old = self.window_size
        if new == old:
            return
        table = self.relative_position_bias_table.data
        new_shape = ((2 * new[0] - 1) * (2 * new[1] - 1), self.num_heads)
        if method == "bicubic":
            from timm.layers import resize_rel_pos_bias_table_simple

            if old[0] != old[1]:
                raise ValueError("bicubic table resizing needs a square trained window; use 'centre'")
            resized = resize_rel_pos_bias_table_simple(table, new, new_shape)
        elif method == "geometric":
            from timm.layers import resize_rel_pos_bias_table

            # timm infers a square trained window from the table; old_window_size (timm >= 1.0.31) is only
            # needed, and only passed, for a rectangular one
            rectangular = {} if old[0] == old[1] else {"old_window_size": old}
            resized = resize_rel_pos_bias_table(table, new, new_shape, **rectangular)
        else:
            dy = torch.arange(-(new[0] - 1), new[0]).clamp(-(old[0] - 1), old[0] - 1) + old[0] - 1
            dx = torch.arange(-(new[1] - 1), new[1]).clamp(-(old[1] - 1), old[1] - 1) + old[1] - 1
            old_rows = (dy[:, None] * (2 * old[1] - 1) + dx[None, :]).flatten()
            resized = table[old_rows.to(table.device)]
        self.relative_position_bias_table = nn.Parameter(
            resized.to(table.dtype).contiguous(), requires_grad=self.relative_position_bias_table.requires_grad
        )
        self.window_size = new
        self.relative_position_index = relative_position_index(new).to(table.device)
        self.clear_caches()
