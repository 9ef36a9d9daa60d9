"""Window geometry shared by every architecture: partition/reverse, shifted-window masks.

Everything here depends only on the window, the shift and the feature-map size, so the masks are built once per
(size, window, shift, device, dtype) and cached process-wide (the official SwinIR and Uformer rebuild them for
every block on every forward).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# The official code marks cross-region pairs of a shifted window with -100 (not -inf): exp(-100) is not exactly 0,
# so the exact paths must add this very value to reproduce the released models' outputs.
SHIFT_MASK_VALUE = -100.0


def to_2tuple(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


def window_partition(x: Tensor, window: tuple[int, int]) -> Tensor:
    """(B, H, W, C) -> (B * nW, wh * ww, C); windows in row-major order, batch outermost (as the official code)."""
    b, h, w, c = x.shape
    wh, ww = window
    x = x.view(b, h // wh, wh, w // ww, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)


def window_reverse(windows: Tensor, window: tuple[int, int], h: int, w: int) -> Tensor:
    """(B * nW, wh * ww, C) -> (B, H, W, C); inverse of :func:`window_partition`."""
    wh, ww = window
    c = windows.shape[-1]
    x = windows.view(-1, h // wh, w // ww, wh, ww, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


CacheInfo = namedtuple("CacheInfo", "hits misses maxsize currsize")


class GeometryCache:
    """A least-recently-used cache of tensors that depend only on sizes, windows, devices and dtypes.

    Built with inference mode off: a tensor first made inside ``torch.inference_mode`` (``restore``) would otherwise
    fail any later autograd use of the same geometry in the process (training, gradients through the model).

    While ``torch.export`` traces, a hit returns the cached real tensor (a constant of the graph: the exporters
    fill the caches with one eager forward first) and a miss builds the tensor in the trace without keeping it: a
    non-strict trace runs this Python on fake tensors, and a fake tensor left in a process-wide cache is what every
    later eager forward of that size would compute with. Built in the trace, the Nyström pooling matrices alone
    were 3 500 slice-and-fill nodes of SwinIR's reference model and most of its 5-minute OpenVINO conversion.
    """

    def __init__(self, build: Callable, maxsize: int) -> None:
        functools.update_wrapper(self, build)
        self.maxsize = maxsize
        self._entries: OrderedDict[tuple, object] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    def __call__(self, *args):
        with self._lock:
            if args in self._entries:
                self._entries.move_to_end(args)
                self._hits += 1
                return self._entries[args]
        with torch.inference_mode(False):
            value = self.__wrapped__(*args)
        if torch.compiler.is_exporting():
            return value
        with self._lock:
            self._misses += 1
            self._entries[args] = value
            if len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def cache_clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._hits = self._misses = 0

    def cache_info(self) -> CacheInfo:
        return CacheInfo(self._hits, self._misses, self.maxsize, len(self._entries))


def geometry_cache(maxsize: int) -> Callable[[Callable], GeometryCache]:
    """Decorate a builder of geometry tensors with a :class:`GeometryCache` of ``maxsize`` entries."""
    return lambda build: GeometryCache(build, maxsize)


@geometry_cache(maxsize=64)
def _window_token_index(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> tuple[Tensor, Tensor]:
    tokens = torch.arange(h * w, device="cpu").view(1, h, w, 1)
    if shift != (0, 0):
        tokens = torch.roll(tokens, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    order = window_partition(tokens, window).flatten()
    return order.to(device), torch.argsort(order).to(device)


@torch.compiler.assume_constant_result
def window_token_index(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device
) -> tuple[Tensor, Tensor]:
    """(order, inverse) gathers of :func:`partition_tokens` / :func:`merge_tokens`, cached; under torch.compile a
    constant of the graph (built once here, never traced into CPU kernels recomputed at every call)."""
    return _window_token_index(h, w, tuple(window), tuple(shift), torch.device(device))


def partition_tokens(x: Tensor, h: int, w: int, window: tuple[int, int], shift: tuple[int, int] = (0, 0)) -> Tensor:
    """(B, H·W, C) tokens -> (B·nW, wh·ww, C) windows of the map cyclically shifted by ``-shift``.

    The same as ``window_partition(torch.roll(x.view(B, H, W, C), -shift), window)`` in one gather with a cached
    index, instead of two full copies (roll, then partition)."""
    order, _ = window_token_index(h, w, tuple(window), tuple(shift), x.device)
    return x.index_select(1, order).view(-1, window[0] * window[1], x.shape[-1])


def merge_tokens(windows: Tensor, h: int, w: int, window: tuple[int, int], shift: tuple[int, int] = (0, 0)) -> Tensor:
    """Inverse of :func:`partition_tokens`: (B·nW, N, C) windows -> (B, H·W, C) tokens, shift undone."""
    _, inverse = window_token_index(h, w, tuple(window), tuple(shift), windows.device)
    c = windows.shape[-1]
    return windows.reshape(-1, h * w, c).index_select(1, inverse)


@dataclass(frozen=True)
class WindowMask:
    """An additive attention mask per window plus what the fast paths need to avoid applying it everywhere.

    ``additive`` is (nW, N, N) with 0 where attention is allowed. Only the windows listed in ``cut`` contain
    non-zero entries (for a shifted-window mask: the last row and column of windows), so exact fused attention
    and Nyström run mask-free on all windows and redo only the cut ones with their mask.
    """

    additive: Tensor
    cut: Tensor  # int64 (n_cut,) indices of windows with at least one masked pair
    cut_additive: Tensor  # (n_cut, N, N)

    @property
    def num_windows(self) -> int:
        return self.additive.shape[0]

    @classmethod
    def from_additive(cls, additive: Tensor, cut: Tensor | None = None) -> WindowMask:
        """``cut``: the indices of the windows with a masked pair, when the caller knows them from the geometry
        (finding them in the data is a data-dependent ``nonzero`` that torch.compile cannot trace)."""
        if cut is None:
            cut = (additive != 0).flatten(1).any(dim=1).nonzero().flatten()
        return cls(additive=additive, cut=cut, cut_additive=additive.index_select(0, cut))

    def to(self, dtype: torch.dtype) -> WindowMask:
        if self.additive.dtype == dtype:
            return self
        return WindowMask(self.additive.to(dtype), self.cut, self.cut_additive.to(dtype))


def shift_region_labels(h: int, w: int, window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """(H, W) int labels of the regions a cyclic shift glues together (official slicing, 9 regions)."""
    wh, ww = window
    sh, sw = shift
    labels = torch.zeros(h, w, dtype=torch.int64, device="cpu")  # explicit: may run under a meta context
    h_slices = (slice(0, -wh), slice(-wh, -sh), slice(-sh, None))
    w_slices = (slice(0, -ww), slice(-ww, -sw), slice(-sw, None))
    count = 0
    for hs in h_slices:
        for ws in w_slices:
            labels[hs, ws] = count
            count += 1
    return labels


@geometry_cache(maxsize=64)
def _shifted_window_mask(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> WindowMask:
    labels = shift_region_labels(h, w, window, shift)
    windows = window_partition(labels.view(1, h, w, 1), window).squeeze(-1)  # (nW, N)
    differs = windows.unsqueeze(1) != windows.unsqueeze(2)
    additive = torch.zeros(differs.shape, dtype=dtype, device="cpu").masked_fill_(differs, SHIFT_MASK_VALUE)
    return WindowMask.from_additive(additive.to(device), shift_cut_windows(h, w, window, shift).to(device))


def shift_cut_windows(h: int, w: int, window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """Indices of the windows a cyclic shift cuts: the last row of windows (if shifted vertically) and the last
    column (if shifted horizontally); every other window lies inside one region."""
    rows, cols = h // window[0], w // window[1]
    cut = {(rows - 1) * cols + j for j in range(cols)} if shift[0] else set()
    cut |= {i * cols + cols - 1 for i in range(rows)} if shift[1] else set()
    return torch.tensor(sorted(cut), dtype=torch.int64)


def shifted_window_mask(
    h: int,
    w: int,
    window: tuple[int, int],
    shift: tuple[int, int],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> WindowMask:
    """The Swin shifted-window mask for an (h, w) map, cached per (size, window, shift, device, dtype)."""
    if h % window[0] or w % window[1]:
        raise ValueError(f"feature map {h}x{w} is not a multiple of the window {window[0]}x{window[1]}")
    return WindowMask(*_shifted_window_mask_tensors(h, w, tuple(window), tuple(shift), torch.device(device), dtype))


@torch.compiler.assume_constant_result
def _shifted_window_mask_tensors(
    h: int, w: int, window: tuple[int, int], shift: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    # torch.compile treats the cached tensors as constants of the graph (a dataclass cannot be one).
    mask = _shifted_window_mask(h, w, window, shift, device, dtype)
    return mask.additive, mask.cut, mask.cut_additive


def relative_position_index(window: tuple[int, int]) -> Tensor:
    """(N, N) int64 index into a ((2wh-1)(2ww-1), heads) bias table, the Swin convention."""
    # timm's helper is the Swin formula; reuse it rather than keep a copy.
    from timm.layers import gen_relative_position_index

    return gen_relative_position_index(tuple(window))


@torch.compiler.assume_constant_result
def sub_window_index_on(window: tuple[int, int], table_window: tuple[int, int], device: torch.device) -> Tensor:
    """:func:`sub_window_index` on ``device``, cached (a graph constant under torch.compile)."""
    return _sub_window_index_on(tuple(window), tuple(table_window), torch.device(device))


@geometry_cache(maxsize=32)
def _sub_window_index_on(window: tuple[int, int], table_window: tuple[int, int], device: torch.device) -> Tensor:
    return sub_window_index(window, table_window).to(device)


@torch.compiler.assume_constant_result
def log_relative_offset_table(
    window: tuple[int, int], device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """(:func:`log_relative_offsets`, flat :func:`relative_position_index`) on ``device``: DehazeFormer's bias MLP
    input per distinct offset and where each token pair reads it (graph constants under torch.compile)."""
    return _log_relative_offset_table(tuple(window), torch.device(device), dtype)


@geometry_cache(maxsize=32)
def _log_relative_offset_table(window: tuple[int, int], device: torch.device, dtype: torch.dtype):
    index = relative_position_index(window).view(-1).to(device)
    return log_relative_offsets(window).to(device=device, dtype=dtype), index


def sub_window_index(window: tuple[int, int], table_window: tuple[int, int]) -> Tensor:
    """(n, n) index of a smaller window's token offsets into the bias table of a larger ``table_window``."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
    ).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    return (rel[0] + table_window[0] - 1) * (2 * table_window[1] - 1) + rel[1] + table_window[1] - 1


def log_relative_offsets(window: tuple[int, int]) -> Tensor:
    """((2wh-1)(2ww-1), 2) float sign(d)*log(1+|d|) of every distinct token offset, in the order of the Swin bias
    table, so ``log_relative_offsets(w)[relative_position_index(w)]`` is :func:`log_relative_positions`."""
    dy = torch.arange(-(window[0] - 1), window[0]).repeat_interleave(2 * window[1] - 1)
    dx = torch.arange(-(window[1] - 1), window[1]).repeat(2 * window[0] - 1)
    rel = torch.stack([dy, dx], dim=-1)
    return torch.sign(rel) * torch.log(1.0 + rel.abs())


def log_relative_positions(window: tuple[int, int]) -> Tensor:
    """(N, N, 2) float sign(d)*log(1+|d|) of token offsets, DehazeFormer's MLP bias input."""
    coords = torch.stack(
        torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]), indexing="ij")
    ).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    return torch.sign(rel) * torch.log(1.0 + rel.abs())
