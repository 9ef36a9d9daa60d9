"""``nystra_hub.inference.export``: a model's raw forward as an ONNX graph or an OpenVINO IR, in a folder with its
description.

The graph is the raw ``forward`` on an input already padded by ``official_pad`` (or a tile of it), in the
forward's value range: input checks, padding, cropping and clamping stay outside, in ``official_inference`` and
:func:`nystra_hub.restore`, so one graph serves whole images and tiles alike.

Shapes are static: one export per input shape. SwinIR and Uformer build their shift masks and window gathers in
Python per feature-map size (cached per size), which ``torch.export`` cannot key on a symbolic size; DehazeFormer
exports with dynamic height and width, correctly, but the symbolic trace took minutes for the tiny golden model
(160 s ``torch.export`` + 345 s ONNX translation, against about 5 s for a static shape), so it is static too.
:mod:`nystra_hub.inference.backends` exports each new shape on first use into a cache folder.

A folder holds the graph (``model.onnx``, or ``model.xml`` + ``model.bin``) and ``export.json``::

    {schema: "nystra_hub.export/4", format: "onnx"|"openvino", files: {name: {bytes, sha256}},
     model: {source: "nystra_hub"|"module", variant, arch, official_kwargs, attn_impl ("mixed" for a plan),
             nystra (parameters, null when no layer runs an approximation), nystra_plan (per-layer, or null),
             window_sizes, weights_sha256, [module]},
     opset, input: {name, shape, dtype, channels, range, dynamic: false}, output: {name, shape, channels, scale},
     overflow_output: {name, what} or null,
     float32_layers: {tail_from: submodule or null, residual_stages: [submodule], layers: IR layers marked} or null,
     exporter, versions: {torch, nystra_hub, onnx, onnxscript, [openvino], [<module's package>]}, created}

Folders are written atomically: everything goes to a temporary folder next to the target, renamed into place
when complete, so a failed export leaves nothing behind (and an overwritten folder intact).

Why the graph is traced on a copy (:func:`exportable_copy`): ``check_input``'s NaN/Inf test branches on data
(torch.export refuses it), and ``nystra`` redoes untrustworthy windows only when there are some, another branch on
data; the copy switches the check off, and a graph with a ``nystra`` layer is traced inside
:func:`nystra_hub.attention.bounded_redo`: each layer recomputes a fixed number of windows exactly (its
untrustworthy ones first) and the graph has a second output, ``nystra_redo_overflow``, True when some layer had
more (rare: 1 window in 46 368 on the reference models); the runners then recompute that input eagerly. With the
number of redone windows known only at run time, the same export took 176 s against 26 s for exact attention
(SwinIR reference model, 64², OpenVINO). ``softmax``'s in-place CPU softmax traces as it is with
``torch.export`` (the TorchScript exporter, not used here, has no ONNX symbol for ``aten::_softmax``). The copy runs
once eagerly before the trace: its position biases (and pooled biases) become constants of the graph
(:func:`replay_position_terms`). The package's process-wide caches are emptied around the trace, which would
otherwise leave fake tensors in them (:func:`emptied_caches`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from nystra_hub._version import __version__
from nystra_hub.attention import FLEX_IMPL, attention_modules, bounded_redo, redo_overflowed
from nystra_hub.inference.float32_layers import (
    additions_on_rows,
    float32_node_names,
    float32_plan,
    keep_float32,
    residual_addition_names,
)
from nystra_hub.inference.openvino_masks import masks_computed_per_layer
from nystra_hub.io.hub import attention_state, jsonable
from nystra_hub.io.images import PARTIAL_SUFFIX
from nystra_hub.models import RestorationModel
from nystra_hub.models.common import unwrap_model

# 2: graphs with a nystra layer have a second output, OVERFLOW_NAME (the bounded redo of untrustworthy windows)
# 3: OpenVINO IR keeps the architecture's float32 tail under bfloat16 (float32_tail); older folders export again
# 4: float32_layers: residual stages kept float32 as well as the tail (Uformer exports again)
# 5: the float32 layers' products (convolutions, matrix products) run bfloat16 (SwinIR exports again)
# 6: OpenVINO IR computes the shift masks per layer (openvino_masks): the plugin fuses their additions
# 7: Uformer keeps only its first stage's residual stream float32, its additions on (rows, channels) views
SCHEMA = "nystra_hub.export/7"
METADATA_NAME = "export.json"
FORMATS = ("onnx", "openvino")
GRAPH_FILES = {"onnx": ("model.onnx",), "openvino": ("model.xml", "model.bin")}
DEFAULT_OPSET = 18  # the opset the peer route exports spandrel's models at; ONNX Runtime and OpenVINO read it
INPUT_NAME, OUTPUT_NAME = "input", "output"
OVERFLOW_NAME = "nystra_redo_overflow"
OVERFLOW_MEANING = ("boolean scalar: True when a nystra layer had more untrustworthy windows than the graph "
                    "recomputes exactly (nystra_hub.attention.redo_capacity); the output is then wrong: recompute "
                    "the input with the eager model (nystra_hub's runners do)")
EXACT_IMPLS = ("softmax", "sdpa")  # their graphs do not depend on the Nyström parameters
# The OpenVINO IR comes straight from torch.export's program: SwinIR-M x2 at 128² in 27 s, against 80 s through ONNX
# (the dynamo ONNX exporter's optimisation passes), same graph to 7e-7 (2-core CPU machine, torch 2.14, OpenVINO
# 2026.4). OpenVINO's TorchScript route fails on these models (no rule for aten::_softmax).
EXPORTERS = {"onnx": "torch.export.export (non-strict), then torch.onnx.export(dynamo=True, optimize=True)",
             "openvino": "torch.export.export (non-strict), then openvino.convert_model(ExportedProgram)"}
OPENVINO_FX_DECODER = "openvino.frontend.pytorch.fx_decoder"  # part of the openvino package, loaded with it

# The optional dependency behind each import, and what installs it.
INSTALL_HINTS = {
    "onnx": 'pip install "nystra_hub[onnx]"',
    "onnxscript": 'pip install "nystra_hub[onnx]"',
    "onnxruntime": 'pip install "nystra_hub[onnxruntime]"',
    "openvino": 'pip install "nystra_hub[openvino]"',
}


class ExportError(ValueError):
    """An exported folder that cannot be used: missing, corrupt, or exported for something else."""


def require(module_name: str, purpose: str):
    """Import an optional dependency, or fail saying what installs it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as err:
        raise ImportError(f"{purpose} needs {module_name}, which is not installed: {INSTALL_HINTS[module_name]} "
                          f"({err})") from err


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; valid: {', '.join(FORMATS)}")
    return format


# -- what an export is of ---------------------------------------------------------------------------------------
def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the state dict (names, dtypes, shapes, bytes): the weights an export was traced with."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy())  # the bytes, read in place
    return digest.hexdigest()


def describe_model(model: nn.Module, with_weights: bool = True) -> dict:
    """What an export of ``model`` is of: the ``model`` entry of ``export.json``, compared when a folder is
    loaded for a model. Any other module (spandrel's) is described by its class and weights. ``with_weights=False``
    leaves out the weights' digest (the one costly part)."""
    ours = as_restoration_model(model)
    digest = weights_digest(ours or model) if with_weights else None
    if ours is None:
        kind = type(model)
        return {"source": "module", "module": f"{kind.__module__}.{kind.__qualname__}",
                "arch": getattr(model, "spandrel_arch", None), "weights_sha256": digest}
    impl, params, plan = attention_state(ours)
    approximate = plan is not None or impl not in EXACT_IMPLS
    return {
        "source": "nystra_hub",
        "variant": ours.provenance.variant,
        "arch": ours.arch,
        "official_kwargs": jsonable(ours.official_kwargs),
        "attn_impl": ours.attn_impl,
        "nystra": params.as_dict() if approximate else None,
        "nystra_plan": jsonable(plan) if plan else None,
        "window_sizes": jsonable(ours.window_sizes()),
        "weights_sha256": digest,
    }


def as_restoration_model(model: nn.Module) -> RestorationModel | None:
    """The :class:`RestorationModel` behind ``model`` (itself or a wrapper's), or None for another module."""
    try:
        return unwrap_model(model)
    except TypeError:
        return None


def export_versions(format: str, model: nn.Module | None = None) -> dict:
    """Versions of what shaped the graph (the export cache is keyed by them)."""
    packages = ["openvino"] if format == "openvino" else ["onnx", "onnxscript"]
    if model is not None and as_restoration_model(model) is None:
        packages.append(type(model).__module__.split(".")[0])  # spandrel, for its models
    versions = {"torch": torch.__version__, "nystra_hub": __version__}  # torch's with its build (+cpu, +cu130)
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def input_shape(model: nn.Module, size: int | tuple[int, int], batch: int = 1,
                channels: int | None = None) -> tuple[int, int, int, int]:
    """(batch, channels, height, width) of the graph's input, checked against the model's window."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    ours = as_restoration_model(model)
    if channels is None:
        if ours is None:
            raise ValueError(f"channels= is needed to export a {type(model).__name__} (not a nystra_hub model)")
        channels = ours.in_channels
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (h, w, batch, channels)):
        raise ValueError(f"size, batch and channels must be positive ints, got size={size!r}, batch={batch!r}, "
                         f"channels={channels!r}")
    if ours is not None:
        window = max(ours.window_sizes(), default=1)
        if min(h, w) < window:
            raise ValueError(f"a {h}x{w} input is smaller than the model's {window}x{window} window; the graph is "
                             f"the raw forward on a padded input: pad with model.official_pad (restore does) and "
                             f"export the padded size")
    return (batch, channels, h, w)


# -- a copy torch.export can trace --------------------------------------------------------------------------------
def exportable_copy(model: nn.Module) -> nn.Module:
    """A float32 CPU copy of ``model`` in eval mode that ``torch.export`` traces into the graph of its forward.

    The ``nystra`` layers trace the attention core's exporting path (no branch on how many windows are
    untrustworthy); on our models the input checks are off (the NaN/Inf test branches on data); ``flex`` layers
    trace as ``sdpa``, the same function. The caller's model is left as it is."""
    graph_model = copy.deepcopy(model).eval().float().cpu()
    ours = as_restoration_model(graph_model)
    if ours is not None:
        ours.validate_inputs = False
    for _, module in attention_modules(graph_model):
        if module.attn_impl == FLEX_IMPL:
            # FlexAttention has no ONNX/OpenVINO form; sdpa computes the same function (both exact: the bias
            # and the mask added to the logits) and exports
            module.set_attn_impl("sdpa")
        replay_position_terms(module)
    return graph_model


def replay_position_terms(module) -> None:
    """Make ``module`` (an attention module of a copy about to be traced) record the position bias and pooled
    bias its eager calls compute, and return them while tracing: constants of the graph.

    Traced, they would be computed in the graph from the weights (a gather, DehazeFormer's MLP, the pooling),
    and OpenVINO 2026.4's CPU plugin computes DehazeFormer's pooled bias wrongly there (its ``P @ bias`` comes
    out as ``P @ biasᵀ``, the other pooling product: 0.04 off at the output); as constants they are also no work
    per call."""
    position_bias, pooled_position_bias = module.position_bias, module.pooled_position_bias
    recorded: dict = {}

    def replayed_position_bias(dtype, device, window=None):
        key = ("bias", dtype, window or module.window_size)
        if torch.compiler.is_compiling() and key in recorded:
            return recorded[key]
        recorded[key] = position_bias(dtype, device, window)
        return recorded[key]

    def replayed_pooled_position_bias(bias, window, grid):
        key = ("pooled", bias.dtype, tuple(window), tuple(grid))
        if torch.compiler.is_compiling() and key in recorded:
            return recorded[key]
        recorded[key] = pooled_position_bias(bias, window, grid)
        return recorded[key]

    module.position_bias = replayed_position_bias  # instance attributes: the class's methods stay as they are
    module.pooled_position_bias = replayed_pooled_position_bias


def package_caches() -> list:
    """The ``functools`` caches of nystra_hub's loaded modules (window gathers, shift masks, pooling matrices,
    position-offset tables: tensors per size, shared by the whole process)."""
    caches = {}
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "nystra_hub" or name.startswith("nystra_hub.")):
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)) and not isinstance(value, type):
                    caches[id(value)] = value
    return list(caches.values())


@contextmanager
def emptied_caches() -> Iterator[None]:
    """The package's caches emptied on entry and on exit, for tracing.

    ``torch.export`` (non-strict) runs the model's Python on fake tensors: a cache filled during the trace holds
    fake tensors afterwards, and every later eager forward of that size in the process returns fake tensors (and
    a later export fails on them). Emptied on entry, the trace sees no fake tensor from an earlier one; emptied
    on exit, none leaks out. Another thread running the model during an export may still read one."""
    for cache in package_caches():
        cache.cache_clear()
    try:
        yield
    finally:
        for cache in package_caches():
            cache.cache_clear()


def example_input(model: nn.Module, shape: tuple[int, ...]) -> Tensor:
    """A seeded random input of ``shape`` in the forward's value range (the values do not shape the graph)."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    ours = as_restoration_model(model)
    return ours.to_model_range(x) if ours is not None else x


# -- writing ------------------------------------------------------------------------------------------------------
def traced_program(model: nn.Module, shape: tuple[int, ...]) -> tuple[torch.export.ExportedProgram, Tensor]:
    """(``torch.export``'s program of ``model``'s forward on an input of ``shape``, that input)."""
    graph_model = exportable_copy(model)
    if runs_nystra(graph_model):
        graph_model = WithRedoOverflow(graph_model)
    example = example_input(model, shape)
    with float32_tracing(), emptied_caches():
        graph_model(example)  # records the position terms, fills the caches: the trace takes them as constants
        # strict=False is torch.export's tracing mode (Python-level tracing instead of TorchDynamo's), nothing to do
        # with loading weights: the model was loaded strictly before it reached here
        return torch.export.export(graph_model, (example,), strict=False), example


def runs_nystra(model: nn.Module) -> bool:
    return any(module.attn_impl == "nystra" for _, module in attention_modules(model))


class WithRedoOverflow(nn.Module):
    """A nystra model's forward with a bounded redo of untrustworthy windows (static shapes: a graph the exporter
    and the converters handle in about the time of exact attention's) and, as a second output, whether any layer
    had more untrustworthy windows than it redid (:data:`OVERFLOW_MEANING`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with bounded_redo() as flags:
            out = self.model(x)
        return out, redo_overflowed(flags)


def float32_tracing() -> contextlib.AbstractContextManager:
    """No autograd and no autocast: float32 graphs only. An export started under a caller's autocast (restore in
    bfloat16 exporting a new tile shape on first use) would otherwise trace half-precision casts into the graph;
    the converters re-trace the program (OpenVINO 2025.1 does), so they run under it too."""
    stack = contextlib.ExitStack()
    for context in (torch.no_grad(), torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False)):
        stack.enter_context(context)
    return stack


Progress = Callable[[str], None]  # told each stage of an export as it starts: "tracing ...", "converting ..."


def _silent(stage: str) -> None:
    pass


def timed_stages(report: Progress) -> Progress:
    """``report``, each stage prefixed with the seconds since the export began."""
    started = time.perf_counter()
    return lambda stage: report(f"[{time.perf_counter() - started:5.1f} s] {stage}")


def write_onnx(model: nn.Module, shape: tuple[int, ...], path: Path, opset: int,
               progress: Progress = _silent) -> list[int]:
    """Trace ``model`` on an input of ``shape`` into the ONNX file ``path``; returns the output shape."""
    progress("tracing the forward (torch.export)")
    program, example = traced_program(model, shape)
    progress("converting the program to ONNX")
    output_names = [OUTPUT_NAME, OVERFLOW_NAME][:len(program.graph_signature.user_outputs)]
    with float32_tracing(), quiet_exporter():
        onnx_program = torch.onnx.export(program, (example,), None, dynamo=True, opset_version=opset,
                                         input_names=[INPUT_NAME], output_names=output_names, verbose=False)
    onnx_program.save(path)
    return [int(d) for d in onnx_program.model.graph.outputs[0].shape]


def write_openvino(model: nn.Module, shape: tuple[int, ...], folder: Path, progress: Progress = _silent
                   ) -> tuple[list[int], dict | None]:
    """Trace ``model`` on an input of ``shape`` into OpenVINO IR (``model.xml`` + ``model.bin``) in ``folder``,
    weights in float32 (``save_model`` would halve them to float16 by default: not the same function), the
    architecture's float32 layers marked (:mod:`~nystra_hub.inference.float32_layers`); returns (the output shape,
    its :func:`~nystra_hub.inference.float32_layers.float32_plan` with ``"layers"``: how many were marked, or None)."""
    ov = require("openvino", "exporting to OpenVINO")
    progress("tracing the forward (torch.export)")
    program, _ = traced_program(model, shape)
    progress("converting the program to OpenVINO IR")
    with float32_tracing(), quiet_exporter():
        # what convert_model(program) does, in two steps: the decoder's decomposed graph names the IR's layers
        decoder = importlib.import_module(OPENVINO_FX_DECODER).TorchFXPythonDecoder.from_exported_program(program)
        ov_model = ov.convert_model(decoder)
    ov_model.reshape(list(shape))  # the program's shape, static as in the ONNX graphs (converted with some dims open)
    ours = as_restoration_model(model)
    masks_computed_per_layer(ov, ov_model)
    additions_on_rows(ov, ov_model, residual_addition_names(decoder.pt_module.graph, ours))
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for output, name in zip(ov_model.outputs, (OUTPUT_NAME, OVERFLOW_NAME)):
        output.get_tensor().set_names({name})
    xml_path = folder / GRAPH_FILES["openvino"][0]
    ov.save_model(ov_model, str(xml_path), compress_to_fp16=False)
    plan = float32_plan(ours)
    marked = keep_float32(xml_path, float32_node_names(decoder.pt_module.graph, ours))
    return [int(d) for d in ov_model.outputs[0].get_partial_shape().to_shape()], (
        {**plan, "layers": marked} if plan else None)


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporters' own chatter (deprecation notices, "Skipping constant folding for op ..." dozens of times,
    OpenVINO's decomposition-table tracebacks on the root logger) kept off the user's screen: their loggers raised
    to errors, a silent handler on the root logger (which would otherwise configure itself to print), warnings not
    shown; all restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir", "torch.export", None)]
    levels = [logger.level for logger in loggers]
    silent = logging.NullHandler()
    logging.getLogger().addHandler(silent)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            logging.getLogger().removeHandler(silent)


def onnx_to_openvino(onnx_path: Path, folder: Path) -> None:
    """Convert an ONNX file to OpenVINO IR (``model.xml`` + ``model.bin``) in ``folder``, weights in float32."""
    ov = require("openvino", "exporting to OpenVINO")
    ov_model = ov.convert_model(str(onnx_path))
    ov.save_model(ov_model, str(folder / GRAPH_FILES["openvino"][0]), compress_to_fp16=False)


def file_record(folder: Path, format: str) -> dict:
    """{file name: {bytes, sha256}} of the graph files: what :func:`read_export` checks them against."""
    record = {}
    for name in GRAPH_FILES[format]:
        data = (folder / name).read_bytes()
        record[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return record


@contextmanager
def staged_folder(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder next to ``target`` that becomes ``target`` when the ``with`` block succeeds; on any
    error it is removed and ``target`` is as it was. An existing ``target`` is replaced only with ``overwrite``."""
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True to replace it")
    staging = _fresh_folder(target.parent, target.name)
    try:
        yield staging
        _move_into_place(staging, target, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fresh_folder(parent: Path, stem: str) -> Path:
    """A new hidden folder in ``parent`` (created with the umask's permissions, unlike ``mkdtemp``'s 0700)."""
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = parent / f".{stem}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _move_into_place(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename ``staging`` to ``target``; an old ``target`` (with ``overwrite``) is set aside until it is done."""
    old = None
    if overwrite and target.exists():
        old = _fresh_folder(target.parent, f"{target.name}.old")
        os.rename(target, old / "folder")
    try:
        os.rename(staging, target)  # fails if another process created target meanwhile
    except OSError as err:
        if old is not None:
            os.rename(old / "folder", target)
        raise FileExistsError(f"{target} appeared while exporting ({err})") from err
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def export(model: nn.Module, path: str | os.PathLike, format: str = "onnx", *, size: int | tuple[int, int],
           batch: int = 1, channels: int | None = None, opset: int = DEFAULT_OPSET,
           overwrite: bool = False, progress: Progress | None = None) -> Path:
    """Export ``model``'s raw forward on a padded ``size`` input (height, width; an int for a square) to the
    folder ``path``: ``format`` "onnx" (``model.onnx``) or "openvino" (IR ``model.xml``/``model.bin``), with
    ``export.json`` (module doc). The graph takes and returns ``batch`` images in the forward's value range
    (``model.spec.value_range``) of exactly this shape; run it inside ``official_inference(x, forward=...)`` or
    through :func:`nystra_hub.inference.backends.make_runner`. ``channels`` is needed only for a module that is not a
    nystra_hub model (spandrel's). ``progress`` is told each stage as it starts, with the seconds elapsed. The
    folder appears complete or not at all."""
    check_format(format)
    shape = input_shape(model, size, batch, channels)
    for dependency in ("openvino",) if format == "openvino" else ("onnx", "onnxscript"):
        require(dependency, f"exporting to {format}")
    description = describe_model(model)
    target = Path(path)
    stage = timed_stages(progress or _silent)
    with staged_folder(target, overwrite) as staging:
        if format == "openvino":
            output_shape, float32_layers = write_openvino(model, shape, staging, stage)
        else:
            output_shape = write_onnx(model, shape, staging / GRAPH_FILES["onnx"][0], opset, stage)
            float32_layers = None
        stage("writing export.json (file sizes and hashes)")
        metadata = export_metadata(model, description, format, opset, shape, output_shape, staging, float32_layers)
        write_metadata(staging, metadata)
    stage(f"done: {target}")
    return target


def to_openvino(onnx_folder: str | os.PathLike, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Convert an ONNX export folder into an OpenVINO one (IR in float32, ``export.json`` carried over with the
    new format, files and versions): the same graph without exporting again."""
    require("openvino", "converting to OpenVINO")
    source = Path(onnx_folder)
    metadata = read_export(source)
    if metadata["format"] != "onnx":
        raise ExportError(f"{source} is a {metadata['format']} export; to_openvino converts an ONNX one")
    target = Path(path)
    with staged_folder(target, overwrite) as staging:
        onnx_to_openvino(source / GRAPH_FILES["onnx"][0], staging)
        converted = {**metadata, "format": "openvino", "files": file_record(staging, "openvino"),
                     "versions": {**metadata["versions"], "openvino": export_versions("openvino")["openvino"]}}
        write_metadata(staging, converted)
    return target


def write_metadata(folder: Path, metadata: dict) -> None:
    """``export.json``, written last: a folder is complete once it has one (and is renamed into place)."""
    (folder / METADATA_NAME).write_text(json.dumps(metadata, indent=1) + "\n")


def export_metadata(model: nn.Module, description: dict, format: str, opset: int, shape: tuple[int, ...],
                    output_shape: list[int], folder: Path, float32_layers: dict | None = None) -> dict:
    """The content of ``export.json`` (module doc) for a graph just written to ``folder``."""
    ours = as_restoration_model(model)
    value_range = list(ours.spec.value_range) if ours is not None else None
    return {
        "schema": SCHEMA,
        "format": format,
        "files": file_record(folder, format),
        "model": description,
        "opset": opset,
        "input": {"name": INPUT_NAME, "shape": list(shape), "dtype": "float32", "channels": shape[1],
                  "range": value_range, "dynamic": False,
                  "what": "the raw forward's input: padded by official_pad (or a tile of it), in range"},
        "output": {"name": OUTPUT_NAME, "shape": output_shape, "channels": output_shape[1],
                   "scale": output_shape[-1] // shape[-1]},
        "overflow_output": {"name": OVERFLOW_NAME, "what": OVERFLOW_MEANING} if runs_nystra(model) else None,
        "float32_layers": float32_layers,
        "exporter": EXPORTERS[format],
        "versions": export_versions(format, model),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- reading ------------------------------------------------------------------------------------------------------
def read_export(path: str | os.PathLike, verify_files: bool = True) -> dict:
    """``export.json`` of an exported folder, checked: schema, format, graph files present and (with
    ``verify_files``) of the recorded size and SHA-256. Raises :class:`ExportError` saying what is wrong."""
    folder = Path(path)
    meta_path = folder / METADATA_NAME
    if not folder.is_dir():
        raise ExportError(f"{folder}: no such exported folder")
    try:
        metadata = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{folder}: no {METADATA_NAME}; not a nystra_hub export") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ExportError(f"{meta_path}: corrupt ({err}); export again") from None
    if not isinstance(metadata, dict) or metadata.get("schema") != SCHEMA:
        found = metadata.get("schema") if isinstance(metadata, dict) else type(metadata).__name__
        raise ExportError(f"{meta_path}: schema {found!r}, expected {SCHEMA!r}")
    missing = [key for key in ("format", "files", "model", "opset", "input", "output") if key not in metadata]
    if missing or metadata["format"] not in FORMATS:
        raise ExportError(f"{meta_path}: corrupt (missing {missing}, format {metadata.get('format')!r})")
    _check_files(folder, metadata, verify_files)
    return metadata


def _check_files(folder: Path, metadata: dict, verify: bool) -> None:
    for name in GRAPH_FILES[metadata["format"]]:
        file = folder / name
        expected = metadata["files"].get(name, {})
        if not file.is_file():
            raise ExportError(f"{folder}: {name} is missing; export again")
        if verify and file.stat().st_size != expected.get("bytes"):
            raise ExportError(f"{file}: {file.stat().st_size} bytes, {METADATA_NAME} records "
                              f"{expected.get('bytes')}; the folder is corrupt, export again")
        if verify and hashlib.sha256(file.read_bytes()).hexdigest() != expected.get("sha256"):
            raise ExportError(f"{file}: content differs from the SHA-256 in {METADATA_NAME}; the folder is "
                              f"corrupt, export again")


def check_export_matches(metadata: Mapping, folder: str | os.PathLike, model: Mapping | None = None,
                         opset: int | None = None, shape: tuple[int, ...] | None = None) -> None:
    """Raise :class:`ExportError` listing every difference between an exported folder and what is asked:
    ``model`` (a :func:`describe_model`: variant, arch, kwargs, attention, Nyström parameters, plan, weights),
    ``opset``, input ``shape``."""
    differences = []
    for key, wanted in (model or {}).items():
        found = metadata["model"].get(key)
        if found != wanted:
            differences.append(f"{key}: exported {_short(found)}, asked {_short(wanted)}")
    if opset is not None and metadata["opset"] != opset:
        differences.append(f"opset: exported {metadata['opset']}, asked {opset}")
    if shape is not None and tuple(metadata["input"]["shape"]) != tuple(shape):
        differences.append(f"input shape: exported {tuple(metadata['input']['shape'])}, asked {tuple(shape)} "
                           "(graphs have static shapes: export each size, or let make_runner cache them)")
    if differences:
        raise ExportError(f"{folder} was exported for something else: " + "; ".join(differences))


def _short(value) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
