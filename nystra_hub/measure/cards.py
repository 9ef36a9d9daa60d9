"""Model cards (``README.md`` of a hub folder) rendered from the catalogue with huggingface_hub's ModelCard.

Front matter: ``library_name: nystra_hub``, ``pipeline_tag: image-to-image``, tags, license, the original
release (repository and file) and, when measurements are given, a ``model-index`` with their metrics. The card
never states a number that was not measured: without measurements it says so plainly.

``nystra-hub cards VARIANT ... [--all] [--out-dir model_cards]`` writes ``<out-dir>/<variant>.md``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..models import ARCHITECTURES
from ..variants import VARIANTS, Variant, get_variant
from .plots import plot_bench

LIBRARY_NAME = "nystra_hub"
PIPELINE_TAG = "image-to-image"

_TASK_TAGS = {
    "classical-sr": ["super-resolution"],
    "lightweight-sr": ["super-resolution"],
    "real-sr": ["super-resolution", "real-world-super-resolution"],
    "denoise-gray": ["denoising"],
    "denoise-color": ["denoising"],
    "jpeg-gray": ["jpeg-artifact-removal"],
    "jpeg-color": ["jpeg-artifact-removal"],
    "denoise-real": ["denoising"],
    "deblur": ["deblurring"],
    "dehaze": ["dehazing"],
}
NO_MEASUREMENTS = (
    "No measurements are included in this card: no speed or quality numbers have been measured for this "
    "packaging. With exact attention (`attn_impl=\"softmax\"`) the model computes what the original "
    "implementation computes; PnP-Nystra attention changes the output, so its quality has to be measured."
)


def _title(arch: str) -> str:
    return ARCHITECTURES[arch].spec.title


def _variant(variant: str | Variant) -> Variant:
    return variant if isinstance(variant, Variant) else get_variant(variant)


def card_tags(v: Variant) -> list[str]:
    return ["image-restoration", "pnp-nystra", "window-attention", v.arch, v.task, *_TASK_TAGS.get(v.task, []),
            *v.tags, "timm", "transformers"]


def build_model_card(variant: str | Variant, measurements: dict | None = None) -> ModelCard:
    """The card of a catalogue variant. ``measurements`` (None for now) adds a model-index and result tables;
    see :func:`render_measurements` for the accepted form."""
    v = _variant(variant)
    eval_results, results_md = render_measurements(v, measurements)
    return ModelCard(f"---\n{_card_data(v, eval_results).to_yaml()}\n---\n{_card_body(v, results_md)}")


def _card_data(v: Variant, eval_results: list[EvalResult] | None) -> ModelCardData:
    """The card's front matter."""
    return ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        license=v.license.lower() or None,
        tags=card_tags(v),
        model_name=v.name,
        eval_results=eval_results,
        original_repository=v.source or None,
        original_checkpoint=v.official_file,
        original_checkpoint_released=v.released,
        architecture=v.arch,
        task=v.task,
        scale=v.scale,
        training_window=v.window,
        training_patch=v.patch,
    )


def _base_model_table(v: Variant) -> str:
    """The "Base model" table: architecture, task, training setup, the original release."""
    rows = [
        ("Architecture", f"{_title(v.arch)} (`{v.arch}`)"),
        ("Task", v.task_description),
        ("Scale", f"x{v.scale}"),
        ("Input channels", str(v.in_chans)),
        ("Training window", str(v.window)),
        ("Training patch", str(v.patch)),
        ("Training data", v.dataset or "not stated"),
    ]
    if v.level is not None:
        rows.append(("Noise sigma" if v.task.startswith("denoise") else "JPEG quality", str(v.level)))
    rows += [
        ("Original checkpoint", f"`{v.official_file}`" + ("" if v.released else " (no released file of this "
                                                            "configuration is listed)")),
        ("Original code", v.source or "not stated"),
        ("License", v.license or "not stated"),
    ]
    if v.notes:
        rows.append(("Notes", v.notes))
    return "\n".join(["| | |", "|---|---|", *(f"| {k} | {val} |" for k, val in rows)])


def _card_body(v: Variant, results_md: str) -> str:
    """The card's markdown: what the model is, its base model, usage, the measurements."""
    repo_id = f"nystra/{v.name}"
    table = _base_model_table(v)
    intro = (f"The released {_title(v.arch)} weights" if v.released
             else f"The paper's {_title(v.arch)} configuration (no official checkpoint of it is listed)")
    low, high = ARCHITECTURES[v.arch].spec.value_range
    value_range = f"[{low:g}, {high:g}]"
    return f"""
# {v.name}: {_title(v.arch)}, {v.task_description}

{intro} in the official state-dict format (keys and tensors as released), packaged for
`nystra_hub`, 🤗 transformers and timm, with a switch between exact attention and training-free PnP-Nystra
(Nyström) window attention.

## Base model

{table}

Paper: {ARCHITECTURES[v.arch].spec.paper}.

## Usage

```python
import nystra_hub  # registers the transformers and timm classes

model = nystra_hub.load_pretrained("{repo_id}")                        # exact attention
model = nystra_hub.load_pretrained("{repo_id}", attn_impl="nystra")    # PnP-Nystra attention

from transformers import AutoModel
model = AutoModel.from_pretrained("{repo_id}", attn_impl="nystra")      # outputs.reconstruction

import timm
model = timm.create_model("{v.timm_name}", pretrained=True, attn_impl="nystra")
model = timm.create_model("hf-hub:{repo_id}", pretrained=True)
```

`model(x)` is the network's forward on a float batch in {value_range}; `model.official_inference(x)` runs the
official test protocol (padding, cropping, clamping) on images in [0, 1], and `nystra_hub.restore(...)` handles
image files, tiling and integer images.

## Measurements

{results_md}
"""


def build_custom_card(arch: str, official_kwargs: dict) -> ModelCard:
    """A short card for a configuration that is not in the catalogue (e.g. a converted test model)."""
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG,
                         tags=["image-restoration", "pnp-nystra", arch], architecture=arch)
    body = f"""
# Custom {_title(arch)} configuration

A {_title(arch)} model converted with `nystra-hub convert` from explicit constructor arguments; it is not one of
the catalogued releases.

```json
{json.dumps(official_kwargs, indent=2)}
```

## Measurements

{NO_MEASUREMENTS}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def render_measurements(v: Variant, measurements: dict | None) -> tuple[list[EvalResult] | None, str]:
    """(model-index entries, markdown) for ``measurements``; ``(None, NO_MEASUREMENTS)`` when there are none.

    Keys (all optional, unknown keys raise so that nothing is silently left out of a card):

    - ``results``: ``[{"dataset": "Set5", "metric": "PSNR", "value": 38.1, "attn_impl": "softmax", ...}]``;
    - ``bench``: ``nystra-hub bench`` reports (JSON dicts, one per device); one speed table per report and size,
      and a GPU section that says "not measured" when no report ran on CUDA;
    - ``fidelity``: ``nystra-hub fidelity`` reports (JSON dicts) of the trained reference models;
    - ``gpu``: ``benchmarks/gpu.sh`` reports (JSON dicts); the variant's case of each becomes a GPU section;
    - ``plots``: ``[{"path": "swinir-x2-speed-cpu.png", "caption": "..."}]`` (paths relative to the card).
    """
    if not measurements:
        return None, NO_MEASUREMENTS
    unknown = sorted(set(measurements) - {"results", "bench", "fidelity", "gpu", "plots", "command"})
    if unknown:
        raise NotImplementedError(f"rendering of measurement section(s) {unknown} is not implemented yet")
    eval_results: list[EvalResult] = []
    sections: list[str] = []
    if measurements.get("results"):
        sections.append(_render_results(v, measurements["results"], eval_results))
    if "bench" in measurements:
        sections.append(_render_bench(v, measurements["bench"], eval_results, bool(measurements.get("gpu"))))
    for report in measurements.get("gpu") or []:
        sections.append(render_gpu(v, report))
    if measurements.get("fidelity"):
        sections.append(_render_fidelity(v, measurements["fidelity"], eval_results))
    for plot in measurements.get("plots") or []:
        sections.append(f"![{plot.get('caption', '')}]({plot['path']})\n\n*{plot.get('caption', '')}*")
    if measurements.get("command"):
        sections.append(f"This card was generated from the JSON above by `{measurements['command']}`.")
    return eval_results or None, "\n\n".join(sections)


def _render_results(v: Variant, rows: list[dict], eval_results: list[EvalResult]) -> str:
    lines = ["| dataset | metric | value | attention |", "|---|---|---|---|"]
    for row in rows:
        missing = [k for k in ("dataset", "metric", "value") if k not in row]
        if missing:
            raise ValueError(f"measurement {row} lacks {missing}")
        impl = row.get("attn_impl", "softmax")
        eval_results.append(EvalResult(
            task_type=PIPELINE_TAG, task_name=v.task_description, dataset_type=str(row["dataset"]).lower(),
            dataset_name=str(row["dataset"]), dataset_split=row.get("split"), metric_type=str(row["metric"]).lower(),
            metric_name=f"{row['metric']} ({impl})", metric_value=row["value"],
        ))
        lines.append(f"| {row['dataset']} | {row['metric']} | {row['value']} | {impl} |")
    return "\n".join(lines)


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _machine(report: dict) -> str:
    env, settings = report["environment"], report["settings"]
    if str(settings["device"]).startswith("cuda"):
        return (f"{env.get('device_name')} (CUDA {env.get('cuda')}), torch {env.get('torch')}, "
                f"{settings['dtype']}, batch {settings['batch']}")
    return (f"{env.get('cpu_model')} ({env.get('cpu_count')} logical cores), {settings['threads']} torch "
            f"threads, torch {env.get('torch')}, {settings['dtype']}, batch {settings['batch']}")


def _render_bench(v: Variant, reports: list[dict], eval_results: list[EvalResult], gpu_elsewhere: bool = False) -> str:
    out = ["### Speed",
           "Every arm of a table ran in one process, interleaved round-robin, after warm-up; times are medians. "
           "Speedups are ratios of medians against three baselines, named in each column: **(a)** this checkpoint "
           "as trained (exact softmax attention at the trained window, in nystra_hub's code), **(f)** the same "
           "checkpoint run through spandrel, i.e. the official code path most users run today, and **(c)** exact "
           "attention at the enlarged window with bias and masks dropped, the baseline of the paper's speedups. "
           "The reference arms (a), (f), (c) are the exact models; (d), (e), (e') approximate attention (quality "
           "below). The random-weight input does not change the timing of these models."]
    cuda = [r for r in reports if str(r["settings"]["device"]).startswith("cuda")]
    for report in reports:
        refs = report.get("references", {})
        settings = report["settings"]
        device = "GPU" if str(settings["device"]).startswith("cuda") else "CPU"
        out.append(f"#### {device}: {_machine(report)}")
        out.append(f"Command: `{report['command']}` ({settings['warmup']} warm-up + {settings['runs']} timed rounds,"
                   f" {report['created']}, nystra_hub {report['environment'].get('git_commit', '')}).")
        for result in report["results"]:
            shape = "×".join(str(d) for d in result["input_shape"][2:])
            out.append(f"Input {shape} ({settings['protocol']} protocol):")
            heads = ["arm", "median ms"] + [f"speedup vs ({k}) {refs[k]}" for k in ("a", "f", "c") if refs.get(k)]
            heads += ["peak memory MiB", "GFLOP"]
            lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
            for name, entry in result["arms"].items():
                arm = report["arms"].get(name, {})
                label = f"({arm['letter']}) {name}" if arm.get("letter") else name
                if not entry.get("times_s"):
                    reason = str(entry.get("error"))[:80]
                    lines.append(f"| {label} | not measured: {reason} |" + " |" * (len(heads) - 2))
                    continue
                cells = [label, _num(entry["median_s"] * 1e3, ".0f")]
                for k in ("a", "f", "c"):
                    if refs.get(k):
                        cells.append(_num(entry.get("speedup", {}).get(f"{k}:{refs[k]}"), ".2f") + "×"
                                     if entry.get("speedup", {}).get(f"{k}:{refs[k]}") else "–")
                peak = entry.get("peak_rss_bytes", entry.get("peak_bytes"))
                cells += [_num(peak / 2**20 if peak else None, ".0f"),
                          _num(entry["flops"] / 1e9 if entry.get("flops") else None, ".1f")]
                lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
            split = _speed_split(result, refs)
            if split:
                out.append(split)
            for name, key, label in (("nystra", "f", "spandrel"), ("nystra", "a", "exact")):
                value = result["arms"].get(name, {}).get("speedup", {}).get(f"{key}:{refs.get(key)}")
                if value:
                    eval_results.append(EvalResult(
                        task_type=PIPELINE_TAG, task_name=v.task_description, dataset_type="random-input",
                        dataset_name=f"{device} {shape} random input", metric_type="speedup",
                        metric_name=f"nystra speedup vs {label} ({device}, {shape})", metric_value=round(value, 3)))
    if not cuda and not gpu_elsewhere:
        out.append("#### GPU: not measured on GPU\n\nNo GPU was available where these numbers were taken; "
                   "`benchmarks/gpu.sh` measures it.")
    return "\n\n".join(out)


GPU_ARM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def render_gpu(v: Variant, report: dict) -> str:
    """The GPU section of ``v``'s card from a ``benchmarks/gpu.sh`` report (``nystra_hub.gpu_bench/1``)."""
    env, settings = report["environment"], report["settings"]
    machine = (f"{env.get('device_name')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, torch {env.get('torch')}, "
               f"spandrel {env.get('spandrel')}, TF32 matmul {'on' if settings.get('tf32_matmul') else 'off'}")
    out = [f"### Speed on GPU: {env.get('device_name')}",
           f"{machine}. Command: `{report['command']}` ({report['created']}, nystra_hub {report.get('git_commit')}); "
           f"{settings['weights']}, {settings['input']}; {settings['order']}, {settings['runs']} timed rounds, "
           "medians. Every arm takes a float32 input and returns float32; ours keep float32 weights and run half "
           "precision under autocast (residual stream, norms and softmax in float32, a non-finite call redone in "
           "float32), spandrel's are cast whole. PSNR is against our float32 exact output on the same input."]
    case = next((c for c in report["cases"] if c.get("variant") == v.name), None)
    if case is None:
        return "\n\n".join(out + ["Not measured on GPU for this variant."])
    for result in case["results"]:
        if "arms" not in result:
            out.append(f"Input {result['size']}²: not measured on GPU ({result.get('skipped')}).")
            continue
        out.append(f"Input {'×'.join(map(str, result['input_shape'][2:]))}:")
        out.append(_gpu_table(case, result["arms"]))
        claim = _paper_claim(case, result["arms"])
        if claim:
            out.append(claim)
    stress = report.get("fp16_stress")
    if stress:
        out.append(f"float16 overflow check ({stress['model']}, {stress['inflation']}, so that the residual stream "
                   f"passes 65504): a plain float16 cast gave {stress['plain_fp16_nonfinite']} non-finite output "
                   f"values; ours {stress['ours_fp16_nonfinite']} ({stress['ours_fp32_fallbacks']} float32 redos), "
                   f"{_num(stress['ours_fp16_psnr_vs_fp32'], '.1f')} dB against float32.")
    out.append("Peak memory is not listed: the run measured the process peak with every arm's model resident and "
               "the masks of earlier arms cached, which is not a per-arm figure.")
    return "\n\n".join(out)


def _gpu_table(case: dict, arms: dict) -> str:
    ref = arms.get("spandrel-fp32", {}).get("median_s")
    exact = arms.get("exact-fp32", {}).get("median_s")
    lines = ["| arm | dtype | median ms | vs spandrel fp32 | vs our exact fp32 | PSNR vs our fp32 (dB) | non-finite |",
             "|---|---|---|---|---|---|---|"]
    for name, row in arms.items():
        dtype = case["arms"].get(name, {}).get("dtype") or GPU_ARM_DTYPES.get(name.rsplit("-", 1)[-1], "?")
        if row.get("median_s") is None:
            error = str(row.get("error")).splitlines()[0][:70]
            lines.append(f"| {name} | {dtype} | not measured: {error} | | | | |")
            continue
        t = row["median_s"]
        quality = row.get("psnr_vs_exact_fp32")
        quality = quality if isinstance(quality, str) else _num(quality, ".1f")
        lines.append(f"| {name} | {dtype} | {t * 1e3:.1f} | {_ratio(ref, t)} | {_ratio(exact, t)} | {quality} | "
                     f"{row.get('nonfinite_values')} |")
    return "\n".join(lines)


def _ratio(reference: float | None, value: float) -> str:
    return f"{reference / value:.2f}×" if reference else "–"


def _paper_claim(case: dict, arms: dict) -> str | None:
    window = case["recipe"]["window"]
    parts = []
    for tag in ("fp32", "bf16"):
        exact = arms.get(f"exact-w{window}-paper-{tag}", {}).get("median_s")
        nystra = arms.get(f"nystra-w{window}-paper-{tag}", {}).get("median_s")
        if exact and nystra:
            parts.append(f"{exact / nystra:.2f}× in {GPU_ARM_DTYPES[tag]}")
    if not parts:
        return None
    return (f"The paper's comparison (PnP-Nystra vs exact attention, both at window {window} with bias and masks "
            f"dropped; it reports 1.8–3.6× on GPU): {', '.join(parts)} here.")


def _speed_split(result: dict, refs: dict) -> str | None:
    """"engineering x approximation" decomposition of nystra's speedup over spandrel."""
    arms = result["arms"]
    exact, spandrel, nystra = arms.get(refs.get("a") or ""), arms.get(refs.get("f") or ""), arms.get("nystra")
    if not (exact and spandrel and nystra) or not all(e.get("median_s") for e in (exact, spandrel, nystra)):
        return None
    eng = spandrel["median_s"] / exact["median_s"]
    approx = exact["median_s"] / nystra["median_s"]
    return (f"Split of (d) nystra vs (f) spandrel, {eng * approx:.2f}×: engineering (our exact path vs the official "
            f"code path) {eng:.2f}× × approximation (nystra vs our exact path) {approx:.2f}×.")


_FIDELITY_ROWS = ("exact", "sdpa", "spandrel", "nystra", "exact-w{W}-paper", "exact-w{W}", "nystra-w{W}-paper",
                  "nystra-w{W}", "nystra-w{W}-maskdrop", "nystromformer", "performer", "nystromformer-w{W}-paper",
                  "performer-w{W}-paper", "nystra-biaspooled-maskdrop", "nystra-biasdrop-maskexact",
                  "nystra-biasdrop-maskdrop")


def _render_fidelity(v: Variant, reports: list[dict], eval_results: list[EvalResult]) -> str:
    out = ["### Quality cost",
           "Approximation quality means little on random weights and the released weights cannot be downloaded "
           "where this card was made, so it is measured on a small **reference model** of the same architecture "
           "trained with `nystra-hub train-reference` (see `reference_models/` in the repository), on held-out "
           "images it never saw, with the official evaluation protocol. *These are not measurements of this "
           "variant's released weights.* PSNR vs exact compares each arm's output with the exact model's own "
           "output (higher is closer, ∞ = identical); ΔPSNR (GT) is the change of the ground-truth PSNR against "
           "the exact model."]
    for report in reports:
        model, proto, training = report["model"], report["protocol"], report.get("training", {})
        window = report.get("recipe", {}).get("window")
        out.append(f"#### Reference model `{model['name']}` ({model['arch']}, {model.get('parameters', '?')} "
                   f"parameters, {report['task']['description']})")
        trained = (f"Trained by `{training['command']}`; held-out PSNR {_num(training.get('heldout_psnr'), '.2f')} "
                   f"dB vs {_num(training.get('heldout_input_psnr'), '.2f')} dB for the input baseline"
                   if training.get("command") else "No training record (not a trained reference model); input "
                   "baseline")
        out.append(f"{trained} ({report['input_baseline']['description']}); {len(report['images'])} held-out images, "
                   f"protocol {proto['name']} ({proto.get('channel', '')}, border {proto.get('border_crop', 0)}). "
                   f"Command: `{report['command']}`.")
        lines = ["| arm | PSNR vs exact (dB) | SSIM vs exact | PSNR vs GT (dB) | ΔPSNR (GT) dB | attention rel. error "
                 "(mean) |", "|---|---|---|---|---|---|"]
        calibrated = [n for n in report["arms"] if n.startswith("calibrated-")]
        for pattern in (*_FIDELITY_ROWS, *calibrated):
            name = pattern.format(W=window)
            arm = report["arms"].get(name)
            if not arm:
                continue
            cfg = arm["config"]
            label = f"({cfg['letter']}) {name}" if cfg.get("letter") else name
            if arm.get("error"):
                lines.append(f"| {label} | error: {arm['error'][:80]} | | | | |")
                continue
            vs_exact = "∞ (identical)" if arm.get("psnr_vs_exact") is None else f"{arm['psnr_vs_exact']:.1f}"
            # the per-layer diagnostic runs one implementation in every layer; a per-layer plan has none to show
            diag = None if cfg.get("plan") else (arm.get("layer_diagnostic") or {}).get("rel_error_mean")
            lines.append(f"| {label} | {vs_exact} | {arm['ssim_vs_exact']:.5f} | {arm['psnr_gt']:.3f} | "
                         f"{arm['delta_psnr_gt']:+.3f} | {_num(diag, '.4f')} |")
            if name in ("nystra", f"nystra-w{window}-paper") and arm.get("psnr_vs_exact") is not None:
                dataset = f"held-out ({model['name']} reference model)"
                for metric, value in (("PSNR vs exact output", arm["psnr_vs_exact"]),
                                      ("delta PSNR vs GT", arm["delta_psnr_gt"])):
                    eval_results.append(EvalResult(
                        task_type=PIPELINE_TAG, task_name=v.task_description, dataset_type="reference-heldout",
                        dataset_name=dataset, metric_type="psnr", metric_name=f"{metric} ({name})",
                        metric_value=round(value, 3)))
        out.append("\n".join(lines))
    return "\n\n".join(out)


# -- `nystra-hub cards` --------------------------------------------------------------------------------------------
def measurements_from_files(variant: str, bench: list[str] | None, fidelity: list[str] | None,
                            out_dir: Path, gpu: list[str] | None = None) -> dict | None:
    """Read bench/fidelity/GPU JSON and copy their PNG plots next to the card (as ``<variant>-...png``)."""
    if not bench and not fidelity and not gpu:
        return None
    measurements: dict = {"bench": [], "fidelity": [], "plots": [], "gpu": []}
    for path in map(Path, gpu or []):
        report = json.loads(path.read_text())
        if not str(report.get("schema", "")).startswith("nystra_hub.gpu_bench/"):
            raise ValueError(f"{path}: not a benchmarks/gpu.sh report (schema {report.get('schema')!r})")
        measurements["gpu"].append(report)
    for kind, paths in (("bench", bench or []), ("fidelity", fidelity or [])):
        for path in map(Path, paths):
            report = json.loads(path.read_text())
            expected = f"nystra_hub.{kind}/"
            if not str(report.get("schema", "")).startswith(expected):
                raise ValueError(f"{path}: not a {kind} report (schema {report.get('schema')!r})")
            if kind == "bench" and report["model"]["name"] != variant:
                raise ValueError(f"{path} measured {report['model']['name']}, not {variant}")
            measurements[kind].append(report)
            png = path.with_suffix(".png")
            if kind == "bench" and len(bench) > 1:
                continue  # one speed-vs-size plot over all the reports instead, below
            if png.is_file():
                tag = report["settings"]["device"].split(":")[0] if kind == "bench" else report["model"]["name"]
                target = f"{variant}--{path.stem}.png"
                shutil.copyfile(png, out_dir / target)
                caption = (f"Median time and speedups vs input size ({tag}), from {path.name}" if kind == "bench"
                           else f"Quality vs landmarks and per arm on the reference model {tag}, from {path.name}")
                measurements["plots"].append({"path": target, "caption": caption})
    if len(measurements["bench"]) > 1:
        by_device: dict[str, list[dict]] = {}
        for report in measurements["bench"]:
            by_device.setdefault(report["settings"]["device"].split(":")[0], []).append(report)
        for device, reports in by_device.items():
            target = f"{variant}--speed-{device}.png"
            plot_bench([merge_bench_reports(reports)], out_dir / target)
            sizes = sorted({r["size"] for rep in reports for r in rep["results"]})
            measurements["plots"].insert(0, {"path": target, "caption": (
                f"Median time and speedups vs input size ({device}; sizes {', '.join(map(str, sizes))} from "
                f"{len(reports)} bench runs; arms missing at a size were not run there)")})
    return measurements


def merge_bench_reports(reports: list[dict]) -> dict:
    """One report whose results are all sizes of ``reports`` (same model and device), for a speed-vs-size plot."""
    merged = dict(reports[0])
    merged["arms"], merged["references"] = {}, {}
    for report in reports:
        for name, arm in report["arms"].items():
            merged["arms"].setdefault(name, arm)
        for letter, name in report.get("references", {}).items():
            merged["references"].setdefault(letter, name)
    merged["results"] = sorted((r for report in reports for r in report["results"]), key=lambda r: r["size"])
    return merged


def _measurement_args(args) -> list[str]:
    out = ["--out-dir", str(args.out_dir)]
    for flag in ("bench", "fidelity", "gpu"):
        if getattr(args, flag, None):
            out += [f"--{flag}", *map(str, getattr(args, flag))]
    return out


def add_arguments(parser) -> None:
    parser.add_argument("variants", nargs="*", metavar="VARIANT", help="catalogue variants (see nystra-hub list)")
    parser.add_argument("--all", action="store_true", help="every catalogue variant")
    parser.add_argument("--out-dir", default="model_cards", help="output folder (default: model_cards)")
    parser.add_argument("--bench", nargs="+", metavar="JSON", help="nystra-hub bench reports of the (one) variant")
    parser.add_argument("--fidelity", nargs="+", metavar="JSON",
                        help="nystra-hub fidelity reports of the reference model(s) standing in for the variant")
    parser.add_argument("--gpu", nargs="+", metavar="JSON", help="benchmarks/gpu.sh reports (gpu-bench.json)")


def run(args) -> int:
    names = list(VARIANTS) if args.all else args.variants
    if not names:
        print("error: name at least one variant or pass --all", file=sys.stderr)
        return 2
    measured = any(getattr(args, flag, None) for flag in ("bench", "fidelity", "gpu"))
    if measured and len(names) != 1:
        print("error: --bench/--fidelity/--gpu describe one variant; name exactly one", file=sys.stderr)
        return 2
    try:
        variants = [get_variant(n) for n in names]
    except KeyError as err:
        print(f"error: {err.args[0]}", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for v in variants:
        path = out / f"{v.name}.md"
        try:
            measurements = measurements_from_files(v.name, getattr(args, "bench", None),
                                                   getattr(args, "fidelity", None), out, getattr(args, "gpu", None))
            if measurements is not None:
                measurements["command"] = shlex.join(["nystra-hub", "cards", v.name, *_measurement_args(args)])
        except (OSError, ValueError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        build_model_card(v, measurements).save(str(path))
        print(path)
    return 0
