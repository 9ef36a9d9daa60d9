"""SwinIR (Liang et al., 2021), re-implemented on the shared attention core.

Module names, state-dict keys and the forward computation follow the official
``models/network_swinir.py`` (github.com/JingyunLiang/SwinIR), so released checkpoints load strictly and produce
the official outputs. Differences, all without effect on released checkpoints at inference:
- attention goes through :class:`~nystra_hub.attention.WindowAttentionBase` (softmax / sdpa / nystra);
- shifted-window masks come from a process-wide cache instead of being rebuilt per block and forward; the
  ``attn_mask`` buffers stay (they are in every released state dict) and are checked, not trusted, on load;
- dropout and stochastic depth (training-only, no parameters, 0 at inference) are left out;
- ``mean`` is a non-persistent buffer rather than a plain attribute, so ``.to()`` and meta-device init work.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nystra_hub.attention import (
    NystraParams,
    TableBiasWindowAttention,
    merge_tokens,
    partition_tokens,
    shifted_window_mask,
    to_2tuple,
)
from nystra_hub.models.common import (
    ArchitectureSpec,
    EnlargedWindowRecipe,
    FlipPadding,
    RestorationModel,
    count_children,
    gelu_on_fresh_output,
    mlp_ratio_of,
    stream_op,
    tokens_to_image,
)

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class Mlp(nn.Module):
    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(gelu_on_fresh_output(self.fc1(x), self.act))


class WindowAttention(TableBiasWindowAttention):
    """W-MSA with relative position bias: one ``qkv`` Linear(C, 3C) and ``proj``."""

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_impl="softmax", nystra=None):
        head_dim = dim // num_heads
        super().__init__(window_size, num_heads, qk_scale or head_dim**-0.5, attn_impl, nystra)
        self.dim = dim
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask=None) -> Tensor:
        b_, n, c = x.shape
        qkv = self.qkv(x).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = self.attend(qkv[0], qkv[1], qkv[2], mask)
        return self.proj(out.transpose(1, 2).reshape(b_, n, c))


def _official_shift_mask(resolution: tuple[int, int], window: int, shift: int) -> Tensor:
    return shifted_window_mask(*resolution, (window, window), (shift, shift)).additive.clone()


class SwinTransformerBlock(nn.Module):
    def __init__(
        self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.0, qkv_bias=True,
        qk_scale=None, norm_layer=nn.LayerNorm,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mlp_ratio = mlp_ratio
        if min(self.input_resolution) <= self.window_size:
            # Official: a training patch no larger than the window means one unshifted window.
            self.shift_size = 0
            self.window_size = min(self.input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f"shift_size {self.shift_size} must be in [0, window_size {self.window_size})")
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, to_2tuple(self.window_size), num_heads, qkv_bias, qk_scale)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        attn_mask = None
        if self.shift_size > 0:
            attn_mask = _official_shift_mask(self.input_resolution, self.window_size, self.shift_size)
        # Kept for state-dict compatibility only; forward uses the cached mask for the actual size.
        self.register_buffer("attn_mask", attn_mask)

    def reset_attn_mask(self) -> None:
        """Recompute the buffer (meta-device initialisation leaves garbage in it)."""
        if self.attn_mask is not None:
            mask = _official_shift_mask(self.input_resolution, self.window_size, self.shift_size)
            self.attn_mask.copy_(mask.to(self.attn_mask.device))

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        window = (self.window_size, self.window_size)
        shift = (self.shift_size, self.shift_size)
        mask = shifted_window_mask(h, w, window, shift, x.device) if self.shift_size > 0 else None
        # Official: roll by -shift, partition, attend, reverse, roll back; here the rolls ride on the cached
        # partition gathers.
        attn_windows = self.attn(partition_tokens(self.norm1(x), h, w, window, shift), mask=mask)
        x = x + merge_tokens(attn_windows, h, w, window, shift)
        return x + self.mlp(self.norm2(x))

    @torch.no_grad()
    def set_window_size(self, window_size: int, method: str = "bicubic") -> None:
        shifted = self.shift_size > 0
        self.attn.set_window_size(window_size, method)
        self.window_size = window_size
        self.shift_size = window_size // 2 if shifted else 0
        # The training-patch mask buffer has no meaning at another window; it leaves the state dict.
        self.attn_mask = None


def is_official_shift_mask(mask: Tensor, window: int, shift: int) -> bool:
    """True when ``mask`` is the official SwinIR mask for some square training patch."""
    if mask.dim() != 3 or mask.shape[1:] != (window * window, window * window) or shift <= 0:
        return False
    per_side = math.isqrt(mask.shape[0])
    if per_side * per_side != mask.shape[0]:
        return False
    expected = _official_shift_mask((per_side * window, per_side * window), window, shift)
    return torch.equal(mask.detach().cpu().float(), expected)


class BasicLayer(nn.Module):
    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, norm_layer=nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.depth = depth
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(
                dim=dim, input_resolution=input_resolution, num_heads=num_heads, window_size=window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, norm_layer=norm_layer,
            )
            for i in range(depth)
        )

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        for blk in self.blocks:
            x = blk(x, x_size)
        return x


def _resi_conv(dim: int, resi_connection: str) -> nn.Module:
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1),
        )
    raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> (B, HW, C) with optional norm (official name; patch_size 1 in every release)."""

    def __init__(self, embed_dim: int, norm_layer=None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class PatchUnEmbed(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        return tokens_to_image(x, x_size)


class RSTB(nn.Module):
    """Residual Swin Transformer Block."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, norm_layer=nn.LayerNorm, resi_connection="1conv") -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.residual_group = BasicLayer(dim, input_resolution, depth, num_heads, window_size, mlp_ratio,
                                         qkv_bias, qk_scale, norm_layer)
        self.conv = _resi_conv(dim, resi_connection)
        self.patch_embed = PatchEmbed(dim)
        self.patch_unembed = PatchUnEmbed(dim)

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        # x first: the sum takes the layout of the first operand, and patch_embed's output is a transposed view;
        # the other order leaves the residual stream transposed and every LayerNorm after it copies it.
        return x + self.patch_embed(stream_op(self.conv, self.patch_unembed(self.residual_group(x, x_size), x_size)))


class Upsample(nn.Sequential):
    def __init__(self, scale: int, num_feat: int) -> None:
        m: list[nn.Module] = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"scale {scale} is not supported; supported scales: 2^n and 3")
        super().__init__(*m)


class UpsampleOneStep(nn.Sequential):
    def __init__(self, scale: int, num_feat: int, num_out_ch: int) -> None:
        super().__init__(nn.Conv2d(num_feat, scale**2 * num_out_ch, 3, 1, 1), nn.PixelShuffle(scale))


UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv", "")


class SwinIR(RestorationModel):
    """SwinIR with the official constructor arguments (``build_model("swinir", **case_kwargs)``).

    Input: (B, in_chans, H, W) float in [0, 1]; output (B, in_chans, H·upscale, W·upscale), not clamped (the
    official test script clamps; :func:`nystra_hub.restore` does).

    Args:
        img_size (int | tuple[int, int]): Input image size: the training patch. Default 64. It sets the shape of
            the ``attn_mask`` buffers of released state dicts and of the absolute position embedding (``ape``);
            any input size runs.
        patch_size (int): Patch size. Default 1, the only value the releases use (others are refused).
        in_chans (int): Number of input image channels, also the output's: 3 (RGB) or 1 (gray). Default 3.
        embed_dim (int): Patch embedding dimension, the width of every stage. Default 96.
        depths (sequence of int): Depth of each Swin Transformer layer (blocks per residual group, RSTB).
        num_heads (sequence of int): Number of attention heads in each layer; as long as ``depths``.
        window_size (int): Window size. Default 7 (the releases use 8, and 7 for JPEG artifact removal).
        mlp_ratio (float): Ratio of MLP hidden dim to embedding dim. Default 4.
        qkv_bias (bool): If True, add a learnable bias to query, key, value. Default True.
        qk_scale (float | None): Override the default qk scale of head_dim ** -0.5 if set. Default None.
        drop_rate (float): Dropout rate. Default 0. Accepted for the official signature; dropout is left out
            (training only, no parameters).
        attn_drop_rate (float): Attention dropout rate. Default 0. Accepted, left out likewise.
        drop_path_rate (float): Stochastic depth rate. Default 0.1. Accepted, left out likewise.
        norm_layer (type[nn.Module]): Normalization layer. Default ``nn.LayerNorm``.
        ape (bool): If True, add absolute position embedding to the patch embedding. Default False.
        patch_norm (bool): If True, add normalization after patch embedding. Default True.
        use_checkpoint (bool): Whether to use gradient checkpointing to save memory. Default False. Accepted
            for the official signature and ignored.
        upscale (int): Upscale factor: 2/3/4/8 for image SR, 1 for denoising and compression artifact
            reduction. Default 2.
        img_range (float): Image range: the [0, 1] input (minus the DIV2K mean for RGB) is multiplied by it
            before the network and the output divided by it. 1. or 255. Default 1.
        upsampler (str): The reconstruction module: "pixelshuffle" (classical SR), "pixelshuffledirect"
            (lightweight SR: one conv and one pixel shuffle), "nearest+conv" (real-world SR; x2, x4 or x8
            here, x4 only in the official code) or "" (denoising and JPEG artifact removal, ``upscale=1``).
            Default "".
        resi_connection (str): The convolutional block before the residual connection: "1conv" or "3conv"
            (3 convs with a 4x narrower middle, to save parameters and memory). Default "1conv".
        attn_impl (str): nystra_hub's, keyword only: how every window attends: "softmax" (the official
            computation), "sdpa" (``torch.nn.functional.scaled_dot_product_attention``, exact), "nystra"
            (the PnP-Nystra approximation) or a name registered with
            :func:`nystra_hub.attention.register_attn_impl`. Default "softmax"; ``set_attn_impl`` changes it
            after loading.
        nystra (NystraParams | dict | None): nystra_hub's, keyword only: the Nyström parameters used when
            ``attn_impl="nystra"`` (landmarks, iters, tau, bias, mask; see
            :class:`~nystra_hub.attention.NystraParams`); a dict updates :attr:`default_nystra`, the reference's
            SwinIR recipe (16 landmarks, 2 iterations, tau 5). Default None: that recipe.
    """

    arch = "swinir"
    spec = ArchitectureSpec(
        title="SwinIR",
        paper="SwinIR: Image Restoration Using Swin Transformer (Liang et al., ICCVW 2021), arXiv 2108.10257",
        value_range=(0.0, 1.0),
        padding=FlipPadding(),  # to the next multiple of the window, as main_test_swinir.py
        # 48 px: on the golden x2 model (256² crop, tile 128) the largest tiled-vs-whole difference is 0.013 at
        # the official script's overlap 32, 0.0011 at 48 and 3e-5 at 64.
        tile_overlap=48, tiling_refusal=None, tiles_share_padding=True,
        # 12 windows (96 px at window 8): on the five golden SwinIR models (attention and bias perturbed to
        # matter) a 300x200 image in tiles of 12 windows is at most 0.30/255 from the whole image; 8 windows
        # (64 px) is up to 6.8/255, 2 windows 255/255 (benchmarks/tile-minimum-golden.json)
        min_tile_multiples=12,
        paper_recipes={"default": EnlargedWindowRecipe(
            32, 16, 2, 5.0, "pnp-nystra.md: SwinIR classical SR (w32, m16, 2 iterations, tau 5)")},
        bias_resize="bias table resized (bicubic)",
        spandrel=True,
        # OpenVINO bfloat16 with the float32 tail: held-out PSNR -0.008 dB (x2) and -0.003 dB (denoising), worst
        # image 52.8 dB from float32 on the two reference models (benchmarks/openvino-bf16-quality.json)
        cpu_bfloat16_within_budget=True,
    )
    block_types = (SwinTransformerBlock,)
    default_nystra = NystraParams(landmarks=16, iters=2, tau=5.0)  # the reference's SwinIR recipe

    def __init__(
        self, img_size=64, patch_size=1, in_chans=3, embed_dim=96, depths=(6, 6, 6, 6), num_heads=(6, 6, 6, 6),
        window_size=7, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
        drop_path_rate=0.1, norm_layer=nn.LayerNorm, ape=False, patch_norm=True, use_checkpoint=False, upscale=2,
        img_range=1.0, upsampler="", resi_connection="1conv", *, attn_impl: str = "softmax",
        nystra: NystraParams | dict | None = None,
    ) -> None:
        super().__init__()
        if patch_size != 1:
            raise ValueError("SwinIR releases use patch_size=1; other patch sizes are not supported")
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if upsampler == "nearest+conv" and upscale not in (2, 4, 8):
            raise ValueError(f"nearest+conv supports upscale 2, 4 or 8, got {upscale}")
        if upsampler == "" and upscale != 1:
            raise ValueError(f"upsampler '' (denoising / JPEG) needs upscale=1, got {upscale}")
        img_size = to_2tuple(img_size)
        self.official_kwargs = dict(
            img_size=img_size[0] if img_size[0] == img_size[1] else list(img_size), patch_size=patch_size,
            in_chans=in_chans, embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads),
            window_size=window_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, ape=ape,
            patch_norm=patch_norm, upscale=upscale, img_range=img_range, upsampler=upsampler,
            resi_connection=resi_connection,
        )
        num_feat = 64
        self.in_chans = in_chans
        self.img_range = img_range
        mean = DIV2K_RGB_MEAN if in_chans == 3 else (0.0,)
        self.register_buffer("mean", torch.tensor(mean).view(1, len(mean), 1, 1), persistent=False)
        self.upscale = upscale
        self.upsampler = upsampler
        self.window_size = window_size
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.num_features = embed_dim
        self.mlp_ratio = mlp_ratio
        self.patch_embed = PatchEmbed(embed_dim, norm_layer if patch_norm else None)
        self.patches_resolution = list(img_size)
        self.patch_unembed = PatchUnEmbed(embed_dim)
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, img_size[0] * img_size[1], embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.layers = nn.ModuleList(
            RSTB(embed_dim, tuple(img_size), depths[i], num_heads[i], window_size, mlp_ratio, qkv_bias, qk_scale,
                 norm_layer, resi_connection)
            for i in range(self.num_layers)
        )
        self.norm = norm_layer(self.num_features)
        self.conv_after_body = _resi_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffle":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.upsample = Upsample(upscale, num_feat)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        elif upsampler == "pixelshuffledirect":
            self.upsample = UpsampleOneStep(upscale, embed_dim, in_chans)
        elif upsampler == "nearest+conv":
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            if upscale >= 4:
                self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            if upscale == 8:
                self.conv_up3 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
            self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)
        else:
            self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)
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

    def reset_constants(self) -> None:
        """Recompute every tensor that is derived, not learned (after meta-device initialisation)."""
        with torch.no_grad():
            mean = DIV2K_RGB_MEAN if self.in_chans == 3 else (0.0,)
            self.mean.copy_(torch.tensor(mean, device=self.mean.device).view(1, len(mean), 1, 1))
            for layer in self.layers:
                for blk in layer.residual_group.blocks:
                    blk.attn.reset_position_index()
                    blk.reset_attn_mask()

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Accept ``attn_mask`` buffers saved for another training patch (48, 64, 126, 128...) when each is
        exactly the official mask of its patch; every other key stays under the strict check."""
        state = dict(state)
        for name, buffer in self.named_buffers():
            incoming = state.get(name)
            if (name.endswith(".attn_mask") and incoming is not None and incoming.shape != buffer.shape):
                block = self.get_submodule(name.rsplit(".", 1)[0])
                if is_official_shift_mask(incoming, block.window_size, block.shift_size):
                    state[name] = buffer.detach().clone()
        return state

    # -- windows -------------------------------------------------------------------------------------------------
    def window_sizes(self) -> list[int]:
        return [blk.window_size for layer in self.layers for blk in layer.residual_group.blocks]

    @property
    def pad_multiple(self) -> int:
        return math.lcm(*self.window_sizes())

    @torch.no_grad()
    def set_window_size(self, window_size: int, method: str = "bicubic", layers: list[int] | None = None) -> None:
        """Run at another window (the trained one is ``window_size`` at build): bias tables resized with
        ``method`` (see :meth:`TableBiasWindowAttention.set_window_size`), masks rebuilt. ``layers`` selects RSTB
        indices (default: all)."""
        for i, layer in enumerate(self.layers):
            if layers is None or i in layers:
                for blk in layer.residual_group.blocks:
                    blk.set_window_size(window_size, method)

    @property
    def scale(self) -> int:
        return self.upscale

    def float32_tail(self) -> str:
        # From the last RSTB's convolution on (its residual add, the final norm, conv_after_body, the long skip, the
        # upsampler), the convolutions themselves in bfloat16: about 2% of the graph's operations, no slower
        # (SwinIR-M x2 128²: 744 against 761 ms without a tail; 825 with the convolutions in float32), held-out
        # PSNR change of the x2 reference model -0.012 -> -0.008 dB (benchmarks/openvino-bf16-quality.json)
        return f"layers.{len(self.layers) - 1}.conv"

    @property
    def official_multiple(self) -> int:
        return self.pad_multiple

    def activation_stages(self) -> list[tuple[int, int, int, int, float]]:
        k = self.official_kwargs
        return [(0, int(k["embed_dim"]), max(k["num_heads"]), max(self.window_sizes()),
                 float(k.get("mlp_ratio", 2)))]

    @property
    def high_res_width(self) -> int:
        return 64 if self.upsampler in ("pixelshuffle", "nearest+conv") else self.in_chans

    # -- forward ---------------------------------------------------------------------------------------------------
    def check_image_size(self, x: Tensor) -> Tensor:
        _, _, h, w = x.size()
        multiple = self.pad_multiple
        mod_pad_h = (multiple - h % multiple) % multiple
        mod_pad_w = (multiple - w % multiple) % multiple
        return F.pad(x, (0, mod_pad_w, 0, mod_pad_h), "reflect")

    def forward_features(self, x: Tensor) -> Tensor:
        x_size = (x.shape[2], x.shape[3])
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        for layer in self.layers:
            x = layer(x, x_size)
        x = self.norm(x)
        return self.patch_unembed(x, x_size)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x, self.in_chans, self.pad_multiple)
        h, w = x.shape[2:]
        x = self.check_image_size(x)
        # no cast when the dtypes agree: torch 2.11's ONNX exporter names a no-op cast of a buffer wrongly
        mean = self.mean if self.mean.dtype == x.dtype else self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        # conv_first starts the residual stream: float32 under float16 autocast (see stream_op).
        first = stream_op(self.conv_first, x)
        if self.upsampler == "pixelshuffle":
            x = self.conv_after_body(self.forward_features(first)) + first
            x = self.conv_before_upsample(x)
            x = self.conv_last(self.upsample(x))
        elif self.upsampler == "pixelshuffledirect":
            x = self.conv_after_body(self.forward_features(first)) + first
            x = self.upsample(x)
        elif self.upsampler == "nearest+conv":
            x = self.conv_after_body(self.forward_features(first)) + first
            x = self.conv_before_upsample(x)
            x = self.lrelu(self.conv_up1(F.interpolate(x, scale_factor=2, mode="nearest")))
            if self.upscale >= 4:
                x = self.lrelu(self.conv_up2(F.interpolate(x, scale_factor=2, mode="nearest")))
            if self.upscale == 8:
                x = self.lrelu(self.conv_up3(F.interpolate(x, scale_factor=2, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        else:
            res = self.conv_after_body(self.forward_features(first)) + first
            x = x + self.conv_last(res)
        x = x / self.img_range + mean
        return x[:, :, : h * self.upscale, : w * self.upscale]

    # -- checkpoint detection (nystra_hub.io.detect) -----------------------------------------------------------------
    #: keys every SwinIR state dict has: how :func:`nystra_hub.detect_checkpoint` recognises one
    detection_keys = ("conv_first.weight", "layers.0.residual_group.blocks.0.attn.relative_position_bias_table")

    @classmethod
    def infer_kwargs(cls, state_dict: dict[str, Tensor]) -> tuple[dict, list[str]]:
        """The official constructor arguments of a SwinIR state dict (official keys, unwrapped), and what its
        tensors leave open: one "argument: why, and what settles it" line each.

        Read from shapes: in_chans, embed_dim (conv_first), depths (blocks per layer), num_heads (bias-table
        columns), window_size (bias-table rows, (2w − 1)²), mlp_ratio (fc1 rows / embed_dim), qkv_bias, ape,
        patch_norm, resi_connection (3conv has conv_after_body.4), upsampler and upscale (which tail keys exist).
        img_size comes from the ``attn_mask`` buffers ((img_size / window)² windows). img_range is never stored.
        """
        block = "layers.0.residual_group.blocks.0."
        embed_dim, in_chans = state_dict["conv_first.weight"].shape[:2]
        num_layers = count_children(state_dict, "layers.")
        depths = [count_children(state_dict, f"layers.{i}.residual_group.blocks.") for i in range(num_layers)]
        tables = [state_dict[f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table"]
                  for i in range(num_layers)]
        window_size = (math.isqrt(tables[0].shape[0]) + 1) // 2
        upsampler, upscale = _infer_upsampler(state_dict, in_chans)
        img_size, ambiguities = _infer_img_size(state_dict, window_size, depths)
        img_range, why = _guess_img_range(window_size, upscale)
        ambiguities.append(f"img_range: not stored in the weights; {img_range} assumed ({why}); pass "
                           f"img_range={255.0 if img_range == 1.0 else 1.0} for a model trained on the other range")
        kwargs = dict(
            upscale=upscale, in_chans=int(in_chans), img_size=img_size, window_size=window_size,
            img_range=img_range, depths=depths, embed_dim=int(embed_dim), num_heads=[t.shape[1] for t in tables],
            mlp_ratio=mlp_ratio_of(state_dict[f"{block}mlp.fc1.weight"].shape[0], embed_dim),
            upsampler=upsampler, qkv_bias=f"{block}attn.qkv.bias" in state_dict,
            ape="absolute_pos_embed" in state_dict, patch_norm="patch_embed.norm.weight" in state_dict,
            resi_connection="3conv" if "conv_after_body.4.weight" in state_dict else "1conv",
        )
        return kwargs, ambiguities


def _infer_upsampler(state_dict: dict[str, Tensor], in_chans: int) -> tuple[str, int]:
    """(upsampler, upscale) from the keys of the official reconstruction tails."""
    if "conv_up1.weight" in state_dict:  # nearest+conv: one conv per 2x step
        return "nearest+conv", 2 ** sum(f"conv_up{i}.weight" in state_dict for i in (1, 2, 3))
    if "conv_before_upsample.0.weight" in state_dict:  # pixelshuffle: a 4·64 conv per 2x step, one 9·64 conv for 3x
        convs = [v for k, v in state_dict.items() if k.startswith("upsample.") and k.endswith(".weight")]
        num_feat = state_dict["conv_before_upsample.0.weight"].shape[0]
        if len(convs) == 1 and convs[0].shape[0] == 9 * num_feat:
            return "pixelshuffle", 3
        return "pixelshuffle", 2 ** len(convs)
    if "upsample.0.weight" in state_dict:  # pixelshuffledirect: one conv to scale² · in_chans channels
        return "pixelshuffledirect", math.isqrt(state_dict["upsample.0.weight"].shape[0] // in_chans)
    return "", 1


def _infer_img_size(state_dict: dict[str, Tensor], window_size: int, depths: list[int]) -> tuple[int, list[str]]:
    """The training patch, and the ambiguity line when the tensors do not record it."""
    if "absolute_pos_embed" in state_dict:  # (1, img_size², C)
        return math.isqrt(state_dict["absolute_pos_embed"].shape[1]), []
    masks = [v for k, v in state_dict.items() if k.endswith(".attn_mask")]
    if masks:  # (number of windows, N, N) over the square training patch
        return math.isqrt(masks[0].shape[0]) * window_size, []
    if max(depths) > 1:
        # Odd blocks without a mask: the patch was no larger than the window, so every block was built as one
        # unshifted window of the patch's size, which is the window the bias tables record.
        return window_size, []
    return 64, ["img_size: not recorded (no shifted block keeps an attn_mask); 64 assumed, which changes no "
                "output; pass img_size=N to name the training patch"]


def _guess_img_range(window_size: int, upscale: int) -> tuple[float, str]:
    """img_range and the evidence for it: window 7 without upscaling is the JPEG artifact-reduction release
    (006_CAR / 006_colorCAR, trained on [0, 255]); every other release works on [0, 1]."""
    if window_size == 7 and upscale == 1:
        return 255.0, "window 7 without upscaling is the JPEG artifact-reduction configuration"
    return 1.0, "every SwinIR release except JPEG artifact reduction"
