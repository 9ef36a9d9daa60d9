"""Uformer (Wang et al., CVPR 2022), re-implemented on the shared attention core.

Module names, state-dict keys and the forward computation follow the official ``model.py``
(github.com/ZhendongWang6/Uformer), so released checkpoints load strictly and produce the official outputs.
Differences, none of which changes a released model's output where the official code runs:
- attention goes through :class:`~nystra_hub.attention.TableBiasWindowAttention` (softmax / sdpa / nystra);
- shifted-window masks come from the process-wide cache instead of being rebuilt for every block and forward;
- feature-map sizes are passed down explicitly instead of being recovered with ``sqrt(L)``;
- dropout, stochastic depth and gradient checkpointing (training-only, no parameters) are left out;
- where the official code crashes, this one runs, with documented rules (see :class:`LeWinTransformerBlock`):
  a stage smaller than its window is attended as one window the size of the stage, and a decoder ``modulator``
  built for a larger window than the block uses contributes its top-left part;
- :meth:`Uformer.set_window_size` runs a trained model at another window, :meth:`Uformer.official_inference`
  is the official test protocol (any image size).

Only what the releases use is supported: ``token_projection="linear"``, ``token_mlp`` "leff" (also "mlp"/"ffn"
and "fastleff", which only differ in the feed-forward), the default ``norm_layer``, ``dowsample`` and
``upsample``; ``cross_modulator`` (never released) raises.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nystra_hub.attention import (
    SHIFT_MASK_VALUE,
    WINDOW_RESIZE_METHODS,
    NystraParams,
    TableBiasWindowAttention,
    WindowMask,
    relative_position_index,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from nystra_hub.errors import CheckpointError
from nystra_hub.models.common import (
    ArchitectureSpec,
    CentredZeroPadding,
    EnlargedWindowRecipe,
    RestorationModel,
    count_children,
    gelu_on_fresh_output,
    mlp_ratio_of,
    stream_op,
    tokens_to_image,
)

TOKEN_MLPS = ("leff", "fastleff", "mlp", "ffn")
# The official test scripts pad every image to a square whose side is a multiple of this (expand2square).
OFFICIAL_PAD_FACTOR = 128
NUM_STAGES = 4  # encoder stages (each followed by a 2x downsampling); the decoder mirrors them


# -- feed-forward --------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    """token_mlp "mlp" / "ffn": Linear, GELU, Linear."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        return self.fc2(gelu_on_fresh_output(self.fc1(x), self.act))


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: Linear + GELU, 3x3 depthwise conv + GELU on the token grid, Linear.

    ``depthwise=False`` is the official FastLeFF (a full 3x3 conv; same keys).
    """

    def __init__(self, dim: int, hidden_dim: int, depthwise: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU())
        groups = hidden_dim if depthwise else 1
        self.dwconv = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=groups), nn.GELU())
        self.linear2 = nn.Sequential(nn.Linear(hidden_dim, dim))

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        # The Sequentials keep the official keys (linear1.0, dwconv.0); their GELUs run in place on fresh outputs.
        x = gelu_on_fresh_output(self.linear1[0](x), self.linear1[1])
        x = gelu_on_fresh_output(self.dwconv[0](tokens_to_image(x, x_size)), self.dwconv[1]).flatten(2).transpose(1, 2)
        return self.linear2(x)


# -- attention -----------------------------------------------------------------------------------------------
class LinearProjection(nn.Module):
    """Official ``qkv`` module: ``to_q`` Linear(C, C) and ``to_kv`` Linear(C, 2C)."""

    def __init__(self, dim: int, heads: int, bias: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=bias)
        self.to_kv = nn.Linear(dim, dim * 2, bias=bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b_, n, c = x.shape
        q = self.to_q(x).reshape(b_, n, self.heads, c // self.heads).transpose(1, 2)
        kv = self.to_kv(x).reshape(b_, n, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return q, kv[0], kv[1]


class WindowAttention(TableBiasWindowAttention):
    """W-MSA with the Swin relative-position bias table and Uformer's linear q/kv projection."""

    def __init__(
        self, dim, win_size, num_heads, qkv_bias=True, qk_scale=None, attn_impl="softmax", nystra=None
    ) -> None:
        head_dim = dim // num_heads
        super().__init__(win_size, num_heads, qk_scale or head_dim**-0.5, attn_impl, nystra)
        self.dim = dim
        self.qkv = LinearProjection(dim, num_heads, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: WindowMask | None = None, window: int | None = None) -> Tensor:
        b_, n, c = x.shape
        q, k, v = self.qkv(x)
        # A stage smaller than the window attends one smaller window: the core takes its bias from the exact
        # centre of the trained table.
        out = self.attend(q, k, v, mask, None if window is None else (window, window))
        return self.proj(out.transpose(1, 2).reshape(b_, n, c))


def padding_window_mask(mask: Tensor, size: tuple[int, int], window: int) -> Tensor:
    """The official optional input mask per window: (B·nW, N, N) additive, −100 where both tokens are set.

    As in the official block: the (B, 1, H, W) mask is resized (nearest) to the stage, partitioned without the
    cyclic shift, and a pair is masked when the product of its two mask values is non-zero.
    """
    resized = F.interpolate(mask.float(), size=size).permute(0, 2, 3, 1)
    windows = window_partition(resized, (window, window)).squeeze(-1)  # (B·nW, N)
    product = windows.unsqueeze(2) * windows.unsqueeze(1)
    return torch.zeros_like(product).masked_fill_(product != 0, SHIFT_MASK_VALUE)


class LeWinTransformerBlock(nn.Module):
    """Locally-enhanced window transformer block: (S)W-MSA with optional modulator, then LeFF.

    Build-time rule (official): a block whose training resolution is at most its window attends that whole
    resolution as one unshifted window (``win_size = min(input_resolution)``, ``shift_size = 0``); the
    modulator is nevertheless created for the unclamped window (official parameter shape, kept so checkpoints
    load).

    Run-time rule (the official code crashes here): on a feature map smaller than ``win_size`` the block
    attends the whole map as one unshifted window of the map's size. The bias of that window comes from the
    centre of the trained table (exact offsets, :func:`nystra_hub.attention.sub_window_index`), and a modulator
    bigger than the window contributes its top-left part (see :meth:`modulator_weight`). A map exactly the
    window's size keeps the shift, as the official code does.
    """

    def __init__(
        self, dim, input_resolution, num_heads, win_size=8, shift_size=0, mlp_ratio=4.0, qkv_bias=True,
        qk_scale=None, norm_layer=nn.LayerNorm, token_mlp="leff", modulator=False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.shifted = shift_size > 0  # what the layer asked for, before the build-time clamp
        self.mlp_ratio = mlp_ratio
        self.token_mlp = token_mlp
        self.win_size, self.shift_size = self.clamped_window(win_size, shift_size)
        self.modulator = nn.Embedding(win_size * win_size, dim) if modulator else None
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, self.win_size, num_heads, qkv_bias, qk_scale)
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        if token_mlp in ("ffn", "mlp"):
            self.mlp = Mlp(dim, hidden)
        else:
            self.mlp = LeFF(dim, hidden, depthwise=token_mlp == "leff")

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
            f"win_size={self.win_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}"
        )

    def clamped_window(self, win_size: int, shift_size: int) -> tuple[int, int]:
        """The official build rule: (window, shift) for this block's training resolution."""
        if min(self.input_resolution) <= win_size:
            return min(self.input_resolution), 0
        if not 0 <= shift_size < win_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, win_size {win_size})")
        return win_size, shift_size

    def window_at(self, side: int) -> tuple[int, int]:
        """(window, shift) used on a side×side feature map (the run-time rule)."""
        if side < self.win_size:
            return side, 0
        return self.win_size, self.shift_size

    def modulator_weight(self, window: int) -> Tensor:
        """The (window², C) modulator added to every window's tokens.

        The modulator is a learned embedding per position of an m×m window grid. When the block attends a
        smaller w×w window (its stage is smaller than the window the modulator was built for, a case the
        official code crashes on), the map is where the first window of a partition sits, anchored top-left,
        at the trained pixel scale, so each token takes the embedding of its own position: the top-left w×w
        block of the grid. Nothing is stretched: like the bias (exact centre offsets), the modulator keeps its
        trained meaning.
        """
        weight = self.modulator.weight
        grid = math.isqrt(weight.shape[0])
        if grid == window:
            return weight
        if grid < window:
            raise ValueError(f"a modulator built for a {grid}x{grid} window cannot serve {window}x{window}")
        return weight.view(grid, grid, -1)[:window, :window].reshape(window * window, -1)

    def attention_mask(
        self, size: tuple[int, int], window: int, shift: int, pad_mask: Tensor | None, device: torch.device
    ) -> WindowMask | None:
        shift_mask = None
        if shift > 0:
            shift_mask = shifted_window_mask(*size, (window, window), (shift, shift), device)
        if pad_mask is None:
            return shift_mask
        additive = padding_window_mask(pad_mask, size, window)
        if shift_mask is not None:
            # Official: input mask + shift mask (it only broadcasts for one image; here any batch works).
            n = window * window
            additive = (additive.view(pad_mask.shape[0], -1, n, n) + shift_mask.additive).view(-1, n, n)
        return WindowMask.from_additive(additive)

    def forward(self, x: Tensor, x_size: tuple[int, int], mask: Tensor | None = None) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        window, shift = self.window_at(min(h, w))
        attn_mask = self.attention_mask((h, w), window, shift, mask, x.device)
        shortcut = x
        x = self.norm1(x).view(b, h, w, c)
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, (window, window))
        if self.modulator is not None:
            windows = windows + self.modulator_weight(window)
        windows = self.attn(windows, mask=attn_mask, window=window)
        x = window_reverse(windows, (window, window), h, w)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = shortcut + x.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x), x_size)

    @torch.no_grad()
    def set_window_size(self, win_size: int, method: str = "bicubic") -> None:
        """Become the block the official code builds with ``win_size`` (same build rule), keeping the weights:
        the bias table is resized to the new (clamped) window, the modulator with it.

        The modulator as used (its whole grid, or its top-left part for a block clamped to a stage smaller than
        the grid) is resized to the block's new window, not to the unclamped ``win_size``: it then carries the
        same stretch as the bias table of its block, and a block whose window does not change keeps everything
        (setting the trained window back is a no-op). Methods: "bicubic" and "geometric" interpolate the grid
        bicubically (the modulator is a smooth per-position embedding; there is no log-spaced offset axis for
        "geometric" to follow); "centre" keeps every trained value exactly by tiling the grid periodically (each
        token gets the embedding of its position modulo the trained window, as if the large window were made of
        trained windows), cropping where the window is not a multiple.
        """
        if method not in WINDOW_RESIZE_METHODS:
            raise ValueError(f"window resize method must be one of {WINDOW_RESIZE_METHODS}, got {method!r}")
        old_window = self.win_size
        window, shift = self.clamped_window(win_size, win_size // 2 if self.shifted else 0)
        self.attn.set_window_size(window, method)
        self.win_size, self.shift_size = window, shift
        if self.modulator is None or window == old_window:
            return
        old = self.modulator.weight
        grid = self.modulator_weight(old_window).detach().view(old_window, old_window, -1)
        if method == "centre":
            idx = torch.arange(window, device=old.device) % old_window
            new = grid[idx][:, idx]
        else:
            as_image = grid.float().permute(2, 0, 1).unsqueeze(0)
            new = F.interpolate(as_image, size=(window, window), mode="bicubic", align_corners=False)
            new = new.squeeze(0).permute(1, 2, 0)
        modulator = nn.Embedding(window * window, self.dim, device=old.device, dtype=old.dtype)
        modulator.weight.copy_(new.reshape(window * window, -1).to(old.dtype))
        modulator.weight.requires_grad_(old.requires_grad)
        self.modulator = modulator


class BasicUformerLayer(nn.Module):
    """A stage: ``depth`` LeWin blocks, odd ones shifted when ``shift_flag``."""

    def __init__(
        self, dim, input_resolution, depth, num_heads, win_size, mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
        norm_layer=nn.LayerNorm, token_mlp="leff", shift_flag=True, modulator=False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.blocks = nn.ModuleList(
            LeWinTransformerBlock(
                dim, input_resolution, num_heads, win_size=win_size,
                shift_size=win_size // 2 if shift_flag and i % 2 == 1 else 0, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, norm_layer=norm_layer, token_mlp=token_mlp,
                modulator=modulator,
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor, x_size: tuple[int, int], mask: Tensor | None = None) -> Tensor:
        for blk in self.blocks:
            x = blk(x, x_size, mask)
        return x


# -- resolution changes and projections ----------------------------------------------------------------------
class Downsample(nn.Module):
    """4x4 stride-2 conv on the token grid (official key ``conv.0``)."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channel, out_channel, kernel_size=4, stride=2, padding=1))

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        return stream_op(self.conv, tokens_to_image(x, x_size)).flatten(2).transpose(1, 2)


class Upsample(nn.Module):
    """2x2 stride-2 transposed conv on the token grid (official key ``deconv.0``)."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.deconv = nn.Sequential(nn.ConvTranspose2d(in_channel, out_channel, kernel_size=2, stride=2))

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        return stream_op(self.deconv, tokens_to_image(x, x_size)).flatten(2).transpose(1, 2)


class InputProj(nn.Module):
    """3x3 conv + LeakyReLU, image -> tokens."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, 3, 1, 1), nn.LeakyReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class OutputProj(nn.Module):
    """3x3 conv, tokens -> image."""

    def __init__(self, in_channel: int, out_channel: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channel, out_channel, 3, 1, 1))

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        return stream_op(self.proj, tokens_to_image(x, x_size)).contiguous()


# -- the model -----------------------------------------------------------------------------------------------
class Uformer(RestorationModel):
    """Uformer with the official constructor arguments (``build_model("uformer", **case_kwargs)``).

    Input: (B, dd_in, S, S) float in [0, 1], square, S a multiple of 16 that every stage's window fits (see
    :meth:`check_size`; S a multiple of 128 always works at window 8); output (B, in_chans, S, S) = x + y when
    ``dd_in == 3``, not clamped. :meth:`official_inference` takes any (B, dd_in, H, W) image.
    ``forward(x, mask)`` accepts the official optional (B or 1, 1, h, w) input mask.

    The official ``Uformer`` class has no Args block; the meanings below are read from its code.

    Args:
        img_size (int): The square training patch. Default 256. Stage ``level`` was trained at
            ``img_size / 2**level``; a stage whose training side is at most ``win_size`` attends it as one
            unshifted window (the official build rule). Any square input that fits the windows runs.
        in_chans (int): Channels of the output (the output projection). Default 3.
        dd_in (int): Channels of the input (the input projection). When 3, the network predicts a residual
            and returns ``x + y``; otherwise it returns ``y``. Default 3.
        embed_dim (int): Channels of the first stage; the nine stages have ``embed_dim`` × (1, 2, 4, 8, 16, 16,
            8, 4, 2) (the decoder stages work on [upsampled, skip] concatenations). Default 32.
        depths (sequence of 9 int): LeWin blocks per stage: 4 encoder stages, the bottleneck, 4 decoder stages.
        num_heads (sequence of 9 int): Attention heads per stage; each stage's width must divide by them.
        win_size (int): Window size of the window attention. Default 8.
        mlp_ratio (float): Ratio of the feed-forward hidden dim to the stage's dim. Default 4.
        qkv_bias (bool): If True, add a learnable bias to query, key, value. Default True.
        qk_scale (float | None): Override the default qk scale of head_dim ** -0.5 if set. Default None.
        drop_rate (float): Dropout rate. Default 0. Accepted for the official signature; dropout is left out
            (training only, no parameters).
        attn_drop_rate (float): Attention dropout rate. Default 0. Accepted, left out likewise.
        drop_path_rate (float): Stochastic depth rate. Default 0.1. Accepted, left out likewise.
        norm_layer (type[nn.Module]): Normalization layer; only the official ``nn.LayerNorm``.
        patch_norm (bool): Stored by the official code and never used; recorded in ``official_kwargs``.
        use_checkpoint (bool): Whether to use gradient checkpointing. Accepted and ignored (training only).
        token_projection (str): How tokens become queries, keys and values; only "linear" (every release)
            is supported.
        token_mlp (str): The feed-forward of each block: "leff" (locally-enhanced: Linear, 3x3 depthwise conv,
            Linear), "fastleff" (a full 3x3 conv instead of the depthwise one), "mlp" or "ffn" (Linear, GELU,
            Linear). Default "leff".
        dowsample (type[nn.Module]): The encoder's downsampling (official spelling); only the official
            :class:`Downsample` (4x4 stride-2 conv).
        upsample (type[nn.Module]): The decoder's upsampling; only the official :class:`Upsample` (2x2 stride-2
            transposed conv).
        shift_flag (bool): If True, every second block of a stage attends shifted windows (by ``win_size //
            2``). Default True.
        modulator (bool): If True, each decoder block adds a learnable multi-scale restoration modulator (a
            ``win_size² × dim`` embedding) to its windows before attention. Default False.
        cross_modulator (bool): The official cross-attention modulator; no release uses it, True is refused.
        attn_impl (str): nystra_hub's, keyword only: how every window attends: "softmax" (the official
            computation), "sdpa" (``torch.nn.functional.scaled_dot_product_attention``, exact), "nystra"
            (the PnP-Nystra approximation) or a name registered with
            :func:`nystra_hub.attention.register_attn_impl`. Default "softmax"; ``set_attn_impl`` changes it
            after loading.
        nystra (NystraParams | dict | None): nystra_hub's, keyword only: the Nyström parameters used when
            ``attn_impl="nystra"`` (see :class:`~nystra_hub.attention.NystraParams`); a dict updates
            :attr:`default_nystra` (16 landmarks, 3 iterations, tau 0; see its comment for denoising).
            Default None: that recipe.
    """

    arch = "uformer"
    spec = ArchitectureSpec(
        title="Uformer",
        paper="Uformer: A General U-Shaped Transformer for Image Restoration (Wang et al., CVPR 2022), "
              "arXiv 2106.03106",
        value_range=(0.0, 1.0),
        padding=CentredZeroPadding(),  # to a square multiple of 128: expand2square(x, factor=128) in the test scripts
        # 64 px keeps tile starts on the level-0..3 window grids.
        tile_overlap=64, tiling_refusal=None, tiles_share_padding=False,
        # 2 x 128 px: on the golden Uformer a 300x200 image in 256-px tiles equals the whole image (0.000/255);
        # 128-px tiles are 255/255 off (benchmarks/tile-minimum-golden.json)
        min_tile_multiples=2,
        paper_recipes={
            "deblur": EnlargedWindowRecipe(32, 16, 3, 0.0, "pnp-nystra.md: Uformer-B deblur (w32, m16, 3 "
                                           "iterations, tau 0)"),
            "default": EnlargedWindowRecipe(64, 32, 6, 0.0, "pnp-nystra.md: Uformer-B denoise (w64, m32, 6 "
                                            "iterations, tau 0)"),
        },
        bias_resize="bias table resized (bicubic), modulators resized (bicubic)",
        modulators=True,
        spandrel=True,
        # OpenVINO bfloat16 with the first stage's residual stream in float32: held-out PSNR -0.008 dB, worst image
        # 53.4 dB from float32 on the reference model (benchmarks/openvino-bf16-quality.json)
        cpu_bfloat16_within_budget=True,
    )
    block_types = (LeWinTransformerBlock,)
    # The reference's Uformer recipes (pnp-nystra.md): deblurring 16 landmarks / 3 iterations, denoising
    # 32 / 6, both with tau = 0. 16 / 3 is the default: at the trained window 8 (64 tokens) 32 landmarks would
    # be half the tokens. Denoising at an enlarged window: set_attn_impl("nystra", landmarks=32, iters=6).
    default_nystra = NystraParams(landmarks=16, iters=3, tau=0.0)

    def __init__(
        self, img_size=256, in_chans=3, dd_in=3, embed_dim=32, depths=(2, 2, 2, 2, 2, 2, 2, 2, 2),
        num_heads=(1, 2, 4, 8, 16, 16, 8, 4, 2), win_size=8, mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
        drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1, norm_layer=nn.LayerNorm, patch_norm=True,
        use_checkpoint=False, token_projection="linear", token_mlp="leff", dowsample=Downsample,
        upsample=Upsample, shift_flag=True, modulator=False, cross_modulator=False, *,
        attn_impl: str = "softmax", nystra: NystraParams | dict | None = None,
    ) -> None:
        super().__init__()
        if token_projection != "linear":
            raise NotImplementedError(
                f"token_projection={token_projection!r} is not supported; every Uformer release uses 'linear'"
            )
        if token_mlp not in TOKEN_MLPS:
            raise ValueError(f"token_mlp must be one of {TOKEN_MLPS}, got {token_mlp!r}")
        if cross_modulator:
            raise NotImplementedError("cross_modulator=True is not supported (no Uformer release uses it)")
        if norm_layer is not nn.LayerNorm or dowsample is not Downsample or upsample is not Upsample:
            raise ValueError("norm_layer, dowsample and upsample: only the official defaults are supported")
        if len(depths) != 2 * NUM_STAGES + 1 or len(num_heads) != len(depths):
            raise ValueError(
                f"Uformer has 9 stages (4 encoder, bottleneck, 4 decoder): depths {list(depths)} and "
                f"num_heads {list(num_heads)} must both have 9 entries"
            )
        if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f"img_size must be a positive int (the square training patch), got {img_size!r}")
        if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1:
            raise ValueError(f"win_size must be a positive int, got {win_size!r}")
        # Channels per stage: the encoder doubles them, the decoder works on [upsampled, skip] concatenations.
        dims = [embed_dim * m for m in (1, 2, 4, 8, 16, 16, 8, 4, 2)]
        for i, (dim, heads) in enumerate(zip(dims, num_heads)):
            if dim % heads:
                raise ValueError(f"stage {i} has {dim} channels, not divisible by its {heads} heads")
        self.official_kwargs = dict(
            img_size=img_size, in_chans=in_chans, dd_in=dd_in, embed_dim=embed_dim, depths=list(depths),
            num_heads=list(num_heads), win_size=win_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            qk_scale=qk_scale, patch_norm=patch_norm, token_projection=token_projection, token_mlp=token_mlp,
            shift_flag=shift_flag, modulator=modulator, cross_modulator=cross_modulator,
        )
        self.in_chans = in_chans
        self.dd_in = dd_in
        self.embed_dim = embed_dim
        self.win_size = win_size
        self.reso = img_size
        self.mlp_ratio = mlp_ratio
        self.token_projection = token_projection
        self.token_mlp = token_mlp

        def layer(stage: int, level: int, with_modulator: bool = False) -> BasicUformerLayer:
            res = img_size // 2**level
            return BasicUformerLayer(
                dims[stage], (res, res), depths[stage], num_heads[stage], win_size, mlp_ratio, qkv_bias,
                qk_scale, norm_layer, token_mlp, shift_flag, with_modulator,
            )

        # Registered in the official order (state-dict order matches the official one).
        self.input_proj = InputProj(dd_in, embed_dim)
        self.output_proj = OutputProj(2 * embed_dim, in_chans)
        for i in range(NUM_STAGES):
            setattr(self, f"encoderlayer_{i}", layer(i, i))
            setattr(self, f"dowsample_{i}", Downsample(dims[i], dims[i] * 2))
        self.conv = layer(NUM_STAGES, NUM_STAGES)
        up_in = [embed_dim * 16, embed_dim * 16, embed_dim * 8, embed_dim * 4]
        for i in range(NUM_STAGES):
            setattr(self, f"upsample_{i}", Upsample(up_in[i], embed_dim * 2 ** (3 - i)))
            setattr(self, f"decoderlayer_{i}", layer(NUM_STAGES + 1 + i, NUM_STAGES - 1 - i, modulator))
        self.apply(self._init_weights)
        self._init_attention(attn_impl, nystra)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    # -- structure -------------------------------------------------------------------------------------------
    def stages(self) -> list[tuple[int, BasicUformerLayer]]:
        """(downsampling level, layer) for the 9 stages in forward order."""
        encoders = [(i, getattr(self, f"encoderlayer_{i}")) for i in range(NUM_STAGES)]
        decoders = [(NUM_STAGES - 1 - i, getattr(self, f"decoderlayer_{i}")) for i in range(NUM_STAGES)]
        return [*encoders, (NUM_STAGES, self.conv), *decoders]

    def blocks(self) -> Iterator[tuple[int, LeWinTransformerBlock]]:
        for level, layer in self.stages():
            for blk in layer.blocks:
                yield level, blk

    def window_sizes(self) -> list[int]:
        return [blk.win_size for _, blk in self.blocks()]

    @property
    def pad_multiple(self) -> int:
        """A side that is a multiple of this fits every stage's window (128 for the releases at window 8)."""
        return math.lcm(2**NUM_STAGES, *(blk.win_size * 2**level for level, blk in self.blocks()))

    def reset_constants(self) -> None:
        """Recompute every tensor that is derived, not learned (after meta-device initialisation)."""
        for _, blk in self.blocks():
            blk.attn.reset_position_index()

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Released Uformer checkpoints carry the ``relative_position_index`` buffers: they must be the
        official index (a different one would silently change every output), never trusted blindly."""
        for name, module in self.named_modules():
            if isinstance(module, WindowAttention):
                key = f"{name}.relative_position_index"
                incoming = state.get(key)
                if incoming is not None and incoming.shape == module.relative_position_index.shape:
                    if not torch.equal(incoming.cpu().long(), relative_position_index(module.window_size)):
                        raise CheckpointError(
                            f"{key} is not the relative-position index of a {module.window_size} window; the "
                            f"checkpoint is corrupt or not an official one"
                        )
        return state

    @torch.no_grad()
    def set_window_size(self, window_size: int, method: str = "bicubic", layers: Sequence[int] | None = None) -> None:
        """Run the trained model at another window, e.g. 16 or 32 (the trained one is ``win_size`` at build).
        ``layers`` selects stages by index (0-3 encoder, 4 bottleneck, 5-8 decoder; default: all).

        Every block becomes what the official code builds with this ``win_size`` (the same build rule: a stage
        whose training resolution is at most the window is one unshifted window of that resolution); bias
        tables are resized with ``method`` (see :meth:`TableBiasWindowAttention.set_window_size`), decoder
        modulators with it too (see :meth:`LeWinTransformerBlock.set_window_size`), shift masks follow.
        Parameter shapes change: to go back, reload the checkpoint. Quality at another window must be
        measured, never assumed.
        """
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_size!r}")
        if method not in WINDOW_RESIZE_METHODS:
            raise ValueError(f"window resize method must be one of {WINDOW_RESIZE_METHODS}, got {method!r}")
        stages = len(self.stages())
        if layers is not None and not set(layers) <= set(range(stages)):
            raise ValueError(f"layers must be stage indices in 0..{stages - 1}, got {list(layers)}")
        for stage, blk in self.blocks():
            if layers is None or stage in layers:
                blk.set_window_size(window_size, method)
        if layers is None:
            self.win_size = window_size

    # -- input checks ----------------------------------------------------------------------------------------
    def size_fits(self, side: int) -> bool:
        """True when a side×side input runs through plain :meth:`forward`."""
        if side < 2**NUM_STAGES or side % 2**NUM_STAGES:
            return False
        for level, blk in self.blocks():
            stage_side = side >> level
            if stage_side >= blk.win_size and stage_side % blk.win_size:
                return False
        return True

    def check_size(self, h: int, w: int) -> None:
        hint = "; official_inference() takes any size (it pads to a square, as the official test scripts do)"
        if h != w:
            raise ValueError(f"Uformer's forward needs a square input, got {h}x{w}{hint}")
        if not self.size_fits(h):
            above = next(s for s in range(h + 1, h + self.pad_multiple + 1) if self.size_fits(s))
            below = next((s for s in range(h - 1, 0, -1) if self.size_fits(s)), None)
            nearest = f"{below} or {above}" if below else f"{above}"
            raise ValueError(
                f"Uformer's forward cannot run a {h}x{h} input: the side must be a multiple of 16 (four 2x "
                f"downsamplings) and, at every stage, a multiple of that stage's window or smaller than it "
                f"(any multiple of {self.pad_multiple} works); nearest valid sides: {nearest}{hint}"
            )

    def _check_mask(self, mask: Tensor, x: Tensor) -> None:
        if not isinstance(mask, Tensor) or mask.dim() != 4 or mask.shape[1] != 1:
            shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a (B, 1, H, W) tensor (the official input mask), got {shape}")
        if mask.shape[0] not in (1, x.shape[0]):
            raise ValueError(f"mask batch {mask.shape[0]} must be 1 or the input batch {x.shape[0]}")

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        self.check_input(x, self.dd_in, 2**NUM_STAGES)
        self.check_size(*x.shape[-2:])
        if mask is not None:
            self._check_mask(mask, x)
        size = x.shape[-1]
        y = stream_op(self.input_proj, x)  # starts the residual stream: float32 under float16 autocast
        skips = []
        for i in range(NUM_STAGES):
            y = getattr(self, f"encoderlayer_{i}")(y, (size, size), mask)
            skips.append(y)
            y = getattr(self, f"dowsample_{i}")(y, (size, size))
            size //= 2
        y = self.conv(y, (size, size), mask)
        for i in range(NUM_STAGES):
            y = getattr(self, f"upsample_{i}")(y, (size, size))
            size *= 2
            y = torch.cat([y, skips[NUM_STAGES - 1 - i]], -1)
            y = getattr(self, f"decoderlayer_{i}")(y, (size, size), mask)
        y = self.output_proj(y, (size, size))
        return x + y if self.dd_in == 3 else y

    @property
    def in_channels(self) -> int:
        return self.dd_in

    def float32_residual_stages(self) -> tuple[str, ...]:
        # The first full-resolution stage, whose stream reaches the output through the last skip connection: on
        # the reference model's held-out images bfloat16 then changes PSNR by -0.008 dB instead of -0.012 (outside
        # the budget). The last decoder stage as well gained 0.0005 dB (-0.0078) for more time: on Uformer-B at
        # 256² the float32 additions and their reorders took 18 ms with both stages, 10 with the first alone, 5 with
        # the first on rows (float32_layers.additions_on_rows; benchmarks/ov-layers-uformer-b-256-*.json); the
        # stream in every stage: 27% more time.
        return ("encoderlayer_0",)

    @property
    def official_multiple(self) -> int:
        """128 as the official scripts pad (at another window: the least multiple of 128 that fits it)."""
        return math.lcm(OFFICIAL_PAD_FACTOR, self.pad_multiple)

    @property
    def min_side(self) -> int:
        """The smallest image side :meth:`minimal_pad` accepts: the smallest input the forward runs (16 px after
        four 2x downsamplings); a smaller image would be mostly invented border."""
        return next(s for s in range(2**NUM_STAGES, self.pad_multiple + 1, 2**NUM_STAGES) if self.size_fits(s))

    def minimal_size(self, h: int, w: int) -> tuple[int, int]:
        """The smallest square the forward runs that holds an ``h×w`` image (the forward needs a square whose side
        fits every stage's window, :meth:`check_size`). At window 8 that is 16, 32 or 64 below 128 px and the
        next multiple of 128 above: the official size for images of 128 px or more, less below."""
        side = math.ceil(max(h, w, self.min_side) / 2**NUM_STAGES) * 2**NUM_STAGES
        while not self.size_fits(side):
            side += 2**NUM_STAGES
        return side, side

    def minimal_pad(self, x: Tensor, mode: str = "reflect") -> tuple[Tensor, tuple[int, int]]:
        """The image centred in a square of :meth:`minimal_size`, its borders mirrored (``"reflect"``, repeated
        as often as the padding needs) or repeated (``"replicate"``) outwards instead of the official zeros, so
        the network sees image-like context up to the border. Images with a side under :attr:`min_side` are
        refused. Returns (padded, (top, left))."""
        if mode not in ("reflect", "replicate"):
            raise ValueError(f"mode must be 'reflect' or 'replicate', got {mode!r}")
        h, w = x.shape[-2:]
        if min(h, w) < self.min_side:
            raise ValueError(f"image is {h}x{w}, but Uformer needs at least {self.min_side}x{self.min_side} pixels "
                             f"(four 2x downsamplings); smaller images would be mostly invented border")
        side, _ = self.minimal_size(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        rows = _border_index(h, top, side - h - top, mode, x.device)
        cols = _border_index(w, left, side - w - left, mode, x.device)
        return x.index_select(-2, rows).index_select(-1, cols), (top, left)

    def activation_stages(self) -> list[tuple[int, int, int, int, float]]:
        k = self.official_kwargs
        c, window = int(k["embed_dim"]), max(self.window_sizes())
        levels = [0, 1, 2, 3, 4, 3, 2, 1, 0]
        widths = [c, 2 * c, 4 * c, 8 * c, 16 * c, 16 * c, 8 * c, 4 * c, 2 * c]  # decoder: concatenated width
        return [(lv, w, h, window, float(k.get("mlp_ratio", 4)))
                for lv, w, h in zip(levels, widths, k["num_heads"])]

    # -- checkpoint detection (nystra_hub.io.detect) ---------------------------------------------------------------
    #: keys every Uformer state dict has: how :func:`nystra_hub.detect_checkpoint` recognises one
    detection_keys = ("input_proj.proj.0.weight", "encoderlayer_0.blocks.0.attn.relative_position_bias_table")

    @classmethod
    def infer_kwargs(cls, state_dict: dict[str, Tensor]) -> tuple[dict, list[str]]:
        """The official constructor arguments of a Uformer state dict (official keys, unwrapped), and what its
        tensors leave open: one "argument: why, and what settles it" line each.

        Read from shapes: dd_in and embed_dim (input_proj), in_chans (output_proj), depths (blocks per stage),
        num_heads (bias-table columns), win_size (the modulator's w² rows, else the largest bias table),
        mlp_ratio and token_mlp (the feed-forward's keys), qkv_bias, modulator. img_size shows only where a
        stage was clamped to a window smaller than win_size; shift_flag is never stored.
        """
        stages = [*(f"encoderlayer_{i}" for i in range(NUM_STAGES)), "conv",
                  *(f"decoderlayer_{i}" for i in range(NUM_STAGES))]
        if "encoderlayer_0.blocks.0.attn.qkv.to_q.weight" not in state_dict:
            raise ValueError("not a token_projection='linear' Uformer (no qkv.to_q): the only projection supported")
        embed_dim, dd_in = state_dict["input_proj.proj.0.weight"].shape[:2]
        depths = [count_children(state_dict, f"{stage}.blocks.") for stage in stages]
        tables = [state_dict[f"{stage}.blocks.0.attn.relative_position_bias_table"] for stage in stages]
        windows = [(math.isqrt(t.shape[0]) + 1) // 2 for t in tables]
        modulator = state_dict.get("decoderlayer_0.blocks.0.modulator.weight")
        # The modulator is built for the unclamped window; bias tables only for the window a stage really uses.
        win_size = math.isqrt(modulator.shape[0]) if modulator is not None else max(windows)
        token_mlp, hidden = _infer_token_mlp(state_dict, "encoderlayer_0.blocks.0.mlp.")
        img_size, ambiguities = _infer_img_size(windows, win_size, depths)
        if max(depths) > 1:
            ambiguities.append("shift_flag: not stored in the weights; True assumed (every Uformer release "
                               "shifts its odd blocks); pass shift_flag=False for a model trained without shifts")
        kwargs = dict(
            img_size=img_size, in_chans=int(state_dict["output_proj.proj.0.weight"].shape[0]), dd_in=int(dd_in),
            embed_dim=int(embed_dim), depths=depths, num_heads=[t.shape[1] for t in tables], win_size=win_size,
            mlp_ratio=mlp_ratio_of(hidden, embed_dim), qkv_bias="encoderlayer_0.blocks.0.attn.qkv.to_q.bias" in
            state_dict, token_projection="linear", token_mlp=token_mlp, modulator=modulator is not None,
            shift_flag=True,
        )
        return kwargs, ambiguities


def _infer_token_mlp(state_dict: dict[str, Tensor], prefix: str) -> tuple[str, int]:
    """(token_mlp, hidden width) from a block's feed-forward keys. "mlp" and "ffn" build the same module."""
    dwconv = state_dict.get(f"{prefix}dwconv.0.weight")
    if dwconv is None:
        return "mlp", state_dict[f"{prefix}fc1.weight"].shape[0]
    # LeFF's 3x3 conv is depthwise (one input channel per group); FastLeFF's is a full conv.
    return ("leff" if dwconv.shape[1] == 1 else "fastleff"), dwconv.shape[0]


def _infer_img_size(windows: list[int], win_size: int, depths: list[int]) -> tuple[int, list[str]]:
    """The training patch from the stages clamped to their whole (smaller) resolution, and the ambiguity line when
    no stage was: then 16·win_size (128 at window 8) is assumed, which leaves the bottleneck unshifted."""
    levels = [*range(NUM_STAGES), NUM_STAGES, *reversed(range(NUM_STAGES))]
    clamped = [(level, window) for level, window in zip(levels, windows) if window < win_size]
    if clamped:
        level, window = min(clamped)  # the shallowest clamped stage pins the patch most tightly
        return window << level, []
    img_size = win_size << NUM_STAGES
    if depths[NUM_STAGES] < 2:  # a bottleneck without odd blocks runs the same at every patch size
        effect = "a larger patch would change no output (the bottleneck has no shifted block)"
    else:
        effect = (f"which leaves the bottleneck's odd blocks unshifted, while a patch of {2 * img_size} or more "
                  f"shifts them (the GoPro deblurring release was trained at 256); pass img_size={2 * img_size} "
                  f"for such a model")
    return img_size, [f"img_size: the training patch is not recorded; {img_size} assumed, {effect}"]


def _border_index(size: int, before: int, after: int, mode: str, device: torch.device) -> Tensor:
    """Source indices along one axis of ``size`` samples padded by ``before``/``after``: ``"reflect"`` mirrors
    about the edge samples (period 2·(size − 1), so any amount of padding works), ``"replicate"`` repeats them."""
    index = torch.arange(-before, size + after, device=device)
    if mode == "replicate" or size == 1:
        return index.clamp(0, size - 1)
    period = 2 * (size - 1)
    index = index % period  # floor modulo: non-negative
    return torch.where(index >= size, period - index, index)
