"""Command-line options shared by the ``nystra-hub`` commands: one spelling, one meaning, one help text each.

- ``--attn {softmax,sdpa,nystra,flex}``: the attention implementation (the ``attn_impl`` argument of the Python API);
- ``--nystra KEY=VALUE`` (repeatable): one Nyström parameter each (landmarks, iters, tau, bias, mask);
- ``--device``: auto (CUDA when available), cpu, cuda, cuda:N.
"""

from __future__ import annotations

import argparse

import torch

from nystra_hub.attention import ATTN_IMPLS, FLEX_IMPL, NystraParams

NYSTRA_PARAM_NAMES = tuple(NystraParams().as_dict())
# The package's own implementations: the built-ins and "flex" (registered apart from them: it needs dynamo, see
# nystra_hub.attention.flex). The comparison baselines are measurement arms, not choices for a user's images.
ATTN_CHOICES = (*ATTN_IMPLS, FLEX_IMPL)

ATTN_HELP = ("attention implementation: softmax (exact, as trained), sdpa (exact, fused kernel), nystra (PnP-Nystra) "
             "or flex (exact, FlexAttention: a fused kernel under torch.compile, slow without)")
NYSTRA_HELP = (f"one Nyström parameter, KEY=VALUE with KEY one of {', '.join(NYSTRA_PARAM_NAMES)}, e.g. "
               "--nystra landmarks=16 --nystra iters=2 (repeatable; default: the model's)")
# Said once when --attn nystra is chosen: at the trained window it was measured slower than exact everywhere (README,
# "Measured, not assumed"; benchmarks/README.md for the H200 run), and a user picking it by name expects speed.
NYSTRA_SPEED_NOTE = (
    "note: --attn nystra at the trained window was measured slower than exact attention on every model (2-core CPU: "
    "SwinIR-M x2 1.05-1.08x exact's time at 128-256 px; one H200: SwinIR-M x2 1.5x, Uformer-B 3.0x, "
    "DehazeFormer-B 1.8x); it pays only at enlarged windows (a per-layer plan)"
)
DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N (default: %(default)s)"

# Help for options several commands share, used where a command module gives none (so every option has one).
COMMON_OPTION_HELP = {
    "seed": "random seed (default: %(default)s)",
    "threads": "torch CPU threads (default: torch's choice)",
    "batch": "images per forward (default: %(default)s)",
}


def add_attention_arguments(parser, attn_default: str | None = None, attn_help: str = ATTN_HELP) -> None:
    """``--attn`` and ``--nystra KEY=VALUE`` (parsed with :func:`parse_nystra`)."""
    parser.add_argument("--attn", choices=list(ATTN_CHOICES), default=attn_default, help=attn_help)
    parser.add_argument("--nystra", action="append", default=[], metavar="KEY=VALUE", help=NYSTRA_HELP)


LOADABLE_MODEL_HELP = ("anything nystra_hub.load takes: a released checkpoint file, a hub folder (e.g. "
                       "reference_models/swinir-ref-x2), a catalogue variant with --weights, a repo id")


def add_loadable_model_arguments(parser, attn_help: str) -> None:
    """``--model`` (required, anything :func:`nystra_hub.load` takes), ``--weights`` and the attention options:
    the model of a command that loads one and may switch its attention (export, eval)."""
    parser.add_argument("--model", required=True, metavar="NAME_OR_PATH", help=LOADABLE_MODEL_HELP)
    parser.add_argument("--weights", metavar="FILE", help="the released checkpoint of a catalogue variant --model")
    add_attention_arguments(parser, attn_help=attn_help)


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_nystra(values: list[str]) -> dict:
    """``--nystra`` values into a dict of Nyström parameters. Each value is ``KEY=VALUE``; anything else, and an
    unknown key, raises ValueError saying what is expected."""
    params: dict = {}
    for value in values:
        text = value.strip()
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--nystra takes KEY=VALUE (e.g. landmarks=16), got {value!r}")
        params[key.strip()] = _parse_value(raw.strip())
    unknown = sorted(set(params) - set(NYSTRA_PARAM_NAMES))
    if unknown:
        raise ValueError(f"--nystra: unknown parameter(s) {unknown}; known: {list(NYSTRA_PARAM_NAMES)}")
    return params


def positive_int(text: str) -> int:
    """argparse type: an int >= 1, refused with the value otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def resolve_device(name: str) -> torch.device:
    """``--device``: "auto" is CUDA when available, else the CPU; an unavailable CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available")
    return device


def fill_missing_help(parser: argparse.ArgumentParser) -> None:
    """Give the shared options of :data:`COMMON_OPTION_HELP` their help text where a command left it out."""
    for action in parser._actions:
        if action.help is None and action.dest in COMMON_OPTION_HELP:
            action.help = COMMON_OPTION_HELP[action.dest]
