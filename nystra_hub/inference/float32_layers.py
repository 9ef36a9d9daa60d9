"""``nystra_hub.inference.float32_layers``: the layers of an OpenVINO IR kept in float32 when it runs in bfloat16.

OpenVINO's CPU plugin in bfloat16 rounds every tensor between two layers to 8 significant bits, except those after
the graph's last convolution or matrix product. Where that rounding reaches the output almost undamped, a few
layers are kept in float32, each architecture naming them (benchmarks/openvino-bf16-quality.json):

- a tail (:meth:`~nystra_hub.models.RestorationModel.float32_tail`): every layer from that submodule's first
  operation on, except its products (:data:`PRODUCT_LAYER_TYPES`: convolutions, matrix products), which stay
  bfloat16 reading the float32 tensors. SwinIR: from the last residual group's convolution on (its residual add,
  the final norm, ``conv_after_body``, the long skip, the upsampler). The products are where the cost is: with them
  in float32 SwinIR-M x2 128² took 825 ms, without them 744 (761 with no tail), and the held-out change of the x2
  reference model was the same (-0.0080 and -0.0079 dB; all in bfloat16 -0.0123), its worst image 54.5 against
  52.8 dB from float32, both inside the budget (benchmarks/float32-layer-options/).
- residual stages (:meth:`~nystra_hub.models.RestorationModel.float32_residual_stages`): inside them, the additions
  a transformer block makes itself (its residual adds, Uformer's modulator), so the residual stream stays float32
  there, each addition on (rows, channels) views kept with it (:func:`additions_on_rows`: the plugin lays a
  rank-3 float32 addition out channels-last and reorders around it). Uformer: its first stage, whose stream reaches
  the output through the last skip connection (a tail did not help: its rounding is spread through the graph); the
  last decoder stage as well gained 0.0005 dB for 7 ms more at 256²; the stream in every stage cost 27% more time.

Each chosen layer carries the runtime attribute the plugin reads as "keep this layer's precision". Python cannot
create that attribute on a live ``openvino.Model``; the IR reader creates it from the XML, so it is written there.
The reader does so from OpenVINO 2026.3 on (2025.1 to 2026.2 read the XML and drop the mark: measured, the output
is then the all-bfloat16 one), and 2026.3 still computes the marked residual additions in bfloat16 (measured: the
same output with and without the marks; 2026.4.0 keeps them), hence the extra's lower bound, 2026.4.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import torch
from torch import nn

from nystra_hub.models import RestorationModel

# OpenVINO's DisablePrecisionConversion runtime attribute, "from any type to any type": the CPU plugin then keeps the
# layer in the precision of the graph (float32) under a bfloat16 inference precision; a float32 run is unaffected.
KEEP_PRECISION_ATTRIBUTE = {"name": "DisablePrecisionConversion", "version": "0", "value": "dynamic:dynamic"}
UNMARKED_LAYER_TYPES = ("Parameter", "Result", "Const")  # inputs, outputs and weights: no computation to keep
# Products run bfloat16 even in a tail: the plugin's bfloat16 speed is theirs, and the rounding that reaches the
# output is that of the tensors between layers, which the marked layers around them keep float32.
PRODUCT_LAYER_TYPES = ("Convolution", "GroupConvolution", "MatMul")
ADDITIONS = (torch.ops.aten.add, torch.ops.aten.add_)


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


def qualified_name(module_type: type | str) -> str:
    """``package.module.Class`` of a class, or the string torch.export records in its place."""
    if isinstance(module_type, str):
        return module_type
    return f"{module_type.__module__}.{module_type.__qualname__}"


def block_addition_names(graph: torch.fx.Graph, stages: Iterable[str],
                         block_types: tuple[type[nn.Module], ...]) -> set[str]:
    """The names of ``graph``'s additions made directly in the forward of a block (one of ``block_types``) inside
    one of the submodules ``stages``: the block's residual adds, not those of its attention or MLP."""
    stages, blocks = tuple(stages), {qualified_name(t) for t in block_types}
    names: set[str] = set()
    for node in graph.nodes:
        if node.op != "call_function" or getattr(node.target, "overloadpacket", None) not in ADDITIONS:
            continue
        stack = list(node.meta.get("nn_module_stack", {}).values())
        if not stack:
            continue
        path, module_type = stack[-1]
        if qualified_name(module_type) in blocks and any(in_module(path, stage) for stage in stages):
            names.add(node.name)
    return names


def float32_plan(model: RestorationModel | None) -> dict | None:
    """What ``model`` keeps in float32 under bfloat16 (``{"tail_from", "residual_stages", "products"}``: the
    products of those layers run bfloat16), None for nothing."""
    if model is None or (model.float32_tail() is None and not model.float32_residual_stages()):
        return None
    return {"tail_from": model.float32_tail(), "residual_stages": list(model.float32_residual_stages()),
            "products": "bfloat16"}


def float32_node_names(graph: torch.fx.Graph, model: RestorationModel | None) -> set[str]:
    """The FX operations of ``model``'s exported ``graph`` its :func:`float32_plan` keeps in float32."""
    plan = float32_plan(model)
    if plan is None:
        return set()
    return (tail_node_names(graph, plan["tail_from"])
            | block_addition_names(graph, plan["residual_stages"], model.block_types))


def residual_addition_names(graph: torch.fx.Graph, model: RestorationModel | None) -> set[str]:
    """The FX additions of ``model``'s exported ``graph`` that keep its residual stages' stream in float32."""
    plan = float32_plan(model)
    if plan is None:
        return set()
    return block_addition_names(graph, plan["residual_stages"], model.block_types)


def additions_on_rows(ov, ov_model, node_names: set[str]) -> int:
    """Make each addition of ``ov_model`` (an ``openvino.Model``, changed in place) converted from the FX
    operations ``node_names`` add two (rows, channels) views of its (batch, tokens, channels) operands; returns how
    many. The CPU plugin lays a float32 rank-3 addition out channels-last, reading the tokens axis as channels, so
    each kept addition cost two reorders of the whole stream and handed that layout down the graph (reorders in
    the last decoder stage too: Uformer-B 256², 10 ms around its first stage's 2 kept additions, 5 ms on rows);
    a rank-2 addition has one layout. Views of the same values: the output is unchanged."""
    ops = ov.opset13
    changed = 0
    for node in ov_model.get_ordered_ops():
        if node.get_type_name() != "Add" or node.get_friendly_name().split("/")[0] not in node_names:
            continue
        shape = node.get_output_partial_shape(0)
        operands = [port.get_source_output().get_partial_shape() for port in node.inputs()]
        if shape.is_dynamic or len(shape) < 3 or any(operand != shape for operand in operands):
            continue  # a broadcast or an open shape: no view of both operands
        dims = [int(d) for d in shape.to_shape()]
        consumers = list(node.output(0).get_target_inputs())
        rows = ops.constant(np.array([-1, dims[-1]], dtype=np.int64))
        # the views are named after the addition so that keep_float32 marks them with it: an unmarked view would
        # round the stream to bfloat16 between two kept additions
        name = node.get_friendly_name().split("/")[0]
        for i, port in enumerate(node.inputs()):
            view = ops.reshape(port.get_source_output(), rows, special_zero=False)
            view.set_friendly_name(f"{name}/rows_{i}/Reshape")
            port.replace_source_output(view.output(0))
        node.validate_and_infer_types()
        back = ops.reshape(node.output(0), ops.constant(np.array(dims, dtype=np.int64)), special_zero=False)
        back.set_friendly_name(f"{name}/tokens/Reshape")
        for consumer in consumers:
            consumer.replace_source_output(back.output(0))
        changed += 1
    return changed


def keep_float32(xml_path: Path, node_names: set[str]) -> int:
    """Mark the layers of the IR ``xml_path`` converted from the FX operations ``node_names`` to keep float32
    (OpenVINO names each layer ``<fx node>/<aten op>/<layer type>``), their products excepted; returns how many
    layers were marked."""
    if not node_names:
        return 0
    tree = ElementTree.parse(xml_path)
    marked = 0
    for layer in tree.getroot().iter("layer"):
        if (layer.get("type") in UNMARKED_LAYER_TYPES + PRODUCT_LAYER_TYPES
                or layer.get("name", "").split("/")[0] not in node_names):
            continue
        rt_info = layer.find("rt_info")
        if rt_info is None:
            rt_info = ElementTree.SubElement(layer, "rt_info")
        ElementTree.SubElement(rt_info, "attribute", KEEP_PRECISION_ATTRIBUTE)
        marked += 1
    tree.write(xml_path, encoding="utf-8", xml_declaration=True)
    return marked
