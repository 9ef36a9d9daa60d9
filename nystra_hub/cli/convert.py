"""``nystra-hub convert``: a released checkpoint -> a hub folder (config.json, model.safetensors, README.md).

    nystra-hub convert 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth --out swinir-x4      # detected: swinir-x4
    nystra-hub convert 001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth --variant swinir-x4 --out swinir-x4
    nystra-hub convert checkpoint.pth --arch swinir --kwargs case.json --out tiny      # not a catalogue variant
    nystra-hub convert ... --push-to-hub nystra/swinir-x4                               # then publish the folder

The checkpoint is read in any released container, checked strictly against the named configuration (without
--variant and --arch: the one detected from its keys and shapes, see :mod:`nystra_hub.io.detect`; a mismatch lists
the differing keys and exits with status 1) and written with its official keys and tensors unchanged.
``--attn``/``--nystra KEY=VALUE``/``--plan`` set the folder's default attention. The card names the file it was
converted from and its sha256; it calls the weights "released" only when that sha256 is the catalogued release's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from nystra_hub.cli.options import add_attention_arguments, parse_nystra
from nystra_hub.io.cards import build_custom_card, build_model_card
from nystra_hub.io.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    file_sha256,
    load_state_dict_strict,
    read_state_dict,
)
from nystra_hub.io.detect import detect_checkpoint
from nystra_hub.io.hub import CARD_NAME, CONFIG_NAME, default_repo_id, no_param_init, save_hub_folder
from nystra_hub.io.variants import get_variant
from nystra_hub.models import ARCHITECTURES, build_model


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="released checkpoint (.pth in any released container, or .safetensors)")
    what = parser.add_mutually_exclusive_group()  # neither: detected from the checkpoint's keys and shapes
    what.add_argument("--variant", help="catalogue variant the checkpoint belongs to (see nystra-hub list; "
                                        "default: detected)")
    what.add_argument("--arch", choices=sorted(ARCHITECTURES), help="architecture of a non-catalogue checkpoint")
    parser.add_argument(
        "--kwargs", metavar="JSON",
        help="with --arch: official constructor arguments, as a JSON file (a golden case.json with "
             "'official_constructor_kwargs', a hub config.json with 'official_kwargs', or a plain object) "
             "or an inline JSON object; without --arch and --variant: arguments that settle what detection "
             "leaves open, e.g. '{\"img_range\": 255.0}'",
    )
    parser.add_argument("--out", required=True, help="output folder (created; existing files are replaced)")
    add_attention_arguments(parser, attn_default="softmax",
                            attn_help="the folder's default attention: softmax (exact, as trained), sdpa or nystra "
                                      "(default: softmax)")
    parser.add_argument("--plan", metavar="FILE", help="per-layer attention plan (JSON) to store as nystra_plan")
    parser.add_argument("--no-card", action="store_true", help="do not write README.md")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="publish the folder to this Hugging Face repo")
    parser.add_argument("--private", action="store_true", help="with --push-to-hub: create a private repo")
    parser.add_argument("--token", help="with --push-to-hub: Hugging Face token (default: the stored login)")


def _json_arg(value: str, what: str):
    path = Path(value)
    try:
        return json.loads(path.read_text()) if path.is_file() else json.loads(value)
    except json.JSONDecodeError as err:
        raise ValueError(f"{what}: neither a JSON file nor a JSON object ({err})") from None


def official_kwargs_from(value: str) -> dict:
    data = _json_arg(value, "--kwargs")
    if not isinstance(data, dict):
        raise ValueError("--kwargs must be a JSON object")
    for key in ("official_constructor_kwargs", "official_kwargs"):
        if isinstance(data.get(key), dict):
            return dict(data[key])
    return data


def convert(
    checkpoint: str | Path,
    out: str | Path,
    variant: str | None = None,
    arch: str | None = None,
    official_kwargs: dict | None = None,
    attn_impl: str = "softmax",
    nystra: dict | None = None,
    plan: dict | None = None,
    card: bool = True,
    repo_id: str | None = None,
) -> Path:
    """Convert ``checkpoint`` into a hub folder at ``out``; raises CheckpointMismatchError on a mismatch."""
    if (variant is None) == (arch is None):
        raise ValueError("give exactly one of variant or arch (nystra_hub.detect_checkpoint infers them)")
    if variant is not None:
        v = get_variant(variant)
        arch, official_kwargs, variant = v.arch, dict(v.kwargs), v.name
    elif official_kwargs is None:
        raise ValueError("arch needs official_kwargs (the official constructor arguments)")
    state = read_state_dict(checkpoint)  # first: a missing or unreadable file fails before a (big) model is built
    with no_param_init():  # every parameter is loaded (strictly) from the checkpoint below
        model = build_model(arch, attn_impl=attn_impl, nystra=nystra, **official_kwargs)
    load_state_dict_strict(model, state, source=str(checkpoint))
    if variant is not None:
        model.update_provenance(variant=variant)
    # The released tensors are stored as read (keys official, values and dtypes unchanged); the only exception is
    # the architecture's documented adaptation (SwinIR: an attn_mask saved for another training patch).
    state = model.adapt_state_dict(dict(state))
    folder = save_hub_folder(model, out, variant=variant, card=False, state_dict=state, plan=plan, repo_id=repo_id)
    if card:
        write_card(folder, Path(checkpoint), variant)
    return folder


def write_card(folder: Path, checkpoint: Path, variant: str | None) -> None:
    """README.md of a converted folder: the card names the file (not the path: a card may be published) and its
    sha256, since convert cannot know whether a user's file is the release."""
    source = dict(converted_from=checkpoint.name, sha256=file_sha256(checkpoint))
    if variant is not None:
        card = build_model_card(variant, **source)
    else:
        cfg = json.loads((folder / CONFIG_NAME).read_text())
        card = build_custom_card(cfg["arch"], cfg["official_kwargs"], **source)
    card.save(str(folder / CARD_NAME))


def push_to_hub(folder: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create ``repo_id`` (if needed) and upload the folder; returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             commit_message=f"Upload {Path(folder).name} with nystra-hub convert")
    return str(getattr(info, "commit_url", info))


def run(args) -> int:
    def fail(message: str) -> int:
        print(f"nystra-hub convert: error: {message}", file=sys.stderr)
        return 1

    variant, arch, detected = args.variant, args.arch, False
    try:
        official_kwargs = official_kwargs_from(args.kwargs) if args.kwargs else None
        if variant and official_kwargs is not None:
            return fail("--kwargs goes with --arch; a --variant has its own constructor arguments")
        if arch and official_kwargs is None:
            return fail("--arch needs --kwargs (the official constructor arguments)")
        if not variant and not arch:  # detect: a catalogue variant, or the architecture and its arguments
            detection = detect_checkpoint(args.checkpoint).settle(**(official_kwargs or {}))
            print(detection.describe())
            variant, detected = detection.variant, True
            arch, official_kwargs = (None, None) if variant else (detection.arch, detection.kwargs)
        nystra = parse_nystra(args.nystra) or None
        plan = _json_arg(args.plan, "--plan") if args.plan else None
        repo_id = args.push_to_hub or (default_repo_id(variant) if variant else None)
        out = convert(args.checkpoint, args.out, variant=variant, arch=arch,
                      official_kwargs=official_kwargs, attn_impl=args.attn, nystra=nystra, plan=plan,
                      card=not args.no_card, repo_id=repo_id)
    except CheckpointMismatchError as err:
        target = f"variant {variant}" if variant else f"the {'detected' if detected else 'given'} {arch} configuration"
        return fail(f"{args.checkpoint} is not a checkpoint of {target}.\n{err}")
    except (CheckpointError, FileNotFoundError, KeyError, ValueError, TypeError) as err:
        return fail(str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err))
    print(f"wrote {out} ({', '.join(sorted(p.name for p in out.iterdir()))})")
    if args.push_to_hub:
        try:
            url = push_to_hub(out, args.push_to_hub, private=args.private, token=args.token)
        except Exception as err:  # network/auth errors come in many types; report them cleanly
            return fail(f"upload to {args.push_to_hub} failed: {type(err).__name__}: {err}")
        print(f"pushed to {args.push_to_hub}: {url}")
    return 0
