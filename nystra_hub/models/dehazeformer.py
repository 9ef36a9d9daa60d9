"""DehazeFormer (Song et al., 2023), re-implemented on the shared attention core.

Module names, state-dict keys and the forward computation follow the official ``models/dehazeformer.py``
(github.com/IDKiro/DehazeFormer), so released checkpoints load strictly and produce the official outputs.
Differences, all without effect on released checkpoints at inference:
- attention goes through :class:`~nystra_hub.attention.WindowAttentionBase` (softmax / sdpa / nystra);
- the position-bias MLP ``meta`` is evaluated once per window size and cached while no gradient flows (the
  official code re-evaluates it in every attention block on every forward); the cache follows in-place weight
  changes, ``load_state_dict`` and ``.to()``, and is bypassed while gradients flow;
- the window can be changed after loading (:meth:`DehazeFormer.set_window_size`): ``relative_positions`` is
  rebuilt for the new window and the MLP extrapolates to the new offsets;
- ``RLN``'s ``detach_grad`` option (off in every release, training-only) is left out.

Inputs and outputs of :meth:`DehazeFormer.forward` are in the official [−1, 1] range (parity with the official
model); :meth:`DehazeFormer.official_inference` takes and returns [0, 1] images like the other models.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import _calculate_fan_in_and_fan_out

from nystra_hub.attention import (
    WINDOW_RESIZE_METHODS,
    NystraParams,
    WindowAttentionBase,
    log_relative_offset_table,
    log_relative_positions,
    to_2tuple,
    window_partition,
    window_reverse,
)
from nystra_hub.models.common import (
    ArchitectureSpec,
    EnlargedWindowRecipe,
    OfficialPadding,
    RestorationModel,
    count_children,
    mlp_ratio_of,
)

CONV_TYPES = ("Conv", "DWConv")
ATTN_LOCS = ("last", "first", "middle")


def _gain_scaled_trunc_normal_(weight: Tensor, gain: float = 1.0) -> None:
    """The official init: truncated normal with std = gain · sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(weight)
    nn.init.trunc_normal_(weight, std=gain * math.sqrt(2.0 / float(fan_in + fan_out)))


class RLN(nn.Module):
    """Revised LayerNorm: normalises with whole-image statistics (per sample, over C, H, W) and returns the
    affine-normalised map plus ``meta1(std)`` and ``meta2(mean)``, which rescale and rebias the block
    output."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones((1, dim, 1, 1)))
        self.bias = nn.Parameter(torch.zeros((1, dim, 1, 1)))
        self.meta1 = nn.Conv2d(1, dim, 1)
        self.meta2 = nn.Conv2d(1, dim, 1)
        nn.init.trunc_normal_(self.meta1.weight, std=0.02)
        nn.init.constant_(self.meta1.bias, 1)
        nn.init.trunc_normal_(self.meta2.weight, std=0.02)
        nn.init.constant_(self.meta2.bias, 0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mean = torch.mean(x, dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        normalized = (x - mean) / std
        return normalized * self.weight + self.bias, self.meta1(std), self.meta2(mean)


NORM_LAYERS = {"RLN": RLN}


def _norm_layer_name(norm_layer) -> str:
    """Accept the official names ("RLN") and classes (this module's RLN or any class named RLN)."""
    name = norm_layer if isinstance(norm_layer, str) else getattr(norm_layer, "__name__", repr(norm_layer))
    if name not in NORM_LAYERS:
        raise ValueError(
            f"norm_layer must be one of {sorted(NORM_LAYERS)} (every DehazeFormer release uses RLN; a plain "
            f"LayerNorm does not return the rescale/rebias terms the blocks need), got {norm_layer!r}"
        )
    return name


class Mlp(nn.Module):
    def __init__(self, network_depth: int, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.network_depth = network_depth
        self.mlp = nn.Sequential(
            nn.Conv2d(in_features, hidden_features, 1),
            nn.ReLU(True),
            nn.Conv2d(hidden_features, out_features, 1),
        )
        gain = (8 * network_depth) ** (-1 / 4)
        for m in self.mlp:
            if isinstance(m, nn.Conv2d):
                _gain_scaled_trunc_normal_(m.weight, gain)
                nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


class WindowAttention(WindowAttentionBase):
    """Attention inside windows on pre-projected q/k/v; no projection (the enclosing block owns ``proj``).

    Position bias: ``meta`` MLP (2 → 256 → heads) on the ``relative_positions`` buffer, the sign·log(1+|d|)
    offsets of every token pair. It depends only on parameters and the window, so the core caches it.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int, attn_impl: str = "softmax",
                 nystra: NystraParams | None = None) -> None:
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        super().__init__(window_size, num_heads, (dim // num_heads) ** -0.5, attn_impl, nystra)
        self.dim = dim
        self.register_buffer("relative_positions", log_relative_positions(self.window_size))
        self.meta = nn.Sequential(
            nn.Linear(2, 256, bias=True), nn.ReLU(True), nn.Linear(256, num_heads, bias=True)
        )

    def compute_position_bias(self, window: tuple[int, int]) -> Tensor:
        # The official meta(relative_positions) over all N² pairs, evaluated once per distinct offset: a
        # window-w buffer holds only (2w − 1)² distinct rows, so at window 32 the MLP sees 3969 rows instead of
        # 1M (the full evaluation's 256-wide hidden layer alone would be 1 GiB). Same function, same buffer.
        positions = self.relative_positions
        if torch.compiler.is_compiling():
            # The distinct offsets from the geometry (torch.unique is data-dependent and cannot be traced).
            offsets, index = log_relative_offset_table(window, positions.device, positions.dtype)
            n = window[0] * window[1]
            return self.meta(offsets)[index].view(n, n, -1).permute(2, 0, 1)
        if window != self.window_size:  # a smaller window: the MLP evaluates its offsets
            positions = log_relative_positions(window).to(positions)
        n = positions.shape[0]
        rows = positions.reshape(-1, 2)
        if rows.dtype == torch.float32:
            # Each (dy, dx) float32 pair read as one int64 key: a 1-D unique, far faster than unique(dim=0).
            _, first, inverse = _unique_first(rows.contiguous().view(torch.int64).view(-1))
            unique = rows[first]
        else:
            unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
        return self.meta(unique)[inverse].view(n, n, -1).permute(2, 0, 1)

    def position_bias_sources(self) -> list[Tensor]:
        return [self.relative_positions, *self.meta.parameters()]

    def reset_relative_positions(self) -> None:
        """Rebuild the buffer for the current window (after meta-device initialisation it holds garbage)."""
        with torch.no_grad():
            buffer = self.relative_positions
            fresh = log_relative_positions(self.window_size).to(device=buffer.device, dtype=buffer.dtype)
            if buffer.shape == fresh.shape:
                buffer.copy_(fresh)
            else:
                self.relative_positions = fresh
        self.clear_caches()

    @torch.no_grad()
    def set_window_size(self, window_size: int) -> None:
        """Run at another window: the offsets are rebuilt, the MLP extrapolates to the new ones."""
        new = to_2tuple(window_size)
        if new == self.window_size:
            return
        self.window_size = new
        buffer = self.relative_positions
        self.relative_positions = log_relative_positions(new).to(device=buffer.device, dtype=buffer.dtype)
        self.clear_caches()

    def forward(self, qkv: Tensor) -> Tensor:
        b_, n, _ = qkv.shape
        qkv = qkv.reshape(b_, n, 3, self.num_heads, self.dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = self.attend(qkv[0], qkv[1], qkv[2], None)
        return out.transpose(1, 2).reshape(b_, n, self.dim)


def _unique_first(keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unique values of a 1-D tensor, the index of one occurrence of each, and the inverse mapping."""
    unique, inverse = torch.unique(keys, sorted=True, return_inverse=True)
    first = torch.empty(unique.shape[0], dtype=torch.int64, device=keys.device)
    first.scatter_(0, inverse, torch.arange(keys.shape[0], device=keys.device))
    return unique, first, inverse


def _reflect_pads(size: int, window_size: int, shift_size: int) -> tuple[int, int]:
    """(before, after) reflect padding of one dim in :meth:`Attention.check_size` (official formula)."""
    mod_pad = (window_size - size % window_size) % window_size
    if shift_size > 0:
        return shift_size, (window_size - shift_size + mod_pad) % window_size
    return 0, mod_pad


class Attention(nn.Module):
    """The token mixer: windowed attention on reflect-padded (shifted) windows plus a conv branch on V.

    ``Conv``: 3×3 conv – ReLU – 3×3 conv; ``DWConv``: 5×5 depthwise conv. With attention the output is
    ``proj(conv(V) + attn)``; without it ``conv(X)`` (Conv) or ``proj(conv(V))`` (DWConv).
    """

    def __init__(self, network_depth: int, dim: int, num_heads: int, window_size: int, shift_size: int,
                 use_attn: bool = False, conv_type: str | None = None) -> None:
        super().__init__()
        if conv_type not in CONV_TYPES:
            raise ValueError(f"conv_type must be one of {CONV_TYPES}, got {conv_type!r}")
        self.dim = dim
        self.head_dim = int(dim // num_heads)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.network_depth = network_depth
        self.use_attn = use_attn
        self.conv_type = conv_type
        if conv_type == "Conv":
            self.conv = nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size=3, padding=1, padding_mode="reflect"),
                nn.ReLU(True),
                nn.Conv2d(dim, dim, kernel_size=3, padding=1, padding_mode="reflect"),
            )
        else:
            self.conv = nn.Conv2d(dim, dim, kernel_size=5, padding=2, groups=dim, padding_mode="reflect")
        if conv_type == "DWConv" or use_attn:
            self.V = nn.Conv2d(dim, dim, 1)
            self.proj = nn.Conv2d(dim, dim, 1)
        if use_attn:
            self.QK = nn.Conv2d(dim, dim * 2, 1)
            self.attn = WindowAttention(dim, window_size, num_heads)
        gain = (8 * network_depth) ** (-1 / 4)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # Official rule, by output width: QK gets gain 1, every other conv the depth-scaled gain.
                _gain_scaled_trunc_normal_(m.weight, 1.0 if m.weight.shape[0] == dim * 2 else gain)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    @property
    def conv_padding(self) -> int:
        return 1 if self.conv_type == "Conv" else 2

    def check_size(self, x: Tensor, shift: bool = False) -> Tensor:
        """Reflect-pad to a window multiple; shifted blocks pad ``shift_size`` before (the shift) and the rest
        after, instead of a cyclic roll (so no mask is needed)."""
        h, w = x.shape[2:]
        shift_size = self.shift_size if shift else 0
        top, bottom = _reflect_pads(h, self.window_size, shift_size)
        left, right = _reflect_pads(w, self.window_size, shift_size)
        return F.pad(x, (left, right, top, bottom), mode="reflect")

    def forward(self, X: Tensor) -> Tensor:  # noqa: N803 (official name)
        _, _, h, w = X.shape
        if self.conv_type == "DWConv" or self.use_attn:
            V = self.V(X)  # noqa: N806
        if not self.use_attn:
            return self.conv(X) if self.conv_type == "Conv" else self.proj(self.conv(V))
        window = (self.window_size, self.window_size)
        qkv = torch.cat([self.QK(X), V], dim=1)
        shifted_qkv = self.check_size(qkv, self.shift_size > 0)
        ht, wt = shifted_qkv.shape[2:]
        attn_windows = self.attn(window_partition(shifted_qkv.permute(0, 2, 3, 1), window))
        shifted_out = window_reverse(attn_windows, window, ht, wt)
        s = self.shift_size
        attn_out = shifted_out[:, s:s + h, s:s + w, :].permute(0, 3, 1, 2)
        return self.proj(self.conv(V) + attn_out)

    def set_window_size(self, window_size: int, method: str = "bicubic") -> None:
        """Run this block at another window. ``method`` is accepted for a uniform interface (plans pass it)
        and checked, but there is no table to resize: the bias MLP evaluates the new offsets itself."""
        if method not in WINDOW_RESIZE_METHODS:
            raise ValueError(f"window resize method must be one of {WINDOW_RESIZE_METHODS}, got {method!r}")
        shifted = self.shift_size > 0
        self.window_size = window_size
        self.shift_size = window_size // 2 if shifted else 0
        if self.use_attn:
            self.attn.set_window_size(window_size)

    def fits_reflect_padding(self, size: int) -> bool:
        """Whether a map of ``size`` (along one dim) passes every reflect pad of this module."""
        pads = [self.conv_padding]
        if self.use_attn:
            pads += _reflect_pads(size, self.window_size, self.shift_size)
        return all(p < size for p in pads if p > 0)


class TransformerBlock(nn.Module):
    def __init__(self, network_depth: int, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 norm_layer=RLN, mlp_norm: bool = False, window_size: int = 8, shift_size: int = 0,
                 use_attn: bool = True, conv_type: str | None = None) -> None:
        super().__init__()
        self.use_attn = use_attn
        self.mlp_norm = mlp_norm
        self.norm1 = norm_layer(dim) if use_attn else nn.Identity()
        self.attn = Attention(network_depth, dim, num_heads=num_heads, window_size=window_size,
                              shift_size=shift_size, use_attn=use_attn, conv_type=conv_type)
        self.norm2 = norm_layer(dim) if use_attn and mlp_norm else nn.Identity()
        self.mlp = Mlp(network_depth, dim, hidden_features=int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        if self.use_attn:
            x, rescale, rebias = self.norm1(x)
        x = self.attn(x)
        if self.use_attn:
            x = x * rescale + rebias
        x = identity + x
        identity = x
        if self.use_attn and self.mlp_norm:
            x, rescale, rebias = self.norm2(x)
        x = self.mlp(x)
        if self.use_attn and self.mlp_norm:
            x = x * rescale + rebias
        return identity + x


def attention_flags(depth: int, attn_ratio: float, attn_loc: str = "last") -> list[bool]:
    """Which blocks of a stage attend (official float arithmetic: 3/4 of 8 blocks is exactly the last 6)."""
    attn_depth = attn_ratio * depth
    if attn_loc == "last":
        return [i >= depth - attn_depth for i in range(depth)]
    if attn_loc == "first":
        return [i < attn_depth for i in range(depth)]
    if attn_loc == "middle":
        return [(depth - attn_depth) // 2 <= i < (depth + attn_depth) // 2 for i in range(depth)]
    raise ValueError(f"attn_loc must be one of {ATTN_LOCS}, got {attn_loc!r}")


class BasicLayer(nn.Module):
    def __init__(self, network_depth: int, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 norm_layer=RLN, window_size: int = 8, attn_ratio: float = 0.0, attn_loc: str = "last",
                 conv_type: str | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.depth = depth
        use_attns = attention_flags(depth, attn_ratio, attn_loc)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                network_depth=network_depth, dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                norm_layer=norm_layer, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2, use_attn=use_attns[i], conv_type=conv_type,
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 kernel_size: int | None = None) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        kernel_size = kernel_size or patch_size
        self.padding = (kernel_size - patch_size + 1) // 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=patch_size,
                              padding=self.padding, padding_mode="reflect")

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class PatchUnEmbed(nn.Module):
    def __init__(self, patch_size: int = 4, out_chans: int = 3, embed_dim: int = 96,
                 kernel_size: int | None = None) -> None:
        super().__init__()
        self.out_chans = out_chans
        self.embed_dim = embed_dim
        kernel_size = kernel_size or 1
        self.padding = kernel_size // 2
        self.proj = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans * patch_size**2, kernel_size=kernel_size, padding=self.padding,
                      padding_mode="reflect"),
            nn.PixelShuffle(patch_size),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class SKFusion(nn.Module):
    """Selective-kernel fusion of ``height`` same-shaped maps with channel weights from their pooled sum."""

    def __init__(self, dim: int, height: int = 2, reduction: int = 8) -> None:
        super().__init__()
        self.height = height
        d = max(int(dim / reduction), 4)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(dim, d, 1, bias=False), nn.ReLU(), nn.Conv2d(d, dim * height, 1, bias=False)
        )
        self.softmax = nn.Softmax(dim=1)

    def forward(self, in_feats: Sequence[Tensor]) -> Tensor:
        b, c, h, w = in_feats[0].shape
        feats = torch.cat(list(in_feats), dim=1).view(b, self.height, c, h, w)
        attn = self.mlp(self.avg_pool(torch.sum(feats, dim=1)))
        attn = self.softmax(attn.view(b, self.height, c, 1, 1))
        return torch.sum(feats * attn, dim=1)


def _per_stage(name: str, value) -> list:
    value = list(value)
    if len(value) != 5:
        raise ValueError(f"{name} must list 5 stages, got {len(value)}: {value}")
    return value


def _as_number(value) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        value = float(value)  # numpy scalars and the like; non-numbers raise here
    return value


class DehazeFormer(RestorationModel):
    """DehazeFormer with the official constructor arguments (``build_model("dehazeformer", **case_kwargs)``).

    :meth:`forward`: (B, in_chans, H, W) float in [−1, 1] → the official output (K·x − B + x, not clamped),
    the official convention, for parity. :meth:`official_inference`: [0, 1] in, [0, 1] out, as the official
    test script (scale, forward, clamp, map back). RLN uses whole-image statistics: tiling changes the output.

    The official ``DehazeFormer`` class has no Args block; the meanings below are read from its code. The five
    per-stage sequences describe the U: stage 1 at full resolution, 2 at 1/2, 3 at 1/4, then 4 at 1/2 and 5 at
    full resolution again, each decoder stage fused with its encoder's skip (SK fusion).

    Args:
        in_chans (int): Channels of the input image. Default 3.
        out_chans (int): Channels of the last projection: ``in_chans + 1``, a map K and a bias B per channel;
            the output is ``K·x − B + x``. Default 4.
        window_size (int): Window size of the window attention; shifted blocks reflect-pad their windows by
            half of it instead of rolling the map. Default 8.
        embed_dims (sequence of 5 int): Channels of each stage; the skips need ``embed_dims[0] ==
            embed_dims[4]`` and ``embed_dims[1] == embed_dims[3]``. Default (24, 48, 96, 48, 24).
        mlp_ratios (sequence of 5 float): Ratio of each stage's MLP hidden dim to its dim.
            Default (2, 4, 4, 2, 2).
        depths (sequence of 5 int): Blocks per stage. Default (16, 16, 16, 8, 8).
        num_heads (sequence of 5 int): Attention heads per stage. Default (2, 4, 6, 1, 1).
        attn_ratio (sequence of 5 float): Fraction of each stage's blocks that attend: the last
            ``attn_ratio · depth`` ones; the others mix tokens by convolution alone. Default (1/4, 1/2, 3/4, 0, 0).
        conv_type (sequence of 5 str): Each stage's convolution branch: "DWConv" (a 5x5 depthwise conv on V)
            or "Conv" (3x3 conv, ReLU, 3x3 conv). Default "DWConv" for every stage.
        norm_layer (sequence of 5): Each stage's normalization: "RLN" (or the class), the revised LayerNorm
            with whole-image statistics whose rescale and rebias terms the blocks use; the only one supported.
        attn_impl (str): nystra_hub's, keyword only: how every window attends: "softmax" (the official
            computation), "sdpa" (``torch.nn.functional.scaled_dot_product_attention``, exact), "nystra"
            (the PnP-Nystra approximation) or a name registered with
            :func:`nystra_hub.attention.register_attn_impl`. Default "softmax"; ``set_attn_impl`` changes it
            after loading.
        nystra (NystraParams | dict | None): nystra_hub's, keyword only: the Nyström parameters used when
            ``attn_impl="nystra"`` (see :class:`~nystra_hub.attention.NystraParams`); a dict updates
            :attr:`default_nystra` (16 landmarks, 2 iterations, tau 5: SwinIR's recipe, see its comment).
            Default None: that recipe.
    """

    arch = "dehazeformer"
    spec = ArchitectureSpec(
        title="DehazeFormer",
        paper="Vision Transformers for Single Image Dehazing (Song et al., IEEE TIP 2023), arXiv 2204.03883",
        value_range=(-1.0, 1.0),
        padding=OfficialPadding(),  # none outside the network: the forward reflect-pads to a multiple of 4 itself
        tile_overlap=None,
        tiling_refusal="DehazeFormer cannot be tiled: its RLN layers normalise each feature map with whole-image "
                       "mean and standard deviation, so tiles would change the output",
        tiles_share_padding=False,
        paper_recipes={"default": EnlargedWindowRecipe(
            32, 16, 2, 5.0, "no recipe in the paper for DehazeFormer: SwinIR's (w32, m16, 2 iterations, tau 5) "
                            "used")},
        bias_resize="the position-bias MLP evaluated at the new offsets",
        shift_masks=False,  # shifted windows are reflect-padded, never masked
        metric_protocol="dehazeformer",  # its test.py: float RGB, SSIM on downsampled images
        # OpenVINO bfloat16: held-out PSNR -0.004 dB, worst image 55.4 dB from float32 on the reference model
        # (benchmarks/openvino-bf16-quality.json)
        cpu_bfloat16_within_budget=True,
    )
    block_types = (TransformerBlock,)
    # No reference recipe for DehazeFormer: the SwinIR recipe (m = 16, 2 iterations, τ = 5) is the reference's
    # choice for the other window-8 model with a position bias; DehazeFormer's heads are 16 wide (d ≥ 16), its
    # logits are of SwinIR's order, and τ = 5 keeps φ = exp there (τ = 0, Uformer's, linearises every positive
    # logit). m = 16 is a 4×4 grid that divides every window the model runs at (8, 16, 32).
    default_nystra = NystraParams(landmarks=16, iters=2, tau=5.0)
    patch_size = 4

    def __init__(
        self, in_chans=3, out_chans=4, window_size=8, embed_dims=(24, 48, 96, 48, 24),
        mlp_ratios=(2.0, 4.0, 4.0, 2.0, 2.0), depths=(16, 16, 16, 8, 8), num_heads=(2, 4, 6, 1, 1),
        attn_ratio=(1 / 4, 1 / 2, 3 / 4, 0, 0), conv_type=("DWConv",) * 5, norm_layer=("RLN",) * 5, *,
        attn_impl: str = "softmax", nystra: NystraParams | dict | None = None,
    ) -> None:
        super().__init__()
        embed_dims = [int(d) for d in _per_stage("embed_dims", embed_dims)]
        mlp_ratios = [_as_number(r) for r in _per_stage("mlp_ratios", mlp_ratios)]
        depths = [int(d) for d in _per_stage("depths", depths)]
        num_heads = [int(h) for h in _per_stage("num_heads", num_heads)]
        attn_ratio = [_as_number(r) for r in _per_stage("attn_ratio", attn_ratio)]
        conv_type = _per_stage("conv_type", conv_type)
        norm_names = [_norm_layer_name(n) for n in _per_stage("norm_layer", norm_layer)]
        if embed_dims[1] != embed_dims[3] or embed_dims[0] != embed_dims[4]:
            raise ValueError(f"embed_dims must satisfy e1 == e3 and e0 == e4 (skips), got {embed_dims}")
        if out_chans != in_chans + 1:
            raise ValueError(
                f"out_chans must be in_chans + 1 (the K map and a bias per channel), got "
                f"in_chans={in_chans}, out_chans={out_chans}"
            )
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_size!r}")
        bad = [c for c in conv_type if c not in CONV_TYPES]
        if bad:
            raise ValueError(f"conv_type entries must be one of {CONV_TYPES}, got {bad[0]!r}")
        self.official_kwargs = dict(
            in_chans=in_chans, out_chans=out_chans, window_size=window_size, embed_dims=embed_dims,
            mlp_ratios=mlp_ratios, depths=depths, num_heads=num_heads, attn_ratio=attn_ratio,
            conv_type=list(conv_type), norm_layer=norm_names,
        )
        self.in_chans = in_chans
        self.out_chans = out_chans
        self.window_size = window_size
        self.mlp_ratios = mlp_ratios
        self._min_size_cache: tuple[tuple, int] | None = None
        network_depth = sum(depths)

        def layer(i: int) -> BasicLayer:
            return BasicLayer(
                network_depth=network_depth, dim=embed_dims[i], depth=depths[i], num_heads=num_heads[i],
                mlp_ratio=mlp_ratios[i], norm_layer=NORM_LAYERS[norm_names[i]], window_size=window_size,
                attn_ratio=attn_ratio[i], attn_loc="last", conv_type=conv_type[i],
            )

        self.patch_embed = PatchEmbed(patch_size=1, in_chans=in_chans, embed_dim=embed_dims[0], kernel_size=3)
        self.layer1 = layer(0)
        self.patch_merge1 = PatchEmbed(patch_size=2, in_chans=embed_dims[0], embed_dim=embed_dims[1])
        self.skip1 = nn.Conv2d(embed_dims[0], embed_dims[0], 1)
        self.layer2 = layer(1)
        self.patch_merge2 = PatchEmbed(patch_size=2, in_chans=embed_dims[1], embed_dim=embed_dims[2])
        self.skip2 = nn.Conv2d(embed_dims[1], embed_dims[1], 1)
        self.layer3 = layer(2)
        self.patch_split1 = PatchUnEmbed(patch_size=2, out_chans=embed_dims[3], embed_dim=embed_dims[2])
        self.fusion1 = SKFusion(embed_dims[3])
        self.layer4 = layer(3)
        self.patch_split2 = PatchUnEmbed(patch_size=2, out_chans=embed_dims[4], embed_dim=embed_dims[3])
        self.fusion2 = SKFusion(embed_dims[4])
        self.layer5 = layer(4)
        self.patch_unembed = PatchUnEmbed(
            patch_size=1, out_chans=out_chans, embed_dim=embed_dims[4], kernel_size=3
        )
        self._init_attention(attn_impl, nystra)

    # -- structure ------------------------------------------------------------------------------------------
    @property
    def layers(self) -> list[BasicLayer]:
        return [self.layer1, self.layer2, self.layer3, self.layer4, self.layer5]

    def blocks(self) -> Iterator[TransformerBlock]:
        for layer in self.layers:
            yield from layer.blocks

    def window_sizes(self) -> list[int]:
        """The current window of every attending block."""
        return [blk.attn.window_size for blk in self.blocks() if blk.use_attn]

    def reset_constants(self) -> None:
        """Recompute every tensor that is derived, not learned (after meta-device initialisation)."""
        for blk in self.blocks():
            if blk.use_attn:
                blk.attn.attn.reset_relative_positions()

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Accept ``relative_positions`` buffers saved for another window (a checkpoint trained at 8
        loaded into a model switched to 16) when each is exactly the official buffer of its window; the model
        keeps its own. Every other key stays under the strict check."""
        state = dict(state)
        for name, buffer in self.named_buffers():
            incoming = state.get(name)
            if not name.endswith(".relative_positions") or incoming is None or incoming.shape == buffer.shape:
                continue
            if _is_official_relative_positions(incoming):
                state[name] = buffer.detach().clone()
        return state

    # -- windows --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def set_window_size(self, window_size: int, method: str = "bicubic", layers: Sequence[int] | None = None) -> None:
        """Run at another window (trained: ``window_size`` at build, 8 in every release).
        ``relative_positions`` is rebuilt and the bias MLP extrapolates to the new offsets (``method`` is checked
        for the interface shared with SwinIR and Uformer; there is no table to resize); odd blocks shift by
        window//2 (reflect padding). ``layers`` selects stage indices 0–4 (default: all). The minimum input
        size grows with the window (:attr:`min_size`); the function changes, so measure quality."""
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_size!r}")
        if method not in WINDOW_RESIZE_METHODS:
            raise ValueError(f"window resize method must be one of {WINDOW_RESIZE_METHODS}, got {method!r}")
        if layers is not None and not set(layers) <= set(range(5)):
            raise ValueError(f"layers must be stage indices in 0..4, got {list(layers)}")
        for i, layer in enumerate(self.layers):
            if layers is None or i in layers:
                for blk in layer.blocks:
                    blk.attn.set_window_size(window_size)

    @property
    def pad_multiple(self) -> int:
        """The model pads its input to this multiple itself (windows are padded per block)."""
        return self.patch_size

    @property
    def min_size(self) -> int:
        """Smallest height/width the model accepts with its current windows (see :meth:`_accepts_side`)."""
        key = tuple((blk.attn.window_size, blk.attn.shift_size) for blk in self.blocks())
        if self._min_size_cache is None or self._min_size_cache[0] != key:
            largest = max([self.patch_size, *self.window_sizes()])
            # Beyond 4·(window + 1) every stage is at least a window wide: every pad is < window <= size.
            bound = self.patch_size * (largest + 1)
            rejected = [side for side in range(1, bound + 1) if not self._accepts_side(side)]
            self._min_size_cache = (key, (max(rejected) + 1) if rejected else 1)
        return self._min_size_cache[1]

    def _accepts_side(self, side: int) -> bool:
        """Whether an image side of ``side`` pixels passes every reflect pad of the forward pass.

        Reflect padding needs pad < size in each padded dim. The input is padded to a multiple of 4 (pad < 4);
        stages 1 and 5 run at that size s, stages 2 and 4 at s/2, stage 3 at s/4. Every block pads its conv
        (2 for DWConv, 1 for Conv) and, when it attends, pads to a window multiple w: (0, mod) unshifted,
        or (w/2, (w/2 + mod) mod w) shifted, with mod = (w − size mod w) mod w. The deepest attending stage binds:
        a shifted window-8 block at s/4 = 5 or 6 pads 7 or 6 after, so it needs s/4 ≥ 7, s = 28: any input of
        25 to 28 pixels (padded to 28) is the least. Window 16 needs s/4 ≥ 13 (49 px), window 32 s/4 ≥ 25
        (97 px). The rule is evaluated per side for the blocks as they are, so it follows set_window_size.
        """
        pad4 = (self.patch_size - side % self.patch_size) % self.patch_size
        if pad4 and pad4 >= side:
            return False
        padded = side + pad4
        stage_sides = (padded, padded // 2, padded // 4, padded // 2, padded)
        convs = [(padded, self.patch_embed.padding), (padded, self.patch_unembed.padding)]
        if any(p and p >= s for s, p in convs):
            return False
        return all(
            blk.attn.fits_reflect_padding(stage_side)
            for layer, stage_side in zip(self.layers, stage_sides)
            for blk in layer.blocks
        )

    # -- forward --------------------------------------------------------------------------------------------
    def check_image_size(self, x: Tensor) -> Tensor:
        _, _, h, w = x.size()
        mod_pad_h = (self.patch_size - h % self.patch_size) % self.patch_size
        mod_pad_w = (self.patch_size - w % self.patch_size) % self.patch_size
        return F.pad(x, (0, mod_pad_w, 0, mod_pad_h), "reflect")

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = self.layer1(x)
        skip1 = x
        x = self.patch_merge1(x)
        x = self.layer2(x)
        skip2 = x
        x = self.patch_merge2(x)
        x = self.layer3(x)
        x = self.patch_split1(x)
        x = self.fusion1([x, self.skip2(skip2)]) + x
        x = self.layer4(x)
        x = self.patch_split2(x)
        x = self.fusion2([x, self.skip1(skip1)]) + x
        x = self.layer5(x)
        return self.patch_unembed(x)

    def forward(self, x: Tensor) -> Tensor:
        """Official forward: x in [−1, 1] → K·x − B + x (unclamped), same size."""
        self.check_input(x, self.in_chans, self.min_size)
        h, w = x.shape[2:]
        x = self.check_image_size(x)
        feat = self.forward_features(x)
        k, b = torch.split(feat, (1, self.in_chans), dim=1)
        x = k * x - b + x
        return x[:, :, :h, :w]

    @property
    def official_multiple(self) -> int:
        return self.pad_multiple

    def official_size(self, h: int, w: int) -> tuple[int, int]:
        """The size the forward reflect-pads to inside (nothing is padded outside it)."""
        m = self.pad_multiple
        return math.ceil(h / m) * m, math.ceil(w / m) * m

    def activation_stages(self) -> list[tuple[int, int, int, int, float]]:
        k = self.official_kwargs
        window = max(self.window_sizes(), default=int(k.get("window_size", 8)))
        return [(lv, int(d), int(h), window, float(r))
                for lv, d, h, r in zip([0, 1, 2, 1, 0], k["embed_dims"], k["num_heads"], k["mlp_ratios"])]


    # -- checkpoint detection (nystra_hub.io.detect) ---------------------------------------------------------------
    #: keys every DehazeFormer state dict has: how :func:`nystra_hub.detect_checkpoint` recognises one
    detection_keys = ("patch_embed.proj.weight", "layer1.blocks.0.mlp.mlp.0.weight", "fusion1.mlp.0.weight")

    @classmethod
    def infer_kwargs(cls, state_dict: dict[str, Tensor]) -> tuple[dict, list[str]]:
        """The official constructor arguments of a DehazeFormer state dict (official keys, unwrapped), and what
        its tensors leave open: one "argument: why, and what settles it" line each.

        Read from shapes: in_chans (patch_embed), out_chans (patch_unembed), per stage embed_dims and mlp_ratios
        (the MLP's first conv), depths (blocks), conv_type (Conv has conv.0, DWConv a single conv), attn_ratio
        (which blocks own QK: the last attn_ratio·depth), num_heads (the bias MLP's outputs), window_size (the
        ``relative_positions`` buffer, N² × N² × 2). Heads of stages without attention are not stored and
        change nothing: the official defaults fill them.
        """
        stages = [f"layer{i}" for i in range(1, 6)]
        depths = [count_children(state_dict, f"{stage}.blocks.") for stage in stages]
        mlps = [state_dict[f"{stage}.blocks.0.mlp.mlp.0.weight"] for stage in stages]
        attending = [[f"{stage}.blocks.{i}.attn.QK.weight" in state_dict for i in range(depth)]
                     for stage, depth in zip(stages, depths)]
        default_heads = inspect.signature(cls).parameters["num_heads"].default
        num_heads = [
            state_dict[f"{stage}.blocks.{flags.index(True)}.attn.attn.meta.2.weight"].shape[0] if any(flags)
            else default for stage, flags, default in zip(stages, attending, default_heads)
        ]
        window_size, ambiguities = _infer_window_size(state_dict)
        kwargs = dict(
            in_chans=int(state_dict["patch_embed.proj.weight"].shape[1]),
            out_chans=int(state_dict["patch_unembed.proj.0.weight"].shape[0]), window_size=window_size,
            embed_dims=[m.shape[1] for m in mlps], mlp_ratios=[mlp_ratio_of(m.shape[0], m.shape[1]) for m in mlps],
            depths=depths, num_heads=num_heads, attn_ratio=[_attn_ratio(i, f) for i, f in enumerate(attending)],
            conv_type=["Conv" if f"{stage}.blocks.0.attn.conv.0.weight" in state_dict else "DWConv"
                       for stage in stages],
            norm_layer=["RLN"] * 5,  # the only norm the blocks work with (its meta1/meta2 keys)
        )
        return kwargs, ambiguities


def _attn_ratio(stage: int, flags: list[bool]) -> float:
    """The attn_ratio that makes exactly the blocks marked in ``flags`` attend (official placement: the last).

    count / depth is the official value (¼ of 8 blocks is 2); when float rounding puts depth·ratio a hair above
    the count, the middle of the interval of ratios selecting the same blocks is used instead."""
    count, depth = sum(flags), len(flags)
    for ratio in (count / depth, (count + 0.5) / depth):
        if attention_flags(depth, ratio) == flags:
            return ratio
    raise ValueError(f"stage {stage + 1} attends in blocks {[i for i, f in enumerate(flags) if f]} of {depth}: "
                     f"DehazeFormer places attention in the last attn_ratio·depth blocks (attn_loc='last'), the "
                     f"only placement supported")


def _infer_window_size(state_dict: dict[str, Tensor]) -> tuple[int, list[str]]:
    """The window from a ``relative_positions`` buffer (w² × w² × 2), and the ambiguity line without one."""
    positions = next((v for k, v in state_dict.items() if k.endswith(".attn.attn.relative_positions")), None)
    if positions is not None:
        return math.isqrt(positions.shape[0]), []
    return 8, ["window_size: no block attends, so no window is recorded; 8 assumed, which changes no output"]


def _is_official_relative_positions(tensor: Tensor) -> bool:
    """True when ``tensor`` is the official ``relative_positions`` buffer of some square window."""
    if tensor.dim() != 3 or tensor.shape[0] != tensor.shape[1] or tensor.shape[2] != 2:
        return False
    window = math.isqrt(tensor.shape[0])
    if window * window != tensor.shape[0]:
        return False
    expected = log_relative_positions((window, window))
    return torch.allclose(tensor.detach().cpu().float(), expected, rtol=0, atol=1e-6)
