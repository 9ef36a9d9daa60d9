"""The shared test images and the degradations that turn them into (input, ground truth) pairs.

Images come from the test-image root (``../shared/testsets`` next to the repository, ``$NYSTRA_HUB_TESTSETS`` or
an explicit path). A :class:`Task` is one degradation (bicubic SR, Gaussian noise, synthetic haze) with the
evaluation protocol it is scored under (:data:`nystra_hub.measure.metrics.PROTOCOLS`); its held-out pairs are
deterministic, so every measurement sees the same inputs.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from nystra_hub.io.images import to_float_batch
from nystra_hub.measure.environment import REPO_ROOT

DEFAULT_TESTSETS = REPO_ROOT.parent / "shared" / "testsets"
NOISE_SEED = 0  # the usual test protocol: numpy.random.seed(0) before drawing the noise of each image


def testsets_root(path: str | os.PathLike | None = None) -> Path:
    """The test-image root: ``path``, else $NYSTRA_HUB_TESTSETS, else ``../shared/testsets`` of the repo."""
    root = Path(path or os.environ.get("NYSTRA_HUB_TESTSETS") or DEFAULT_TESTSETS)
    if not root.is_dir():
        raise FileNotFoundError(f"test images not found at {root} (pass --testsets or set NYSTRA_HUB_TESTSETS)")
    return root


def list_images(set_name: str, root: str | os.PathLike | None = None) -> list[str]:
    """Image names relative to the testsets root (``Set5/HR/baby.png``), sorted. Set5 lists its HR images."""
    base = testsets_root(root)
    folder = base / set_name / "HR" if (base / set_name / "HR").is_dir() else base / set_name
    if not folder.is_dir():
        raise FileNotFoundError(f"no test set {set_name!r} under {base}")
    names = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif"))
    return [str(p.relative_to(base)) for p in names]


def load_rgb(name: str, root: str | os.PathLike | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB (gray images are replicated to 3 channels)."""
    with Image.open(testsets_root(root) / name) as image:
        return np.asarray(image.convert("RGB")).copy()


def to_tensor(image: np.ndarray) -> Tensor:
    """(H, W, C) uint8 or float → (C, H, W) float32 (uint8 divided by 255), through the package's one converter;
    float data is taken as it is, unchecked for range: the test protocol's noisy inputs are not clipped."""
    return to_float_batch(image, check_range=False)[0][0]


# -- degradations ------------------------------------------------------------------------------------------------
def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def bicubic_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) → uint8 at (width, height) with PIL's bicubic (antialiased when reducing, like MATLAB)."""
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    hr = modcrop(hr, scale)
    return bicubic_resize(hr, (hr.shape[1] // scale, hr.shape[0] // scale))


def gaussian_noise_input(clean: np.ndarray, sigma: float, seed: int = NOISE_SEED) -> np.ndarray:
    """The test protocol's noisy input: clean/255 + N(0, σ/255) drawn after numpy.random.seed(seed), not clipped.
    Returns float32 (H, W, 3)."""
    np.random.seed(seed)
    noisy = clean.astype(np.float64) / 255.0 + np.random.normal(0, sigma / 255.0, clean.shape)
    return noisy.astype(np.float32)


HAZE_BETA = (0.8, 2.0)
HAZE_AIRLIGHT = (0.7, 1.0)
HAZE_AIRLIGHT_TINT = 0.03
HAZE_DEPTH_GRID = 4


def synthetic_haze(clean: Tensor, generator: torch.Generator) -> tuple[Tensor, dict]:
    """Atmospheric scattering I = J·t + A·(1 − t), t = exp(−β·d), on (C, H, W) clean images in [0, 1].

    Depth d ∈ [0, 1]: the min-max normalised sum of a smooth random field (a 4×4 grid of U(0, 1) values,
    bicubically upsampled to the image, corners aligned) and a vertical ramp of random weight U(0, 1) (far at the
    top, as in outdoor scenes); β ~ U(0.8, 2.0) (so t ≥ e^−2 ≈ 0.14); airlight A ~ U(0.7, 1.0) per image plus
    U(−0.03, 0.03) per channel. Everything is drawn from ``generator``.
    """
    c, h, w = clean.shape

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(shape or (1,), generator=generator, dtype=torch.float64)

    grid = uniform(0, 1, 1, 1, HAZE_DEPTH_GRID, HAZE_DEPTH_GRID)
    field_ = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)[0, 0]
    ramp = torch.linspace(1.0, 0.0, h, dtype=torch.float64)[:, None].expand(h, w)
    depth = field_ + uniform(0, 1).item() * ramp
    depth = (depth - depth.min()) / (depth.max() - depth.min()).clamp_min(1e-12)
    beta = uniform(*HAZE_BETA).item()
    airlight = uniform(*HAZE_AIRLIGHT).item() + uniform(-HAZE_AIRLIGHT_TINT, HAZE_AIRLIGHT_TINT, c)
    transmission = torch.exp(-beta * depth)
    hazy = clean.double() * transmission + airlight.view(c, 1, 1) * (1 - transmission)
    return hazy.to(clean.dtype), {"beta": beta, "airlight": [round(a, 4) for a in airlight.tolist()]}


def heldout_seed(name: str) -> int:
    """A per-image seed for held-out synthetic degradations (stable across runs and platforms)."""
    return zlib.crc32(name.encode())


# -- tasks -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Task:
    """A degradation: how training pairs and held-out (input, ground truth) pairs are made, and how scored."""

    name: str  # "sr", "denoise", "dehaze"
    scale: int = 1
    sigma: float = 0.0
    protocol: str = "rgb-uint8"  # see nystra_hub.measure.metrics.PROTOCOLS
    description: str = ""

    def heldout_pair(self, name: str, root=None) -> tuple[Tensor, Tensor, dict]:
        """(input (C, h, w) float, ground truth (C, H, W) float in [0, 1], info) for a held-out image."""
        clean = load_rgb(name, root)
        if self.name == "sr":
            hr = modcrop(clean, self.scale)
            lr_file = _set5_lr_file(name, self.scale, root)
            if lr_file is not None:
                lr, source = load_rgb(lr_file, root), f"{lr_file} (provided, MATLAB bicubic)"
            else:
                lr, source = bicubic_downscale(hr, self.scale), "PIL bicubic downscale of the modcropped HR"
            return to_tensor(lr), to_tensor(hr), {"input": source}
        if self.name == "denoise":
            noisy = gaussian_noise_input(clean, self.sigma, NOISE_SEED)
            return to_tensor(noisy), to_tensor(clean), {"input": f"gaussian σ={self.sigma:g}/255, "
                                                                  f"numpy seed {NOISE_SEED}, not clipped"}
        if self.name == "dehaze":
            gen = torch.Generator().manual_seed(heldout_seed(name))
            gt = to_tensor(clean)
            hazy, params = synthetic_haze(gt, gen)
            return hazy, gt, {"input": f"synthetic haze, seed crc32(name)={heldout_seed(name)}", **params}
        raise ValueError(f"unknown task {self.name!r}")

    def input_baseline(self, degraded: Tensor, gt: Tensor) -> Tensor:
        """The degraded input brought to the ground truth's size, for the 'did it learn' baseline."""
        if self.name == "sr":
            array = (degraded.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
            return to_tensor(bicubic_resize(array, (gt.shape[-1], gt.shape[-2])))
        return degraded.clamp(0, 1)

    @property
    def baseline_name(self) -> str:
        return {"sr": "bicubic upscaling (PIL)", "denoise": "noisy input (clipped)", "dehaze": "hazy input"}[
            self.name
        ]


def _set5_lr_file(name: str, scale: int, root=None) -> str | None:
    parts = Path(name).parts
    if len(parts) == 3 and parts[0] == "Set5" and parts[1] == "HR":
        stem = Path(parts[2]).stem
        candidate = Path("Set5") / "LR_bicubic" / f"X{scale}" / f"{stem}x{scale}.png"
        if (testsets_root(root) / candidate).is_file():
            return str(candidate)
    return None

