"""The card of a shipped reference model (``reference_models/*/README.md``) from its ``reference.json``: its
held-out quality in the model-index, whether its attention matters, what PnP-Nystra costs on it, how it was
trained."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

from nystra_hub.io.cards.format import (
    INSTALL,
    LIBRARY_NAME,
    PIPELINE_TAG,
    QUALITY_ARMS,
    TASK_TAGS,
    arch_title,
    attention_verdict,
    check_card,
    eval_result,
    image_sets,
    paper_tags,
    papers,
    public_command,
    run_commit,
    run_date,
    run_name,
    run_page_link,
    signed,
    window_limits,
)

REFERENCE_LICENSE = "mit"  # the reference models are this repository's work, under its licence (pyproject.toml)


def build_reference_card(info: dict, fidelity: list[dict] | None = None, *, command: str | None = None) -> ModelCard:
    """The card (``README.md``) of a reference model folder from its ``reference.json`` (``info``): model-index
    with its held-out PSNR and SSIM on the named test images, the attention-matters ablations, the training
    command, and what PnP-Nystra costs on it when ``fidelity`` reports of it are given (their ``_page`` links are
    relative to the model's folder)."""
    arch, heldout, proto = info["arch"], info["heldout"], info["heldout"]["protocol"]
    sets = image_sets(info["heldout_images"])
    protocol = f"{proto['name']}: {proto.get('channel')}, border {proto.get('border_crop', 0)}"
    task = info["degradation"]["description"]
    results = [eval_result(task, "-".join(sets.lower().split(" + ")), f"{sets} (held out)", metric,
                       f"{label} ({protocol})", heldout[metric])
               for metric, label in (("psnr", "PSNR"), ("ssim", "SSIM"))]
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG, license=REFERENCE_LICENSE,
                         tags=["image-restoration", "pnp-nystra", "window-attention", arch, info["task"],
                               *TASK_TAGS.get(info["task"], []), "reference-model", *paper_tags(arch)],
                         model_name=info["name"], eval_results=results, architecture=arch, task=info["task"],
                         scale=info["scale"], training_window=info["window"])
    body = f"""
# {info['name']}: a small {arch_title(arch)} trained by nystra_hub (reference model)

| held-out images | protocol | PSNR | SSIM | input ({heldout['input_baseline']}) |
|---|---|---|---|---|
| {len(info['heldout_images'])} of {sets} | {protocol} | {heldout['psnr']:.3f} dB | {heldout['ssim']:.4f} | \
{heldout['input_psnr']:.3f} dB, SSIM {heldout['input_ssim']:.4f} |

A {info.get('parameters', '?')}-parameter {arch_title(arch)} for {task}, trained by this repository so that the
quality of approximate attention can be measured on *trained* weights where the released ones cannot be downloaded.
It is a stand-in for measurements (small and briefly trained), not a model to restore images with.

{_ablations_block(info)}

{_reference_fidelity(fidelity or [])}

{INSTALL}

```python
import nystra_hub
from PIL import Image

model = nystra_hub.load("reference_models/{info['name']}")     # offline; attn_impl="nystra" for PnP-Nystra
restored = nystra_hub.restore(model, Image.open("input.png"))
```

## Training

{_training_block(info)}

{papers(arch)}
""" + (f"\nRendered from `reference.json` by `{command}`.\n" if command else "")
    check_card(body, results)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _ablations_block(info: dict) -> str:
    """Whether the reference model's attention matters: the verdict and the table of its two ablations."""
    ablations = info.get("ablations") or {}
    passed, run, _ = attention_verdict(ablations)
    if not run:
        return "**Does its attention matter?** Not checked."
    failed = "both checks" if passed == 0 and run == 2 else f"{run - passed} of {run} checks"
    verdict = ("Yes: it passes both checks." if passed == run else f"**No: it fails {failed}**: approximation "
               "costs measured on it say little about weights whose attention matters.")
    limits = ablations.get("thresholds_db", {})
    rows = [f"| {e['what']} | {e['psnr']:.3f} | {signed(e['change_db'])} | ≥ {limits.get(k)} | "
            f"{'passes' if e.get('matters') else 'fails'} |"
            for k, e in ((k, ablations.get(k)) for k in ("position_bias_dropped", "window_x2")) if e]
    trained = ablations.get("trained_psnr", info["heldout"]["psnr"])
    limited = window_limits(ablations, info.get("training"))
    return "\n".join([f"**Does its attention matter?** {verdict}{limited} Held-out PSNR when "
                      f"part of its attention is changed ({trained:.3f} dB as trained):", "",
                      "| check | PSNR (dB) | change (dB) | size of change that passes (dB) | verdict |",
                      "|---|---|---|---|---|", *rows])


def _training_block(info: dict) -> str:
    """The training command, its settings and data, and the model's notes."""
    training = info["training"]
    devices = ", ".join(dict.fromkeys(f"{p.get('device_name')} ({p.get('device')})"
                                      for p in training.get("pieces", []))) or training.get("device")
    init = training.get("init_from")
    notes = info.get("notes", "")
    return "\n\n".join(part for part in [
        f"```bash\n{public_command(info['command'])}\n```",
        f"{training['steps']} steps of batch {training['batch']} on {training.get('patch')}-px crops, learning rate "
        f"{training['lr']} ({training.get('optimizer')}), loss {training.get('loss')}, {training.get('augmentation')};"
        f" seed {training.get('seed')}, on {devices}, {training.get('train_seconds')} s. Trained on "
        f"{len(info['train_images'])} images of {image_sets(info['train_images'])}; the "
        f"{len(info['heldout_images'])} held-out images of {image_sets(info['heldout_images'])} were never seen in "
        "training.",
        (f"Fine-tuned from the weights trained by `{public_command(init['command'])}` ({init.get('git', '')})."
         if init else ""),
        notes if not notes or notes.endswith(".") else notes + "."] if part)


def _reference_fidelity(reports: list[dict]) -> str:
    if not reports:
        return "**PnP-Nystra on it:** not measured."
    report = max(reports, key=lambda r: len(r["images"]))
    window, arms = report.get("recipe", {}).get("window"), report["arms"]
    names = [n.format(W=window) for n in QUALITY_ARMS]
    parts = [f"`{n}` {signed(arms[n]['delta_psnr_gt'])} dB" for n in names if n in arms and not arms[n].get("error")]
    link = run_page_link(report)
    page = f"[{run_name(report)}]({link})" if link else run_name(report)
    return (f"**PnP-Nystra on it** (change of held-out PSNR against exact attention, {len(report['images'])} "
            f"images; {page}, {run_date(report)}, commit {run_commit(report)[0]}): " + ", ".join(parts) + ".")
