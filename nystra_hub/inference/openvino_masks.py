"""``nystra_hub.inference.openvino_masks``: the shifted windows' masks of an OpenVINO IR computed per layer.

torch.export folds the cached shift mask (:func:`~nystra_hub.attention.windows.shifted_window_mask`) into one
constant of shape (1, windows, 1, N, N) that every shifted block adds. OpenVINO's CPU plugin fuses the mask's
addition with the position bias's only where the mask's constant feeds one layer; the official graph computes its
masks in each block, so its blocks get the fusion and ours did not. Here each addition of such a mask gets its own
small constant, the region label of every token of every window, and the mask is computed from it in the graph
(labels differ: the mask's value, else 0), which the plugin folds per layer. Same values to the bit (checked before
the graph is changed); SwinIR-M x2 at 256² in bfloat16 (benchmarks/ov_layer_profile.py, before and after): 167 ->
149 fused bfloat16 subgraphs, 0.998x -> 1.02x the official graph's speed, and the IR 17 MB smaller (one 16 MB mask
out, 256 KB of labels per shifted block in).
"""

from __future__ import annotations

import numpy as np

MASK_RANK = 5  # (1, windows, 1, N, N): the grouped view the core adds the mask in


def region_labels(mask: np.ndarray) -> tuple[np.ndarray, float] | None:
    """(labels (windows, N), the mask's value) such that ``mask[w, i, j]`` is 0 where token i and j of window w
    have the same label and the value elsewhere; None if ``mask`` (windows, N, N) has no such form."""
    values = np.unique(mask)
    if values.size != 2 or 0.0 not in values:  # an all-zero constant is no mask to rebuild
        return None
    fill = float(values[values != 0][0])
    labels = np.argmax(mask == 0, axis=2).astype(np.float32)  # a token's label: its first same-region token
    rebuilt = np.where(labels[:, :, None] != labels[:, None, :], np.float32(fill), np.float32(0))
    return (labels, fill) if np.array_equal(rebuilt, mask) else None


def masks_computed_per_layer(ov, ov_model) -> int:
    """Replace, in ``ov_model`` (an ``openvino.Model``, changed in place), each constant mask an addition takes in
    the shape (1, windows, 1, N, N) by the mask computed from that addition's own labels; returns how many."""
    ops = ov.opset13
    changed = 0
    for node in ov_model.get_ordered_ops():
        if node.get_type_name() != "Add":
            continue
        for port in node.inputs():
            source = port.get_source_output().get_node()
            dims = list(source.get_output_shape(0)) if source.get_type_name() == "Constant" else []
            if len(dims) != MASK_RANK or dims[0] != 1 or dims[2] != 1 or dims[3] != dims[4]:
                continue
            found = region_labels(source.get_data().reshape(dims[1], dims[3], dims[4]))
            if found is None:
                continue
            labels, fill = found
            own = ops.constant(labels.copy())  # this layer's own copy: what lets the plugin fuse
            differs = ops.not_equal(ops.unsqueeze(own, ops.constant([2], dtype=ov.Type.i64)),
                                    ops.unsqueeze(own, ops.constant([1], dtype=ov.Type.i64)))
            mask = ops.multiply(ops.convert(differs, source.get_output_element_type(0)),
                                ops.constant(np.array(fill, dtype=source.get_data().dtype)))
            port.replace_source_output(ops.unsqueeze(mask, ops.constant([0, 2], dtype=ov.Type.i64)).output(0))
            changed += 1
    return changed
