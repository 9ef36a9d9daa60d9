"""``inference.export``: exported graphs of the golden models (ONNX, OpenVINO IR) against the eager forward, their
``export.json``, and the refusals (sizes, formats, corrupt or foreign folders, half-written output)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import torch
from conftest import REPO, load_golden
from torch import nn

import nystra_hub
from nystra_hub.attention import NystraParams, TableBiasWindowAttention, shifted_window_mask
from nystra_hub.inference.backends import cpu_has_native_bfloat16, make_runner
from nystra_hub.inference.export import (
    ExportError,
    WithRedoOverflow,
    export,
    exportable_copy,
    read_export,
    to_openvino,
)
from nystra_hub.inference.float32_layers import (
    KEEP_PRECISION_ATTRIBUTE,
    additions_on_rows,
    block_addition_names,
    in_module,
    tail_node_names,
)

# The module (``nystra_hub.inference.export`` is also the name of its function once the package exports it).
export_module = importlib.import_module("nystra_hub.inference.export")

# One golden model per architecture: SwinIR (shifted windows, x2), Uformer (nine stages, modulator),
# DehazeFormer (reflect-padded shifts, RLN).
CASES = ("swinir_sr_x2_pixelshuffle", "uformer_tiny_modulator", "dehazeformer_tiny_conv")
ATTENTIONS = ("softmax", "sdpa", "nystra")
TOLERANCE = 1e-4


def has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_onnx = pytest.mark.skipif(not has("onnx", "onnxscript", "onnxruntime"),
                                reason="needs onnx, onnxscript, onnxruntime (nystra_hub[onnxruntime])")
needs_openvino = pytest.mark.skipif(not has("onnx", "onnxscript", "openvino"),
                                    reason="needs onnx, onnxscript, openvino (nystra_hub[openvino])")


def padded_input(model, io) -> torch.Tensor:
    """The golden input as the raw forward sees it: padded by the official protocol, in the model's range."""
    x = next(iter(io.values()))
    padded, _ = model.official_pad(x)
    return model.to_model_range(padded)


@pytest.fixture(scope="module")
def onnx_exports(tmp_path_factory):
    """{(case, attention): (model, padded input, eager output, ONNX folder)}, exported on first use."""
    folders = tmp_path_factory.mktemp("onnx")
    cache: dict = {}

    def get(case: str, attention: str):
        if (case, attention) not in cache:
            model, io, _ = load_golden(case, attention)
            x = padded_input(model, io)
            with torch.no_grad():
                expected = model(x)
            folder = export(model, folders / f"{case}-{attention}", size=tuple(x.shape[-2:]))
            cache[case, attention] = (model, x, expected, folder)
        return cache[case, attention]

    return get


@needs_onnx
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("case", CASES)
def test_onnx_export_reloads_and_matches_eager(onnx_exports, case, attention):
    model, x, expected, folder = onnx_exports(case, attention)
    metadata = read_export(folder)
    assert metadata["format"] == "onnx" and sorted(metadata["files"]) == ["model.onnx"]
    described = metadata["model"]
    assert described["arch"] == model.arch and described["attn_impl"] == attention
    assert described["official_kwargs"] == json.loads(json.dumps(model.official_kwargs))
    assert (described["nystra"] is not None) == (attention == "nystra")
    assert metadata["opset"] == 18 and metadata["input"]["shape"] == list(x.shape)
    assert metadata["input"]["dynamic"] is False and metadata["input"]["channels"] == model.in_channels
    assert metadata["input"]["range"] == list(model.spec.value_range)
    assert metadata["output"]["shape"] == list(expected.shape) and metadata["output"]["scale"] == model.scale
    assert metadata["versions"]["torch"] == torch.__version__
    assert metadata["versions"]["nystra_hub"] == nystra_hub.__version__
    runner = make_runner(model, "onnxruntime", exported=folder)
    with torch.inference_mode():
        assert (runner(x) - expected).abs().max() <= TOLERANCE
        # the trace left nothing behind: the eager model of the same size computes what it did before
        assert torch.equal(model(x), expected)


@needs_onnx
@needs_openvino
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("case", CASES)
def test_openvino_export_reloads_and_matches_eager(onnx_exports, tmp_path, case, attention):
    model, x, expected, onnx_folder = onnx_exports(case, attention)
    folder = to_openvino(onnx_folder, tmp_path / "ir")
    metadata = read_export(folder)
    assert metadata["format"] == "openvino" and sorted(metadata["files"]) == ["model.bin", "model.xml"]
    assert metadata["model"] == read_export(onnx_folder)["model"] and metadata["versions"]["openvino"]
    runner = make_runner(model, "openvino", exported=folder)
    with torch.inference_mode():
        assert (runner(x) - expected).abs().max() <= TOLERANCE


@needs_onnx
def test_mixed_plan_is_recorded(tmp_path):
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "softmax")
    first = next(nystra_hub.attention.attention_modules(model))[0]
    nystra_hub.apply_plan(model, {"attention": {first: {"attn_impl": "nystra", "landmarks": 4}}})
    x = padded_input(model, io)
    folder = export(model, tmp_path / "mixed", size=tuple(x.shape[-2:]))
    described = read_export(folder)["model"]
    assert described["attn_impl"] == "mixed" and described["nystra_plan"]["attention"][first]["landmarks"] == 4
    with torch.inference_mode():
        assert (make_runner(model, "onnxruntime", exported=folder)(x) - model(x)).abs().max() <= TOLERANCE


class Attend(nn.Module):
    """One nystra attention layer on stacked (q, k, v): the untrustworthy-window path, in isolation."""

    def __init__(self, masked: bool) -> None:
        super().__init__()
        self.attn = TableBiasWindowAttention((8, 8), 2, 8**-0.5, attn_impl="nystra", nystra=NystraParams())
        self.masked = masked

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        mask = shifted_window_mask(16, 32, (8, 8), (4, 4)) if self.masked else None  # 8 windows, 4 cut
        return self.attn.attend(qkv[0], qkv[1], qkv[2], mask)


def attention_input(huge: float, windows: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Stacked q, k, v of eight windows; ``windows`` have their queries times ``huge``. At 1e19 (logits ~1e20)
    their Nyström products overflow: eager nystra flags them untrustworthy and redoes them exactly."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(8, 2, 64, 8, generator=gen) for _ in range(3))
    q[list(windows)] *= huge
    return torch.stack([q, k, v])


def untrustworthy_windows(qkv: torch.Tensor) -> list[int]:
    _, trustworthy = nystra_hub.attention.nystrom_attention(*qkv, window=(8, 8), landmarks=16, iters=2, tau=5.0,
                                                            scale=8**-0.5)
    return (~trustworthy).flatten(1).any(1).nonzero().flatten().tolist()


@needs_onnx
@pytest.mark.parametrize("masked", [False, True])
def test_untrustworthy_windows_are_redone_in_the_graph(tmp_path, masked):
    """The graph decides at run time which windows to redo (eager nystra branches on it at trace time)."""
    ort = pytest.importorskip("onnxruntime")
    qkv, ordinary = attention_input(1e19), attention_input(1.0)
    assert untrustworthy_windows(qkv) == [1, 5] and untrustworthy_windows(ordinary) == []
    model = Attend(masked).eval()
    graph_model = exportable_copy(model)
    assert model.attn.attn_impl == "nystra"  # the caller's model is untouched
    with torch.no_grad():
        expected = model(qkv)
        assert (graph_model(qkv) - expected).abs().max() <= 1e-5
        program = torch.export.export(graph_model, (qkv,))
        onnx_program = torch.onnx.export(program, (qkv,), None, dynamo=True, opset_version=18, verbose=False)
    onnx_program.save(tmp_path / "attend.onnx")
    session = ort.InferenceSession(str(tmp_path / "attend.onnx"), providers=["CPUExecutionProvider"])
    for data in (qkv, ordinary):  # the same graph, with and without windows to redo
        out = session.run(None, {session.get_inputs()[0].name: data.numpy()})[0]
        with torch.no_grad():
            assert (torch.from_numpy(out) - model(data)).abs().max() <= TOLERANCE


@needs_onnx
def test_exported_nystra_redoes_a_bounded_number_of_windows_and_flags_more(tmp_path):
    """nystra_hub's exports trace nystra inside bounded_redo: a static graph that recomputes redo_capacity(8) = 1
    window of this layer exactly, and says in its second output when there were more untrustworthy ones."""
    ort = pytest.importorskip("onnxruntime")
    model = Attend(masked=True).eval()
    graph_model = WithRedoOverflow(exportable_copy(model))
    cases = {"ordinary": (attention_input(1.0), False), "one": (attention_input(1e19, (5,)), False),
             "two": (attention_input(1e19), True)}
    assert untrustworthy_windows(cases["one"][0]) == [5]
    with torch.no_grad():
        program = torch.export.export(graph_model, (cases["two"][0],), strict=False)
        onnx_program = torch.onnx.export(program, (cases["two"][0],), None, dynamo=True, opset_version=18,
                                         verbose=False)
    onnx_program.save(tmp_path / "attend.onnx")
    session = ort.InferenceSession(str(tmp_path / "attend.onnx"), providers=["CPUExecutionProvider"])
    for name, (data, overflows) in cases.items():
        out, overflowed = session.run(None, {session.get_inputs()[0].name: data.numpy()})
        assert bool(overflowed) == overflows, name
        if not overflows:
            with torch.no_grad():
                assert (torch.from_numpy(out) - model(data)).abs().max() <= TOLERANCE, name


@needs_onnx
def test_a_graph_that_overflows_its_redo_is_answered_by_the_eager_model(tmp_path, monkeypatch, capfd):
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "nystra")
    x = padded_input(model, io)
    runner = make_runner(model, "onnxruntime", cache_dir=tmp_path)
    with torch.no_grad():
        expected, graph_output = model(x), runner(x)
    metadata = read_export(next(tmp_path.iterdir()))
    assert metadata["overflow_output"]["name"] == "nystra_redo_overflow"
    assert (graph_output - expected).abs().max() <= TOLERANCE
    session = runner.sessions[tuple(x.shape)]
    # the graph says it overflowed (and returns a wrong image): the runner must not return that image
    monkeypatch.setattr(type(session), "__call__", lambda self, data: (data[:, :, :1, :1] * 0, True))
    with torch.no_grad():
        answered = runner(x)
    assert answered.shape == expected.shape and (answered - expected).abs().max() <= TOLERANCE
    assert "more untrustworthy windows than the exported graph recomputes" in capfd.readouterr().err


@needs_onnx
def test_flex_layers_export_as_the_same_function(tmp_path):
    """FlexAttention has no ONNX form: the graph computes flex's function with sdpa, and says it was asked flex."""
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "softmax")
    nystra_hub.attention.set_attn_impl(model, "flex")
    x = padded_input(model, io)
    runner = make_runner(model, "onnxruntime", cache_dir=tmp_path)
    with torch.no_grad():
        assert (runner(x) - model(x)).abs().max() <= TOLERANCE
    assert read_export(next(tmp_path.iterdir()))["model"]["attn_impl"] == "flex"


def test_exact_exports_have_no_overflow_output(onnx_exports):
    folder = onnx_exports("swinir_sr_x2_pixelshuffle", "softmax")[3]
    assert read_export(folder)["overflow_output"] is None


# -- refusals ------------------------------------------------------------------------------------------------------
def golden(case: str = "swinir_sr_x2_pixelshuffle", attention: str = "softmax"):
    return load_golden(case, attention)[0]


def test_size_smaller_than_the_window_is_refused(tmp_path):
    with pytest.raises(ValueError, match="smaller than the model's 8x8 window"):
        export(golden(), tmp_path / "small", size=(4, 16))
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_backend_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown export format 'tflite'; valid: onnx, openvino"):
        export(golden(), tmp_path / "x", "tflite", size=24)
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        make_runner(golden(), "tensorrt")
    with pytest.raises(ValueError, match="exported= is a folder for the export backends"):
        make_runner(golden(), "torch", exported=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dependency,call", [
    ("openvino", lambda m, p: export(m, p, "openvino", size=24)),
    ("onnx", lambda m, p: export(m, p, "onnx", size=24)),
    ("onnxruntime", lambda m, p: make_runner(m, "onnxruntime", cache_dir=p)),
    ("openvino", lambda m, p: make_runner(m, "openvino", cache_dir=p)),
])
def test_a_missing_dependency_names_the_install_command(monkeypatch, tmp_path, dependency, call):
    monkeypatch.setitem(sys.modules, dependency, None)  # import fails as if it were not installed
    with pytest.raises(ImportError, match=rf'pip install "nystra_hub\[{dependency}\]"'):
        call(golden(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_nystra_hub_needs_no_export_dependency():
    code = ("import sys\nfor name in ('onnx', 'onnxscript', 'onnxruntime', 'openvino'): sys.modules[name] = None\n"
            "import nystra_hub, nystra_hub.inference.export, nystra_hub.inference.backends, nystra_hub.measure.arms\n"
            "assert 'nystra-traceable' not in nystra_hub.attention.ATTENTION_REGISTRY")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_nothing_is_half_written_on_failure(monkeypatch, tmp_path):
    """A failing export leaves no folder and no temporary; an overwritten folder stays as it was."""
    uformer = golden("uformer_tiny_modulator")
    with pytest.raises(ValueError, match="multiple of 16"):  # the model's own check, raised while tracing
        export(uformer, tmp_path / "bad", size=136)
    assert list(tmp_path.iterdir()) == []

    def half_then_fail(model, shape, path, opset, progress):
        path.write_bytes(b"half a graph")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "write_onnx", half_then_fail)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        export(golden(), existing, size=24, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["existing"] and (existing / "keep.txt").read_text() == "old"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(golden(), existing, size=24)


@needs_onnx
def test_corrupt_folders_are_refused(onnx_exports, tmp_path):
    model, x, _, folder = onnx_exports("swinir_sr_x2_pixelshuffle", "softmax")

    def corrupted(name: str, damage) -> str:
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        damage(copy)
        return copy

    graph = "model.onnx"
    cases = {
        "no export.json": lambda f: (f / "export.json").unlink(),
        "corrupt": lambda f: (f / "export.json").write_text("{not json"),
        "schema": lambda f: (f / "export.json").write_text(json.dumps({"schema": "other/1"})),
        "missing": lambda f: (f / graph).unlink(),
        "bytes": lambda f: (f / graph).write_bytes((f / graph).read_bytes()[:1000]),
        "SHA-256": lambda f: (f / graph).write_bytes(bytes(b ^ 1 for b in (f / graph).read_bytes())),
    }
    for message, damage in cases.items():
        with pytest.raises(ExportError, match=message):
            make_runner(model, "onnxruntime", exported=corrupted(message.replace(" ", "-"), damage))
    with pytest.raises(ExportError, match="no such exported folder"):
        read_export(tmp_path / "nowhere")


@needs_onnx
def test_a_folder_for_something_else_is_refused(onnx_exports):
    model, x, _, folder = onnx_exports("swinir_sr_x2_pixelshuffle", "softmax")
    retrained = golden()
    with torch.no_grad():
        retrained.conv_first.bias.add_(0.01)
    variant = golden()
    variant.update_provenance(variant="swinir-x2")
    asked = {
        'attn_impl: exported "softmax", asked "nystra"': (golden(attention="nystra"), {}),
        "weights_sha256: exported": (retrained, {}),
        'variant: exported null, asked "swinir-x2"': (variant, {}),
        "opset: exported 18, asked 17": (model, {"opset": 17}),
    }
    for message, (other, options) in asked.items():
        with pytest.raises(ExportError, match=f"exported for something else: {message}"):
            make_runner(other, "onnxruntime", exported=folder, **options)
    nystra, _, _, nystra_folder = onnx_exports("swinir_sr_x2_pixelshuffle", "nystra")
    fewer = golden(attention="nystra").set_attn_impl("nystra", landmarks=4)
    with pytest.raises(ExportError, match='nystra: exported .*"landmarks": 16.*asked .*"landmarks": 4'):
        make_runner(fewer, "onnxruntime", exported=nystra_folder)
    runner = make_runner(model, "onnxruntime", exported=folder)
    with pytest.raises(ExportError, match=r"input shape: exported \(1, 3, 24, 32\), asked \(1, 3, 32, 32\)"):
        runner(torch.rand(1, 3, 32, 32))


# -- the float32 tail of an OpenVINO graph run in bfloat16 ------------------------------------------------------------
def marked_layers(xml_path) -> list[str]:
    """The names of the IR layers that carry the keep-precision attribute."""
    return [layer.get("name") for layer in ElementTree.parse(xml_path).getroot().iter("layer")
            if any(a.attrib == KEEP_PRECISION_ATTRIBUTE for a in layer.iter("attribute"))]


def compiled(xml_path, precision: str, strip_tail: bool = False):
    """``xml_path`` compiled for the CPU in ``precision`` ("f32"/"bf16"), the tail's attributes removed if asked."""
    ov = importlib.import_module("openvino")  # optional: the tests that call this skip without it
    core = ov.Core()
    text = Path(xml_path).read_text()
    if strip_tail:
        text = text.replace('<attribute name="DisablePrecisionConversion" version="0" value="dynamic:dynamic" />', "")
    model = core.read_model(text, ov.Tensor(np.fromfile(Path(xml_path).with_suffix(".bin"), np.uint8)))
    return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 2})


def marked_types(xml_path) -> list[str]:
    """The layer types of the IR layers that carry the keep-precision attribute."""
    return [layer.get("type") for layer in ElementTree.parse(xml_path).getroot().iter("layer")
            if any(a.attrib == KEEP_PRECISION_ATTRIBUTE for a in layer.iter("attribute"))]


@needs_openvino
def test_swinir_exports_with_its_float32_tail_marked(tmp_path):
    """From the last RSTB's convolution on, every computing layer of SwinIR's IR but the convolutions keeps float32
    under bfloat16; export.json says where the tail begins and how many layers it has; the float32 graph is
    unchanged."""
    model = golden()
    x = padded_input(model, load_golden("swinir_sr_x2_pixelshuffle")[1])
    folder = export(model, tmp_path / "ir", "openvino", size=tuple(x.shape[-2:]))
    plan = read_export(folder)["float32_layers"]
    marked = marked_layers(folder / "model.xml")
    assert plan == {"tail_from": "layers.1.conv", "residual_stages": [], "products": "bfloat16",
                    "layers": len(marked)}
    assert model.float32_tail() == "layers.1.conv"
    assert marked[0].startswith("convolution_2/") and marked[-1].startswith("add_17/")  # RSTB conv .. long skip
    assert not any(name.startswith(("convolution/", "bmm")) for name in marked)  # conv_first, the attention
    assert not set(marked_types(folder / "model.xml")) & {"Convolution", "GroupConvolution", "MatMul"}
    with torch.inference_mode():
        assert (make_runner(model, "openvino", exported=folder)(x) - model(x)).abs().max() <= TOLERANCE


@needs_openvino
@pytest.mark.skipif(not cpu_has_native_bfloat16(), reason="the CPU has no native bfloat16 (OpenVINO emulates none)")
@pytest.mark.parametrize(("case", "margin"), [("swinir_sr_x2_pixelshuffle", 0.97), ("uformer-ref-denoise25", 0.8)])
def test_the_float32_layers_bring_bfloat16_closer_to_float32(tmp_path, case, margin):
    """SwinIR's tail on a golden model (its convolutions in bfloat16: here 8 % less squared error than all in
    bfloat16, where float32 convolutions gave 45 %); Uformer's residual stream on its trained reference model (a
    noisy synthetic image), where its rounding matters (on a random-weight golden model it hardly does)."""
    if case.startswith("uformer"):
        model = nystra_hub.load(REPO / "reference_models" / case)
        ramp = torch.linspace(0, 1, 128)
        clean = torch.stack([ramp[:, None] * ramp[None], 0.5 + 0.4 * torch.sin(12 * ramp)[:, None] * ramp[None],
                             ramp.flip(0)[:, None].expand(128, 128)])
        x = (clean + 25 / 255 * torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(0)))[None]
    else:
        model = golden(case)
        x = padded_input(model, load_golden(case)[1])
    xml_path = export(model, tmp_path / "ir", "openvino", size=tuple(x.shape[-2:])) / "model.xml"
    outputs = {}
    for name, precision, strip in (("f32", "f32", False), ("kept", "bf16", False), ("all", "bf16", True)):
        outputs[name] = torch.from_numpy(compiled(xml_path, precision, strip)(x.numpy())[0])
    error = {name: (outputs[name] - outputs["f32"]).pow(2).mean().item() for name in ("kept", "all")}
    # here SwinIR 3.9e-5 against 4.2e-5, Uformer 1.7e-6 against 2.7e-6; kernels differ across CPUs: a margin
    assert 0 < error["kept"] < margin * error["all"], error


@needs_openvino
def test_uformer_keeps_its_first_stage_residual_stream_in_float32(tmp_path):
    """The residual additions of the blocks of Uformer's first stage, each on (rows, channels) views that are kept
    with it, nothing else: not the attention's or the MLP's own, not the other stages'; the graph still matches
    the eager forward."""
    model = golden("uformer_tiny_modulator")
    x = padded_input(model, load_golden("uformer_tiny_modulator")[1])
    folder = export(model, tmp_path / "ir", "openvino", size=tuple(x.shape[-2:]))
    plan = read_export(folder)["float32_layers"]
    blocks = len(model.encoderlayer_0.blocks)
    assert plan == {"tail_from": None, "residual_stages": ["encoderlayer_0"], "products": "bfloat16",
                    "layers": 8 * blocks}
    # per block: 2 additions, each with its operands' two row views and its result's token view
    assert sorted(marked_types(folder / "model.xml")) == ["Add"] * 2 * blocks + ["Reshape"] * 6 * blocks
    adds = {name.split("/")[0] for name in marked_layers(folder / "model.xml")}
    assert len(adds) == 2 * blocks
    with torch.inference_mode():
        assert (make_runner(model, "openvino", exported=folder)(x) - model(x)).abs().max() <= TOLERANCE


def test_additions_on_rows_view_same_shape_operands_only():
    """Only the named additions of two same-shaped operands get (rows, channels) views, named after them; the
    values are the same; a broadcast addition and an unnamed one are left as they are."""
    ov = pytest.importorskip("openvino")
    ops = ov.opset13
    a, b = ops.parameter([2, 6, 4], np.float32), ops.parameter([2, 6, 4], np.float32)
    kept, other = ops.add(a, b), ops.add(a, b)
    broadcast = ops.add(kept, ops.constant(np.ones(4, np.float32)))
    for node, name in ((kept, "add_1"), (other, "add_2"), (broadcast, "add_3")):
        node.set_friendly_name(f"{name}/aten.add.Tensor/Add")
    graph = ov.Model([ops.relu(broadcast), ops.relu(other)], [a, b])
    x = [np.random.default_rng(i).standard_normal([2, 6, 4]).astype(np.float32) for i in range(2)]
    before = ov.Core().compile_model(graph.clone(), "CPU")(x)
    assert additions_on_rows(ov, graph, {"add_1", "add_3"}) == 1
    ranks = {op.get_friendly_name().split("/")[0]: len(op.get_output_partial_shape(0))
             for op in graph.get_ordered_ops() if op.get_type_name() == "Add"}
    assert ranks == {"add_1": 2, "add_2": 3, "add_3": 3}
    views = sorted(op.get_friendly_name() for op in graph.get_ordered_ops() if op.get_type_name() == "Reshape")
    assert views == ["add_1/rows_0/Reshape", "add_1/rows_1/Reshape", "add_1/tokens/Reshape"]
    after = ov.Core().compile_model(graph, "CPU")(x)
    for i in range(2):  # two graphs: the plugin may fuse them differently
        assert np.abs(before[i] - after[i]).max() <= 1e-6


def test_dehazeformer_and_onnx_graphs_keep_nothing_in_float32(onnx_exports):
    """DehazeFormer is within budget in bfloat16 without float32 layers; an ONNX graph has none."""
    model = golden("dehazeformer_tiny_conv")
    assert model.float32_tail() is None and model.float32_residual_stages() == ()
    if has("onnx", "onnxscript"):
        assert read_export(onnx_exports("swinir_sr_x2_pixelshuffle", "softmax")[3])["float32_layers"] is None


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Residual()

    def forward(self, x):
        return x + self.inner(x)


class Residual(nn.Module):
    def forward(self, x):
        return x + 1


class TwoStages(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.last = Block(), nn.Sequential(Block())

    def forward(self, x):
        return self.last(self.first(x))


def test_block_additions_are_those_of_the_blocks_in_the_stages():
    program = torch.export.export(TwoStages().eval(), (torch.rand(2),))
    adds = [n.name for n in program.graph.nodes if n.op == "call_function"]
    assert len(adds) == 4  # inner, block, inner, block
    assert block_addition_names(program.graph, ["last"], (Block,)) == {adds[3]}
    assert block_addition_names(program.graph, ["first", "last"], (Block,)) == {adds[1], adds[3]}
    assert block_addition_names(program.graph, ["first"], (Residual,)) == {adds[0]}
    assert block_addition_names(program.graph, [], (Block,)) == set()


def test_tail_node_names_start_at_the_module_and_run_to_the_end():
    program = torch.export.export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval(),
                                  (torch.rand(1, 3, 8, 8),))
    ops = [n.name for n in program.graph.nodes if n.op == "call_function"]
    assert tail_node_names(program.graph, "1") == set(ops[1:]) and len(ops) == 3
    assert tail_node_names(program.graph, "2") == {ops[2]} and tail_node_names(program.graph, None) == set()
    assert in_module("model.layers.3.conv.0", "layers.3.conv") and in_module("layers.3.conv", "layers.3.conv")
    assert not in_module("layers.13.conv", "layers.3.conv") and not in_module("layers.3.conv_x", "layers.3.conv")
