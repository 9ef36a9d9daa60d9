"""``inference.openvino_masks``: the shift masks of an OpenVINO IR computed per layer from their own region labels,
to the bit the masks they replace, and nothing else touched."""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch
from conftest import load_golden

from nystra_hub.attention import shifted_window_mask
from nystra_hub.inference.export import SCHEMA, export, read_export
from nystra_hub.inference.openvino_masks import MASK_RANK, masks_computed_per_layer, region_labels

needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="needs openvino (nystra_hub[openvino])")


@pytest.mark.parametrize(("size", "window", "shift"), [(8, (4, 4), (2, 2)), (12, (4, 4), (2, 2)), (8, (2, 4), (1, 2))])
def test_region_labels_rebuild_the_shift_mask(size, window, shift):
    mask = shifted_window_mask(size, size, window, shift).additive.numpy()
    labels, fill = region_labels(mask)
    assert fill == -100.0 and labels.shape == mask.shape[:2]
    rebuilt = np.where(labels[:, :, None] != labels[:, None, :], np.float32(fill), np.float32(0))
    assert np.array_equal(rebuilt, mask)


def test_a_mask_of_another_form_is_left_alone():
    mask = shifted_window_mask(8, 8, (4, 4), (2, 2)).additive.numpy()
    assert region_labels(np.random.default_rng(0).random(mask.shape, dtype=np.float32)) is None  # many values
    other = mask.copy()
    i, j = np.argwhere(other[-1] != 0)[0]
    other[-1, i, j] = 0.0  # not symmetric: no labelling gives it
    assert region_labels(other) is None
    assert region_labels(np.where(mask == 0, np.float32(-5), mask)) is None  # no zeros at all
    assert region_labels(np.zeros_like(mask)) is None  # nothing masked: nothing to rebuild


def _two_masked_additions(ov, mask: np.ndarray):
    """x + mask + mask, the mask one (1, windows, 1, N, N) constant both additions share, as torch.export folds it."""
    ops = ov.opset13
    windows, n, _ = mask.shape
    x = ops.parameter([1, windows, 2, n, n], ov.Type.f32)
    shared = ops.constant(mask.reshape(1, windows, 1, n, n))
    return ov.Model([ops.add(ops.add(x, shared), shared)], [x])


@needs_openvino
def test_each_addition_gets_its_own_mask_with_the_same_values():
    ov = importlib.import_module("openvino")
    mask = shifted_window_mask(8, 8, (4, 4), (2, 2)).additive.numpy()
    before, after = _two_masked_additions(ov, mask), _two_masked_additions(ov, mask)
    assert masks_computed_per_layer(ov, after) == 2
    adds = [op for op in after.get_ordered_ops() if op.get_type_name() == "Add"]
    sources = [op.input(1).get_source_output().get_node() for op in adds]
    assert all(s.get_type_name() == "Unsqueeze" for s in sources) and sources[0] is not sources[1]
    assert not any(op.get_type_name() == "Constant" and len(op.get_output_shape(0)) == MASK_RANK
                   for op in after.get_ordered_ops())
    x = np.random.default_rng(0).standard_normal([1, 4, 2, 16, 16]).astype(np.float32)
    core = ov.Core()
    outputs = [core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0] for m in (before, after)]
    assert np.abs(outputs[0] - outputs[1]).max() <= 1e-6  # two graphs: fused or not, the plugin's choice


@needs_openvino
def test_swinir_ir_computes_its_masks_per_shifted_block(tmp_path):
    """The exported golden SwinIR has no mask constant left, one label constant per shifted block, and still
    matches the eager forward."""
    ov = importlib.import_module("openvino")
    model = load_golden("swinir_sr_x2_pixelshuffle")[0]
    size = (16, 16)
    folder = export(model, tmp_path / "ir", "openvino", size=size)
    assert read_export(folder)["schema"] == SCHEMA
    graph = ov.Core().read_model(str(folder / "model.xml"))
    ops = graph.get_ordered_ops()
    assert not any(op.get_type_name() == "Constant" and len(op.get_output_shape(0)) == MASK_RANK for op in ops)
    shifted = sum(1 for m in model.modules() if getattr(m, "shift_size", 0))
    assert sum(op.get_type_name() == "NotEqual" for op in ops) == shifted > 0
    compiled = ov.Core().compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    inputs = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = model(inputs).numpy()
    assert np.abs(compiled(inputs.numpy())[0] - expected).max() <= 1e-4
