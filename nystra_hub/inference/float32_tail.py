"""``nystra_hub.inference.float32_tail``: the last layers of an OpenVINO IR kept in float32 when it runs in bfloat16.

OpenVINO's CPU plugin in bfloat16 rounds every tensor between two layers to 8 significant bits, except those after
the graph's last convolution or matrix product. For SwinIR the rounding in the layers just before that (the last
residual group's convolution, the final norm, ``conv_after_body``, the long skip, the upsampler) reaches the output
almost undamped: keeping them float32 takes the x2 reference model's bfloat16 output from 52.8 to 54.8 dB of its
float32 one (mean of 4 held-out images), and its held-out PSNR change from -0.012 to -0.008 dB, for about 4% more
time (about 2% of the operations; benchmarks/openvino-bf16-quality.json). Each architecture names where its tail begins
(:meth:`~nystra_hub.models.RestorationModel.float32_tail`); from that submodule's first operation on, every
layer of the IR carries the runtime attribute the plugin reads as "keep this layer's precision". Python cannot
create that attribute on a live ``openvino.Model``; the IR reader creates it from the XML, so it is written there.
The reader does so from OpenVINO 2026.3 on (2025.1 to 2026.2 read the XML and drop the mark: measured, the output
is then the all-bfloat16 one), hence the extra's lower bound.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import torch

# OpenVINO's DisablePrecisionConversion runtime attribute, "from any type to any type": the CPU plugin then keeps the
# layer in the precision of the graph (float32) under a bfloat16 inference precision; a float32 run is unaffected.
KEEP_PRECISION_ATTRIBUTE = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:dynamic"}
UNMARKED_LAYER_TYPES = ("Parameter", "Result", "Const")  # inputs, outputs and weights: no computation to keep


def in_module(path: str, module: str) -> bool:
    """Whether the submodule ``path`` (dotted, maybe under a wrapper's prefix: ``model.layers.3.conv.0``) is
    ``module`` or inside it."""
    return f".{module}." in f".{path}."


def tail_node_names(graph: torch.fx.Graph, module: str | None) -> set[str]:
    """The names of ``graph``'s operations from the first one inside ``module`` on, in graph order (empty when
    ``module`` is None or runs nothing)."""
    names: set[str] = set()
    if module is None:
        return names
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        stack = node.meta.get("nn_module_stack", {}).values()
        if names or any(in_module(path, module) for path, _ in stack):
            names.add(node.name)
    return names


def keep_float32(xml_path: Path, node_names: set[str]) -> int:
    """Mark the layers of the IR ``xml_path`` converted from the FX operations ``node_names`` to keep float32
    (OpenVINO names each layer ``<fx node>/<aten op>/<layer type>``); returns how many layers were marked."""
    if not node_names:
        return 0
    tree = ElementTree.parse(xml_path)
    marked = 0
    for layer in tree.getroot().iter("layer"):
        if layer.get("type") in UNMARKED_LAYER_TYPES or layer.get("name", "").split("/")[0] not in node_names:
            continue
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ElementTree.SubElement(layer, "rt_info")
        ElementTree.SubElement(rt_info, "attribute", KEEP_PRECISION_ATTRIBUTE)
        marked += 1
    tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    return marked
