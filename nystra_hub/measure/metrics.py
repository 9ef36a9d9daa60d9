"""PSNR and SSIM under the official evaluation protocols of the three architectures (:data:`PROTOCOLS`).

- ``swinir-sr`` (SwinIR ``main_test_swinir.py`` for classical/lightweight SR): output clamped, rounded to 8 bits,
  PSNR and SSIM on the Y channel of YCbCr (ITU-R BT.601, Y in [16, 235]) after cropping ``scale`` pixels at
  every border;
- ``rgb-uint8`` (SwinIR/KAIR color Gaussian denoising): rounded to 8 bits, PSNR/SSIM on RGB, no border;
- ``dehazeformer`` (DehazeFormer ``test.py``): float RGB in [0, 1], PSNR = 10·log10(1/MSE), SSIM on images
  average-pooled by max(1, round(min(H, W)/256)) (pytorch_msssim's Gaussian SSIM, data range 1).

SSIM is the standard Gaussian-window SSIM (Wang et al. 2004): 11×11 window, σ = 1.5, K1 = 0.01, K2 = 0.03,
'valid' filtering, averaged over the map and the channels, as SwinIR's ``calculate_ssim`` and pytorch_msssim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Y_WEIGHTS = (65.481, 128.553, 24.966)  # BT.601 on [0, 1] RGB, the MATLAB rgb2ycbcr / basicsr convention


def quantise(x01: Tensor) -> Tensor:
    """[0, 1] float → float64 in [0, 255] rounded to integers (the official scripts save/score 8-bit images)."""
    return (x01.detach().double().clamp(0, 1) * 255.0).round()


def rgb_to_y(rgb255: Tensor) -> Tensor:
    """(..., 3, H, W) RGB in [0, 255] → (..., 1, H, W) Y in [16, 235] (not rounded), as SwinIR's to_y_channel."""
    w = torch.tensor(Y_WEIGHTS, dtype=rgb255.dtype, device=rgb255.device).view(3, 1, 1)
    return ((rgb255 / 255.0) * w).sum(dim=-3, keepdim=True) + 16.0


def crop_border(x: Tensor, border: int) -> Tensor:
    return x[..., border:-border, border:-border] if border > 0 else x


def psnr(a: Tensor, b: Tensor, data_range: float = 255.0) -> float:
    """PSNR in dB of two equally shaped images (inf when identical)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> Tensor:
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: Tensor, b: Tensor, data_range: float = 255.0, size: int = 11, sigma: float = 1.5) -> float:
    """Mean Gaussian-window SSIM of (C, H, W) or (H, W) images ('valid' filtering, channels averaged)."""
    a, b = a.double(), b.double()
    if a.dim() == 2:
        a, b = a[None], b[None]
    if min(a.shape[-2:]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size}, got {tuple(a.shape[-2:])}")
    c = a.shape[0]
    window = gaussian_window(size, sigma).to(a.device).expand(c, 1, size, size)
    filt = lambda x: F.conv2d(x[None], window, groups=c)[0]  # noqa: E731
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())


@dataclass(frozen=True)
class Protocol:
    name: str
    channel: str  # "y" or "rgb"
    quantised: bool  # rounded to 8 bits and scored on [0, 255]
    border: str  # "scale" or "0"
    source: str
    ssim_downsample: bool = False  # DehazeFormer: SSIM on images average-pooled to ~256 px

    def prepare(self, x01: Tensor, scale: int) -> Tensor:
        x = quantise(x01) if self.quantised else x01.detach().double().clamp(0, 1)
        if self.channel == "y":
            x = rgb_to_y(x if self.quantised else x * 255.0)
        return crop_border(x, scale if self.border == "scale" else 0)

    @property
    def data_range(self) -> float:
        return 255.0 if self.quantised or self.channel == "y" else 1.0

    def describe(self, scale: int = 1) -> dict:
        return {
            "name": self.name,
            "channel": "Y of YCbCr (BT.601, [16, 235])" if self.channel == "y" else "RGB",
            "quantisation": "8-bit (rounded)" if self.quantised else "none (float, clamped to [0, 1])",
            "border_crop": scale if self.border == "scale" else 0,
            "ssim": "Gaussian 11x11, sigma 1.5, K=(0.01, 0.03), valid, mean over channels"
                    + ("; on images average-pooled by max(1, round(min(H,W)/256))" if self.ssim_downsample else ""),
            "source": self.source,
        }


PROTOCOLS: dict[str, Protocol] = {
    "swinir-sr": Protocol("swinir-sr", "y", True, "scale",
                          "SwinIR main_test_swinir.py (classical/lightweight SR: test_y_channel, border=scale)"),
    "rgb-uint8": Protocol("rgb-uint8", "rgb", True, "0", "SwinIR/KAIR color denoising (RGB, 8-bit, no border)"),
    "dehazeformer": Protocol("dehazeformer", "rgb", False, "0",
                             "DehazeFormer test.py (float RGB in [0,1], SSIM on ~256-px pooled images)",
                             ssim_downsample=True),
}


def score(out01: Tensor, ref01: Tensor, protocol: Protocol | str, scale: int = 1) -> dict:
    """PSNR and SSIM of a (C, H, W) [0, 1] image against a reference under ``protocol``.

    ``ref01`` may be larger than ``out01`` by the model's crop (SR ground truth is modcropped to the output)."""
    if isinstance(protocol, str):
        protocol = PROTOCOLS[protocol]
    if out01.dim() == 4:
        out01, ref01 = out01[0], ref01[0]
    h, w = out01.shape[-2:]
    ref01 = ref01[..., :h, :w]
    a, b = protocol.prepare(out01, scale), protocol.prepare(ref01, scale)
    value = psnr(a, b, protocol.data_range)
    if protocol.ssim_downsample:
        ratio = max(1, round(min(a.shape[-2:]) / 256))
        size = (int(a.shape[-2] / ratio), int(a.shape[-1] / ratio))
        sa, sb = F.adaptive_avg_pool2d(a[None], size)[0], F.adaptive_avg_pool2d(b[None], size)[0]
    else:
        sa, sb = a, b
    return {"psnr": value, "ssim": ssim(sa, sb, protocol.data_range)}
