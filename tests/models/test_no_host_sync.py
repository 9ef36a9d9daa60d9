"""``RestorationModel.redo``: a forward whose nystra layers recompute a fixed number of untrustworthy windows
(``bounded_redo``), checked once after the forward, rerun without the bound when a layer had more.

On a GPU the point is one host synchronisation per forward instead of one per nystra layer; this machine has no
GPU, so the tests here check what makes that true on any device: the bounded forward gives the default forward's
output, an overflow reruns it, and the bounded layers trace into one graph each (no data-dependent shape left).
The synchronisations themselves are counted on a GPU by ``benchmarks/gpu.sh`` (``host_syncs`` in its report).
"""

from __future__ import annotations

import pytest
import torch
from conftest import golden_cases, load_golden

from nystra_hub.attention import attention_modules, bounded_redo
from nystra_hub.attention import core as attention_core
from nystra_hub.inference.export import traced_program
from nystra_hub.models.common import REDO_MODES

TOLERANCE = 1e-5


def counting_bounded_redo(monkeypatch) -> list[int]:
    """Count the layer calls of the bounded redo (a list holding one int per call)."""
    calls: list[int] = []
    real = attention_core.redo_bounded

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_core, "redo_bounded", counted)
    return calls


def count_forwards(model) -> list[int]:
    calls: list[int] = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return calls


def golden_input(model, io) -> torch.Tensor:
    padded, _ = model.official_pad(io["input"])
    return model.to_model_range(padded)


def make_untrustworthy(model) -> None:
    """Scale the queries of the model's first attention layer by 1e6: its Nyström denominators fail in more
    windows than a bounded redo recomputes (12 windows of the golden SwinIR input, a capacity of 1)."""
    _, attention = next(attention_modules(model))
    dim = attention.qkv.in_features
    with torch.no_grad():
        attention.qkv.weight[:dim] *= 1e6
        attention.qkv.bias[:dim] *= 1e6


@pytest.mark.parametrize("case", golden_cases())
def test_the_bounded_forward_gives_the_default_output(case, monkeypatch):
    model, io, _ = load_golden(case, "nystra")
    x = golden_input(model, io)
    with torch.no_grad():
        default = model(x)  # on the CPU "auto" is the exact count
        bounded_layers = counting_bounded_redo(monkeypatch)
        model.redo = "bounded"
        forwards = count_forwards(model)
        bounded = model(x)
    assert bounded_layers, "every golden case has Nyström layers"
    assert len(forwards) == 1  # nothing overflowed: no rerun
    assert (bounded - default).abs().max().item() <= TOLERANCE


def test_auto_bounds_cuda_inputs_only_and_the_modes_are_checked():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "nystra")
    x = io["input"]
    assert REDO_MODES == ("auto", "bounded", "exact-count") and model.redo == "auto"
    assert not model.bounds_redo(x)  # a CPU input: reading a count back waits for nothing
    model.redo = "bounded"
    assert model.bounds_redo(x)
    model.redo = "exact-count"
    assert not model.bounds_redo(x)
    model.redo = "fast"
    with pytest.raises(ValueError, match="redo must be one of"):
        model(x)


def test_an_overflowing_layer_reruns_the_forward_without_the_bound():
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "nystra")
    make_untrustworthy(model)
    x = golden_input(model, io)
    with torch.no_grad():
        model.redo = "exact-count"
        exact_count = model(x)
        with bounded_redo() as flags:  # the bounded layers alone, without the model's check
            bounded_only = model(x)
        model.redo = "bounded"
        forwards = count_forwards(model)
        checked = model(x)
    assert bool(flags[0]) and (bounded_only - exact_count).abs().max().item() > 0.1  # the bound alone is wrong
    assert len(forwards) == 2  # the bounded forward, then its rerun
    assert (checked - exact_count).abs().max().item() <= TOLERANCE


def test_a_compiled_model_still_sees_the_overflow():
    """torch.compile of the whole model (dynamo's graphs, no inductor): the layers' flags still reach the check."""
    torch._dynamo.reset()  # what earlier compilations in this process decided about these functions
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "nystra")
    make_untrustworthy(model)
    model.validate_inputs = False
    x = golden_input(model, io)
    with torch.no_grad():
        model.redo = "exact-count"
        exact_count = model(x)
        model.redo = "bounded"
        forwards = count_forwards(model)
        compiled = torch.compile(model, backend="eager", dynamic=False)(x)
    assert len(forwards) == 2
    assert (compiled - exact_count).abs().max().item() <= TOLERANCE


def test_compiled_blocks_bound_the_redo_in_one_graph_each(monkeypatch):
    """fullgraph=True: a block whose nystra layer read a count back (``nonzero``) would fail to compile."""
    torch._dynamo.reset()
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "nystra")
    x = golden_input(model, io)
    with torch.no_grad():
        eager = model(x)
        model.redo = "bounded"
        bounded_layers = counting_bounded_redo(monkeypatch)
        model.compile_blocks(backend="eager", fullgraph=True, dynamic=False)
        compiled = model(x)
    assert bounded_layers
    assert (compiled - eager).abs().max().item() <= TOLERANCE


def test_an_export_bounds_the_redo_itself_and_returns_the_overflow():
    """While torch.export traces, the model leaves the bound to the exporter (WithRedoOverflow): the flags become
    the graph's second output instead of a check the trace cannot make."""
    model, io, _ = load_golden("swinir_sr_x2_pixelshuffle", "nystra")
    make_untrustworthy(model)
    model.redo = "bounded"
    x = golden_input(model, io)
    program, _ = traced_program(model, tuple(x.shape))
    out, overflowed = program.module()(x)
    assert bool(overflowed)  # the graph's answer is wrong, and says so: its runner then asks the eager model
    with torch.no_grad():
        assert (out - model(x)).abs().max().item() > 0.1
