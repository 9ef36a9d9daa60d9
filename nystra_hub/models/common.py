"""What the three top-level models share: attention switching, window resizing, input checks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nystra_hub.attention import (
    NystraParams,
    attention_modules,
    bounded_redo,
    check_attn_impl,
    redo_overflowed,
    set_attn_impl,
)


def tokens_to_image(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H·W, C) tokens -> (B, C, H, W) image as a channels-last view, without copying.

    The usual ``x.transpose(1, 2).reshape(B, C, H, W)`` is the same view, except that for B = 1 reshape sets a
    stride of C on the batch dimension; convolutions then no longer see a channels-last tensor and take a slower
    path with layout copies (measured 2x on Uformer's LeFF on CPU). ``image.flatten(2).transpose(1, 2)`` turns a
    channels-last conv output back into contiguous tokens, again without a copy.
    """
    b, _, c = x.shape
    return x.reshape(b, size[0], size[1], c).permute(0, 3, 1, 2)


def gelu_on_fresh_output(x: Tensor, act: nn.GELU) -> Tensor:
    """``act(x)`` for an ``x`` nothing else holds (a layer's fresh output), in place unless autograd needs ``x``.

    On CPU a new image-sized tensor costs more in page faults than the GELU itself (65536×128 floats, 2 threads:
    17.8 ms into a new tensor, 2.1 ms in place, ``benchmarks/profile_cpu.py``); the values are the same bits.
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return act(x)
    return torch.ops.aten.gelu_(x, approximate=act.approximate)


def stream_op(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` for a module that starts the residual stream or reads it without a normalisation.

    The stream's values grow with depth and can pass float16's 65504 (the black images of float16 SwinIR runs).
    Under float16 autocast this call runs in float32, so the stream is float32 from its first layer on (every
    block adds its half-precision branch to it) and what reads it raw sees no overflow. bfloat16 has float32's
    range and stays in bfloat16."""
    device = x.device.type
    if torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16:
        with torch.autocast(device, enabled=False):
            return module(x.float())
    return module(x)


def count_children(state_dict: dict[str, Tensor], prefix: str) -> int:
    """How many numbered children ``<prefix><i>.…`` a state dict has (layers, blocks): checkpoint detection."""
    return len({key[len(prefix):].split(".", 1)[0] for key in state_dict if key.startswith(prefix)})


def mlp_ratio_of(hidden: int, dim: int) -> float:
    """A ratio that rebuilds ``hidden = int(dim · ratio)``: hidden / dim, unless float rounding puts dim·ratio a
    hair under hidden (1/49·49 < 1); then the middle of the interval that truncates to hidden."""
    ratio = hidden / dim
    return ratio if int(dim * ratio) == hidden else (hidden + 0.5) / dim


@dataclass(frozen=True)
class EnlargedWindowRecipe:
    """The paper's PnP-Nystra recipe for a model: run at ``window`` with ``landmarks`` landmarks, ``iters``
    pseudo-inverse iterations and kernel threshold ``tau`` (pnp-nystra.md); ``source`` says where it comes from."""

    window: int
    landmarks: int
    iters: int
    tau: float
    source: str

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class OfficialPadding:
    """How an official test script pads an image before the forward: none (this class), or a subclass's. The one
    implementation that :meth:`RestorationModel.official_pad` and the transformers image processor both run, on
    ``(..., H, W)`` tensors, to a side unit ``multiple`` (the model's ``official_multiple``). ``kind`` names it
    in a saved image processor's ``padding``."""

    kind = "none"

    def size(self, h: int, w: int, multiple: int) -> tuple[int, int]:
        """The size an ``h×w`` image is padded to."""
        return h, w

    def offset(self, h: int, w: int, multiple: int) -> tuple[int, int]:
        """(top, left) of an ``h×w`` image inside its padded input."""
        return 0, 0

    def pad(self, x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
        """(``x`` padded, its :meth:`offset`)."""
        return x, (0, 0)


class FlipPadding(OfficialPadding):
    """SwinIR's main_test_swinir.py: flipped copies concatenated at the bottom and right up to the next multiple
    (always 1 to ``multiple`` pixels more)."""

    kind = "flip"

    def size(self, h: int, w: int, multiple: int) -> tuple[int, int]:
        return (h // multiple + 1) * multiple, (w // multiple + 1) * multiple

    def pad(self, x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
        height, width = self.size(*x.shape[-2:], multiple)
        while x.shape[-2] < height:  # one flip suffices unless the image is smaller than the pad
            x = torch.cat([x, torch.flip(x, [-2])], -2)
        while x.shape[-1] < width:
            x = torch.cat([x, torch.flip(x, [-1])], -1)
        return x[..., :height, :width], (0, 0)


class CentredZeroPadding(OfficialPadding):
    """Uformer's ``expand2square(x, factor=128)``: zeros around the image, centred, to a square whose side is a
    multiple of ``multiple``."""

    kind = "centred_zeros"

    def size(self, h: int, w: int, multiple: int) -> tuple[int, int]:
        side = math.ceil(max(h, w) / multiple) * multiple
        return side, side

    def offset(self, h: int, w: int, multiple: int) -> tuple[int, int]:
        side, _ = self.size(h, w, multiple)
        return (side - h) // 2, (side - w) // 2

    def pad(self, x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, int]]:
        h, w = x.shape[-2:]
        top, left = self.offset(h, w, multiple)
        square = x.new_zeros(*x.shape[:-2], *self.size(h, w, multiple))
        square[..., top:top + h, left:left + w] = x
        return square, (top, left)


#: every official padding by its ``kind``
OFFICIAL_PADDINGS: dict[str, OfficialPadding] = {
    padding.kind: padding for padding in (OfficialPadding(), FlipPadding(), CentredZeroPadding())
}


@dataclass(frozen=True)
class Provenance:
    """Where a model's weights came from and what has been applied to them since; hub saving, ``export.json``
    and evaluation reports read it. Every :class:`RestorationModel` has one from construction (empty: built, not
    loaded); loaders fill it in and :meth:`RestorationModel.update_provenance` replaces fields.

    variant: the catalogue variant the model is.
    file: the weights file read (None where several shards or none were read).
    sha256: that file's sha256, hashed when it was read.
    hub_config: the ``config.json`` of the hub folder the model was loaded from.
    plan: the per-layer plan applied (``set_attn_impl`` keeps only its windows). Windows in it mean the weights
        are no longer the trained ones, so saving the model as a hub folder is refused.
    """

    variant: str | None = None
    file: str | None = None
    sha256: str | None = None
    hub_config: Mapping | None = None
    plan: Mapping | None = None


@dataclass(frozen=True)
class ArchitectureSpec:
    """What code outside ``models/`` needs to know about an architecture, declared once next to its code.

    title, paper: display name and citation.
    value_range: the image range of the raw ``forward`` (input and output); ``official_inference`` takes and
        returns [0, 1].
    padding: the official test protocol's padding (:class:`OfficialPadding`), run by ``official_pad`` and by the
        transformers image processor.
    tile_overlap: default overlap of tiles in input pixels, or None when the architecture must not be tiled,
        with ``tiling_refusal`` saying why.
    tiles_share_padding: True when tiles cut the once-padded whole image and run the raw forward (their windows
        then coincide with the whole image's); False when every tile runs ``official_inference`` itself.
    min_tile_multiples: the smallest tile, in multiples of the model's ``official_multiple``, whose output stays
        within about 1/255 of the whole image's (measured by ``benchmarks/tile_minimum.py``); smaller tiles are
        refused. None: no minimum (architectures that are never tiled).
    paper_recipes: the paper's enlarged-window recipe per task name ("default" for the others).
    bias_resize: how ``set_window_size`` carries the position bias to another window, in words.
    modulators: the decoder has learned modulators (dropped by the paper's recipe, like the bias and masks).
    spandrel: spandrel implements it (the official code path users run today; a benchmark baseline).
    shift_masks: shifted windows use the Swin shift mask (a Nyström ``mask`` mode then matters).
    metric_protocol: the name of the architecture's own evaluation protocol (a key of
        ``nystra_hub.measure.metrics.PROTOCOLS``) where its test script scores differently from its task's
        usual protocol; None otherwise.
    cpu_bfloat16_within_budget: its reference models' OpenVINO bfloat16 output (float32 layers kept, see
        :meth:`RestorationModel.float32_tail` and :meth:`RestorationModel.float32_residual_stages`) measured
        within ``nystra_hub.inference.backends.BFLOAT16_BUDGET`` of float32 (benchmarks/openvino-bf16-quality.json;
        a test reads it back): ``dtype="auto"`` then runs the OpenVINO route in bfloat16 on a CPU that has it
        natively.
    """

    title: str
    paper: str
    value_range: tuple[float, float]
    padding: OfficialPadding
    tile_overlap: int | None
    tiling_refusal: str | None
    tiles_share_padding: bool
    paper_recipes: dict[str, EnlargedWindowRecipe]
    bias_resize: str
    modulators: bool = False
    spandrel: bool = False
    shift_masks: bool = True  # shifted windows masked across the cyclic-shift seam (DehazeFormer reflect-pads)
    metric_protocol: str | None = None
    min_tile_multiples: int | None = None
    cpu_bfloat16_within_budget: bool = False

    def paper_recipe(self, task: str) -> EnlargedWindowRecipe:
        return self.paper_recipes.get(task, self.paper_recipes["default"])


#: the values of :attr:`RestorationModel.redo`
REDO_MODES = ("auto", "bounded", "exact-count")


class RestorationModel(nn.Module):
    """Base of SwinIR, Uformer and DehazeFormer.

    ``official_kwargs`` holds the official constructor arguments the model was built from (hub configs rebuild it
    from them). Subclasses set ``arch``, ``spec`` (:class:`ArchitectureSpec`), ``block_types`` and
    ``default_nystra`` (the reference's parameters for that architecture), and implement the few methods below
    that differ per architecture (padding, memory stages, window changes).

    ``redo`` (one of :data:`REDO_MODES`) says how ``nystra`` layers recompute exactly the windows whose Nyström
    denominators cannot be trusted (rare: 1 of 46 368 windows on the reference models):

    - ``"exact-count"``: each layer recomputes exactly those, a count the host reads back from the device: on a
      GPU one synchronisation per nystra layer, under ``torch.compile`` a graph break per layer;
    - ``"bounded"``: each layer recomputes a fixed number of windows, the untrustworthy first
      (:func:`~nystra_hub.attention.bounded_redo`): static shapes, no synchronisation inside the forward; one
      synchronisation after it reads whether a layer had more untrustworthy windows than that, and a forward
      where one had runs again ``"exact-count"`` (its forward hooks too), so the output is the same either way
      (within float rounding);
    - ``"auto"`` (the default): ``"bounded"`` for inputs on a CUDA device, ``"exact-count"`` elsewhere: a CPU
      waits for nothing when it reads a count back, and the bound's extra exact windows (about 3 % of a layer's
      exact attention) would be pure cost there.

    A model without nystra layers pays nothing more than entering a context variable. While ``torch.export``
    traces, while ``torch.jit`` traces and while a CUDA graph is captured the forward runs ``"exact-count"``:
    none of them can read the flags back inside the forward (exports bound the redo themselves and return the
    flag as a second output, :class:`nystra_hub.inference.export.WithRedoOverflow`).
    """

    arch: str = ""
    spec: ArchitectureSpec
    default_nystra = NystraParams()
    #: the repeated transformer block classes: :meth:`compile_blocks` compiles each kind once
    block_types: tuple[type[nn.Module], ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.official_kwargs: dict = {}
        self.provenance = Provenance()
        # Input checks cost one reduction over the image; off only for tracing/compilation.
        self.validate_inputs = True
        self.redo = "auto"  # how nystra layers recompute untrustworthy windows (class docstring)

    # -- the forward, with nystra's redo bounded where ``redo`` says so ---------------------------------------------
    def __call__(self, *args, **kwargs):
        if not self.bounds_redo(args[0] if args else next(iter(kwargs.values()), None)):
            return super().__call__(*args, **kwargs)
        with bounded_redo() as flags:
            out = super().__call__(*args, **kwargs)
        # The one synchronisation of the forward, and only where a nystra layer ran.
        if flags and bool(redo_overflowed(flags)):
            # Rare. Outside the block each layer redoes all its untrustworthy windows (inside a caller's own
            # bounded_redo, that block's flags report the overflow again).
            out = super().__call__(*args, **kwargs)
        return out

    def bounds_redo(self, x: Tensor | None) -> bool:
        """Whether a forward of ``x`` runs its nystra layers with a bounded redo (``redo``, class docstring)."""
        if self.redo not in REDO_MODES:
            raise ValueError(f"redo must be one of {REDO_MODES}, got {self.redo!r}")
        if self.redo == "exact-count" or torch.compiler.is_exporting() or torch.jit.is_tracing():
            return False
        on_cuda = isinstance(x, Tensor) and x.device.type == "cuda"
        if on_cuda and torch.cuda.is_current_stream_capturing():
            return False
        return self.redo == "bounded" or on_cuda

    # -- what restore/tiling/hub/measurement code needs to know, uniformly ----------------------------------------
    @property
    def scale(self) -> int:
        """Output size / input size."""
        return 1

    @property
    def in_channels(self) -> int:
        """Channels of the forward's input."""
        return int(self.official_kwargs.get("in_chans", 3))

    @property
    def out_channels(self) -> int:
        """Channels of the restored image."""
        return int(self.official_kwargs.get("in_chans", 3))

    @property
    def official_multiple(self) -> int:
        """The side unit of the official protocol: tiles are multiples of it."""
        raise NotImplementedError

    def official_size(self, h: int, w: int) -> tuple[int, int]:
        """The size the official protocol runs the network at for an ``h×w`` input."""
        return self.spec.padding.size(h, w, self.official_multiple)

    def official_pad(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """(the input padded as the official test script pads it, (top, left) offset of the image in it)."""
        return self.spec.padding.pad(x, self.official_multiple)

    def float32_tail(self) -> str | None:
        """The submodule from whose first operation on an exported graph stays float32 when OpenVINO runs it in
        bfloat16 (the last layers' rounding reaches the output undamped), or None. See
        :mod:`nystra_hub.inference.float32_layers`."""
        return None

    def float32_residual_stages(self) -> tuple[str, ...]:
        """The submodules whose blocks (:attr:`block_types`) keep their own additions, the residual stream, in
        float32 when OpenVINO runs the exported graph in bfloat16; () for none."""
        return ()

    def activation_stages(self) -> list[tuple[int, int, int, int, float]]:
        """(downsampling level, width, heads, window, mlp_ratio) of the stages the memory estimate counts."""
        raise NotImplementedError

    @property
    def high_res_width(self) -> int:
        """Width of the tensors at output resolution (the memory estimate counts them)."""
        return self.out_channels

    def to_model_range(self, x: Tensor) -> Tensor:
        """[0, 1] images -> the forward's value range."""
        low, high = self.spec.value_range
        return x if (low, high) == (0.0, 1.0) else x * (high - low) + low

    def from_model_range(self, y: Tensor) -> Tensor:
        low, high = self.spec.value_range
        return y if (low, high) == (0.0, 1.0) else (y - low) / (high - low)

    def official_inference(self, x: Tensor, forward=None) -> Tensor:
        """The official test protocol on a [0, 1] batch of any size: padding, the model (or ``forward``, e.g. the
        same weights in another implementation), crop, clamp. Returns [0, 1] images of (H·scale, W·scale)."""
        self.check_input(x, self.in_channels, 1)
        h, w = x.shape[-2:]
        padded, (top, left) = self.official_pad(x)
        out = (forward or self)(self.to_model_range(padded))
        s = self.scale
        out = out[..., top * s:(top + h) * s, left * s:(left + w) * s]
        return self.from_model_range(out).clamp(0, 1)

    def set_window_size(self, window_size: int, method: str = "bicubic", layers=None) -> None:
        """Run the trained model at another window: position biases resized with ``method`` (see
        :data:`nystra_hub.attention.WINDOW_RESIZE_METHODS`), masks following; ``layers`` selects stages by index
        (default: all). The same signature on every architecture."""
        raise NotImplementedError

    def compile_blocks(self, **compile_kwargs) -> RestorationModel:
        """``torch.compile`` every transformer block in place (regional compilation).

        Identical blocks share one compiled graph, so compile time does not grow with depth (SwinIR-M: 2 graphs
        for 36 blocks, shifted and not); the input checks, padding and convolutions around the blocks stay eager.
        Shapes are specialised: a new input size compiles again (tile a large image to keep one shape)."""
        # Blocks of different stages differ in shape (Uformer: 9 stages, shifted or not), each one compile.
        config = torch._dynamo.config
        limit = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
        setattr(config, limit, max(getattr(config, limit), 64))
        for module in self.modules():
            if isinstance(module, self.block_types):
                module.compile(**compile_kwargs)
        return self

    # -- attention ---------------------------------------------------------------------------------------------
    def set_attn_impl(self, attn_impl: str, **nystra_params) -> RestorationModel:
        """Switch every attention module in place (``"softmax"``, ``"sdpa"``, ``"nystra"``).

        Keyword arguments override the Nyström parameters (landmarks, iters, tau, bias, mask) on top of each
        module's own, so the per-layer parameters of a calibrated plan survive a switch to softmax and back. The
        plan's per-layer choice of implementation does not: every module now runs ``attn_impl``, so the plan is
        no longer recorded as applied (windows a plan changed stay changed, and stay recorded). The transformers
        wrapper and timm models behave the same.
        """
        set_attn_impl(self, attn_impl, **nystra_params)
        applied = self.provenance.plan
        if applied:
            kept = {key: applied[key] for key in ("windows", "window_resize") if key in applied}
            self.update_provenance(plan=kept or None)
        return self

    def update_provenance(self, **changes) -> RestorationModel:
        """Replace the :class:`Provenance` fields named in ``changes``."""
        self.provenance = dataclasses.replace(self.provenance, **changes)
        return self

    @property
    def attn_impl(self) -> str:
        impls = {m.attn_impl for _, m in attention_modules(self)}
        return impls.pop() if len(impls) == 1 else ("mixed" if impls else "none")

    def _init_attention(self, attn_impl: str, nystra: NystraParams | dict | None) -> None:
        """Apply the construction-time choice to every attention module (after they exist)."""
        check_attn_impl(attn_impl)
        params = self.default_nystra
        if isinstance(nystra, NystraParams):
            params = nystra
        elif nystra:
            params = params.replace(**nystra)
        for _, module in attention_modules(self):
            module.set_attn_impl(attn_impl, params)

    def adapt_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Architecture-specific, documented exceptions to key/shape equality (none by default)."""
        return state

    # -- input checks -----------------------------------------------------------------------------------------
    def check_input(self, x: Tensor, channels: int, min_size: int) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"{type(self).__name__} expects a 4-D tensor (batch, channels, height, width), "
                f"got shape {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            raise TypeError(
                f"{type(self).__name__} expects a floating-point tensor, got {x.dtype}; convert images with "
                f"x.float() / 255 (8-bit) or use nystra_hub.restore(), which handles integer images"
            )
        if x.shape[1] != channels:
            raise ValueError(
                f"{type(self).__name__} was built for {channels} input channel(s), got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        h, w = x.shape[-2:]
        if h < min_size or w < min_size:
            raise ValueError(
                f"image is {h}x{w} but {type(self).__name__} needs at least {min_size}x{min_size} pixels"
            )
        # Not while torch.export traces: a branch on the data (the exported graph's runner checks instead).
        if self.validate_inputs and not torch.compiler.is_exporting() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{type(self).__name__} input contains NaN or Inf values")


def unwrap_model(model) -> RestorationModel:
    """The :class:`RestorationModel` behind ``model``: itself, the transformers wrapper's ``restoration_model``,
    or what a training or parallel wrapper holds (``module``: DDP, Accelerate; ``model``)."""
    for candidate in (model, getattr(model, "restoration_model", None), getattr(model, "module", None),
                      getattr(model, "model", None)):
        if isinstance(candidate, RestorationModel):
            return candidate
    raise TypeError(
        f"expected a nystra_hub model (build_model, load, load_pretrained, AutoModel, timm), got {type(model).__name__}"
    )
