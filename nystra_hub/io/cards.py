"""Model cards (``README.md`` of a hub folder) rendered from the catalogue with huggingface_hub's ModelCard.

Front matter: ``library_name: nystra_hub``, ``pipeline_tag: image-to-image``, tags, license, the original
release (repository and file) and, when measurements are given, a ``model-index`` with their metrics. The card
never states a number that was not measured: without measurements it says so plainly.

Every card opens with a two-line summary (:func:`card_summary`): the speedup PnP-Nystra gives over exact attention,
on which device and inputs, and what it costs in quality on which model, or "not measured". What the renderer
guarantees (checked by :func:`check_card`): every heading is unique (repeated runs of one input size or one
reference model are numbered), the ``model-index`` names each metric of a dataset once (where several runs
measured one, the run with the most timed rounds or images gives it), no value is printed as ``-0.0``, speedups in
the ``model-index`` are PnP-Nystra's over exact attention only (spandrel's ratios, which measure the code path
rather than the approximation, stay in the tables), and plots are redrawn from the JSON (no panel without data).

``nystra-hub cards VARIANT ... [--all] [--out-dir model_cards]`` (:mod:`nystra_hub.cli.cards`) writes
``<out-dir>/<variant>.md``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from nystra_hub.io.plots import plot_bench, plot_fidelity
from nystra_hub.io.variants import Variant, get_variant
from nystra_hub.models import ARCHITECTURES

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


def build_model_card(variant: str | Variant, measurements: dict | None = None, *,
                     converted_from: str | None = None, sha256: str | None = None,
                     origin_unrecorded: bool = False) -> ModelCard:
    """The card of a catalogue variant. ``measurements`` (None for now) adds a model-index and result tables;
    see :func:`render_measurements` for the accepted form. ``converted_from`` (a file name) and its ``sha256``:
    the card of a folder ``nystra-hub convert`` wrote from a user's file, which it calls the released weights only
    when ``sha256`` is the one the catalogue records for the release. ``origin_unrecorded``: the weights were
    not read from a file (built or changed in memory), so the card cannot say where they come from."""
    v = _variant(variant)
    eval_results, results_md = render_measurements(v, measurements)
    origin = (UNRECORDED_ORIGIN, "") if origin_unrecorded else _origin(v, converted_from, sha256)
    body = _card_body(v, card_summary(v, measurements), results_md, *origin)
    check_card(body, eval_results)
    data = _card_data(v, eval_results)
    if converted_from is not None:
        data.converted_from, data.converted_from_sha256 = converted_from, sha256
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


UNRECORDED_ORIGIN = ("Weights saved from a model that was not loaded from a checkpoint file (built or changed in "
                     "memory: where they come from is not recorded), in the official state-dict format")


def card_origin(file: str | None, sha256: str | None) -> dict:
    """:func:`build_model_card`'s keywords for weights last read from ``file`` (None: not read from a file)."""
    if file is None:
        return {"origin_unrecorded": True}
    return {"converted_from": Path(file).name, "sha256": sha256}


def is_release(v: Variant, sha256: str | None) -> bool:
    """Whether a file with this sha256 is ``v``'s released checkpoint: never when the catalogue records none."""
    return bool(v.sha256) and sha256 == v.sha256


def _origin(v: Variant, converted_from: str | None, sha256: str | None) -> tuple[str, str]:
    """(the card's opening words, a paragraph after them): where the weights come from, as far as it can know."""
    title = _title(v.arch)
    if converted_from is None:  # the card of the catalogue entry itself, published with the release
        return (f"The released {title} weights in the official state-dict format (keys and tensors as released)"
                if v.released else f"The paper's {title} configuration (no official checkpoint of it is listed)"), ""
    checksum = f"sha256 of `{converted_from}`: `{sha256}`"
    if is_release(v, sha256):
        return (f"The released {title} weights, converted with `nystra-hub convert` from `{converted_from}`, in the "
                "official state-dict format (keys and tensors as released)", f"{checksum} (the catalogued release's).")
    unknown = ("it differs from the release's, so these are not the released weights" if v.sha256 else
               "the catalogue records no checksum of the release, so whether these are the released weights is "
               "not known")
    return (f"Weights converted with `nystra-hub convert` from `{converted_from}` in the official state-dict format "
            "(keys and tensors as in that file)",
            f"`{converted_from}` is a checkpoint of the configuration of `{v.official_file}`; {checksum}; {unknown}.")


def card_summary(v: Variant | None, measurements: dict | None) -> str:
    """The two lines every card opens with: the speedup PnP-Nystra gives over exact attention (device, inputs) and
    what it costs in quality (model, images), each "not measured" when no measurement says it."""
    m = measurements or {}
    route = _fastest_exact_route(m)
    return (f"**Speed, PnP-Nystra vs exact attention:** {_speed_summary(v, m)}\n\n**Quality:** {_quality_summary(m)}"
            + (f"\n\n**Fastest exact route measured on CPU:** {route}" if route else ""))


def _fastest_exact_route(m: dict) -> str | None:
    """Our fastest route computing the exact function (no approximation, the trained window) per CPU input size,
    as a ratio to spandrel in the same run where it ran, else to our eager exact path; None without CPU bench
    reports. Per size the best ratio over the runs is kept (ratios, unlike times, compare across runs)."""
    best: dict[int, tuple[float, str, str, float | None]] = {}  # size -> (ratio, arm, baseline, output diff)
    for report in m.get("bench") or []:
        if _is_gpu(report):
            continue
        refs, arms = report.get("references", {}), report["arms"]
        ours = [n for n, a in arms.items() if a.get("attn_impl") in ("softmax", "sdpa") and a.get("window") is None
                and not a.get("plan") and a.get("backend", "nystra_hub") == "nystra_hub"
                and a.get("dtype") in (None, "float32") and a.get("runtime_precision", "float32") == "float32"]
        key = "f" if refs.get("f") else "a"
        for result in report["results"]:
            for name in ours:
                entry = result["arms"].get(name, {})
                ratio = entry.get("speedup", {}).get(f"{key}:{refs.get(key)}")
                if ratio and ratio > best.get(result["size"], (0,))[0]:
                    baseline = "spandrel" if key == "f" else "our eager exact path"
                    best[result["size"]] = (ratio, name, baseline, entry.get("max_abs_diff_vs_a"))
    if not best:
        return None
    by_arm: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for size, (ratio, name, baseline, _) in sorted(best.items()):
        by_arm.setdefault((name, baseline), []).append((size, ratio))
    parts = []
    for (arm, baseline), points in by_arm.items():
        low, high = (f"{f(r for _, r in points):.2f}" for f in (min, max))
        parts.append(f"`{arm}` {low if low == high else f'{low}–{high}'}× {baseline} "
                     f"({', '.join(f'{s}²' for s, _ in points)})")
    diffs = [d for *_, d in best.values() if d is not None]
    return "; ".join(parts) + (f"; largest output difference from our eager exact model {max(diffs):.1e}"
                               if diffs else "") + "."


def _speedups(v: Variant | None, m: dict) -> dict[str, list[tuple[int, float]]]:
    """{device description: [(input side, nystra's speedup over exact attention)]} from bench and GPU reports."""
    found: dict[str, list[tuple[int, float]]] = {}
    for report in m.get("bench") or []:
        env, settings, ref = report["environment"], report["settings"], report.get("references", {}).get("a")
        device = (f"GPU ({env.get('device_name')}, {settings['dtype']})" if _is_gpu(report) else
                  f"CPU ({env.get('cpu_model')}, {settings['threads']} threads, {settings['dtype']})")
        for result in report["results"]:
            ratio = result["arms"].get("nystra", {}).get("speedup", {}).get(f"a:{ref}")
            if ratio:
                found.setdefault(device, []).append((result["size"], ratio))
    for report in m.get("gpu") or []:
        device = f"GPU ({report['environment'].get('device_name')}, bfloat16)"
        cases = [case for case in report["cases"] if v is not None and case.get("variant") == v.name]
        results = [result for case in cases for result in case.get("results", [])]
        for result in results:
            arms = result.get("arms", {})
            exact, nystra = (arms.get(f"{arm}-bf16", {}).get("median_s") for arm in ("exact", "nystra"))
            if exact and nystra:
                found.setdefault(device, []).append((result["size"], exact / nystra))
    return found


def _speed_summary(v: Variant | None, m: dict) -> str:
    found = _speedups(v, m)
    if not found:
        return "not measured."
    parts = []
    for device, points in found.items():
        low, high = (f"{f(r for _, r in points):.2f}" for f in (min, max))
        sizes = sorted({s for s, _ in points})
        span = f"{low}×" if low == high else f"{low}–{high}×"
        side = f"{sizes[0]} px" if len(sizes) == 1 else f"{sizes[0]}–{sizes[-1]} px"
        parts.append(f"{span} on {device}, {side} inputs")
    if not any(device.startswith("GPU") for device in found):
        parts.append("GPU not measured")
    return "; ".join(parts) + ". Above 1× is faster."


def _quality_summary(m: dict) -> str:
    runs = [r for r in m.get("fidelity") or []
            if r["arms"].get("nystra") and not r["arms"]["nystra"].get("error")
            and r["arms"]["nystra"].get("delta_psnr_gt") is not None]
    if not runs:
        return "not measured (PnP-Nystra changes the output; no quality measurement is included in this card)."
    report = max(runs, key=lambda r: len(r["images"]))  # the first of the largest runs
    arm, delta = report["arms"]["nystra"], report["arms"]["nystra"]["delta_psnr_gt"]
    change = "by less than 0.001 dB" if abs(delta) < 0.0005 else f"by {_signed(delta)} dB"
    vs_exact = ("output identical to the exact model's" if arm.get("psnr_vs_exact") is None else
                f"{arm['psnr_vs_exact']:.1f} dB PSNR between its output and the exact model's")
    return (f"PnP-Nystra changes PSNR against the ground truth {change} ({vs_exact}) on the reference model "
            f"`{report['model']['name']}` ({len(report['images'])} held-out images, {report['protocol']['name']} "
            "protocol); these released weights were not measured.")


def _headings(markdown: str) -> list[str]:
    """The markdown headings outside fenced code blocks."""
    headings, fenced = [], False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            headings.append(line.strip())
    return headings


def check_card(markdown: str, eval_results: Iterable[EvalResult] | None) -> None:
    """Raise ValueError when a card repeats a heading, names a model-index metric of one dataset twice or prints
    a negative zero: what the renderer guarantees (see the module doc)."""
    headings = _headings(markdown)
    problems = [f"repeated heading {h!r}" for h in sorted({h for h in headings if headings.count(h) > 1})]
    keys = [(r.dataset_name, r.metric_name) for r in eval_results or []]
    problems += [f"model-index lists {k} twice" for k in sorted({k for k in keys if keys.count(k) > 1})]
    problems += [f"negative zero {z!r}" for z in re.findall(r"(?<![\w.-])-0(?:\.0+)?(?![\d.])", markdown)]
    if problems:
        raise ValueError("inconsistent model card: " + "; ".join(problems))


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


def _card_body(v: Variant, summary: str, results_md: str, origin: str, origin_note: str = "") -> str:
    """The card's markdown: what the model is (``origin``: where its weights come from, ``origin_note`` a
    paragraph more on it), its base model, usage, the measurements."""
    repo_id = f"nystra/{v.name}"
    table = _base_model_table(v)
    note = f"\n\n{origin_note}" if origin_note else ""
    low, high = ARCHITECTURES[v.arch].spec.value_range
    value_range = f"[{low:g}, {high:g}]"
    return f"""
# {v.name}: {_title(v.arch)}, {v.task_description}

{summary}

{origin}, packaged for
`nystra_hub`, 🤗 transformers and timm, with a switch between exact attention and training-free PnP-Nystra
(Nyström) window attention.{note}

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


def build_custom_card(arch: str, official_kwargs: dict, *, converted_from: str | None = None,
                      sha256: str | None = None) -> ModelCard:
    """A short card for a configuration that is not in the catalogue (e.g. a converted test model);
    ``converted_from`` (a file name) and its ``sha256`` say which file ``nystra-hub convert`` read."""
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG,
                         tags=["image-restoration", "pnp-nystra", arch], architecture=arch)
    source = ""
    if converted_from is not None:
        data.converted_from, data.converted_from_sha256 = converted_from, sha256
        source = f" from `{converted_from}`" + (f" (sha256 `{sha256}`)" if sha256 else "")
    body = f"""
# Custom {_title(arch)} configuration

{card_summary(None, None)}

A {_title(arch)} model converted with `nystra-hub convert`{source}, built from explicit constructor arguments;
it is not one of the catalogued releases.

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
    index = ModelIndex()
    sections: list[str] = []
    if measurements.get("results"):
        sections.append(_render_results(v, measurements["results"], index))
    if "bench" in measurements:
        sections.append(_render_bench(v, measurements["bench"], index, bool(measurements.get("gpu"))))
    gpu = measurements.get("gpu") or []
    for report, suffix in zip(gpu, numbered([r["environment"].get("device_name") for r in gpu])):
        sections.append(render_gpu(v, report, suffix))
    if measurements.get("fidelity"):
        sections.append(_render_fidelity(v, measurements["fidelity"], index))
    for plot in measurements.get("plots") or []:
        sections.append(f"![{plot.get('caption', '')}]({plot['path']})\n\n*{plot.get('caption', '')}*")
    if measurements.get("command"):
        sections.append(f"This card was generated from the JSON above by `{measurements['command']}`.")
    return index.results(), "\n\n".join(sections)


class ModelIndex:
    """The ``model-index`` entries: one per measured quantity (``key``, by default the dataset and metric name).
    Where several runs measured the same quantity (one reference model's arm on 5 and on 19 images, one input size
    in two bench runs), the one with the most data (``weight``: images, timed rounds) is kept, so the front matter
    never lists a metric twice or with two values."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[float, EvalResult]] = {}

    def add(self, result: EvalResult, weight: float = 0.0, key: tuple | None = None) -> None:
        key = key or (str(result.dataset_name), str(result.metric_name))
        if key not in self._entries or weight > self._entries[key][0]:
            self._entries[key] = (weight, result)

    def results(self) -> list[EvalResult] | None:
        return [result for _, result in self._entries.values()] or None


def _result(v: Variant, dataset_type: str, dataset: str, metric_type: str, name: str, value: float) -> EvalResult:
    # the dataset name is also its config: huggingface_hub groups a model-index by type and config, and would list
    # every size (or run) under the first one's name otherwise
    return EvalResult(task_type=PIPELINE_TAG, task_name=v.task_description, dataset_type=dataset_type,
                      dataset_name=dataset, dataset_config=dataset, metric_type=metric_type, metric_name=name,
                      metric_value=_rounded(value))


def _rounded(value: float, digits: int = 3) -> float:
    """``round`` without negative zero (a -0.0004 dB change is 0.0, not -0.0)."""
    return round(value, digits) + 0.0


def _signed(value: float | None, digits: int = 3) -> str:
    """A change with its sign; one that rounds to zero is printed as 0 (never -0.000)."""
    if value is None:
        return "–"
    value = _rounded(value, digits)
    return f"{value:.{digits}f}" if value == 0 else f"{value:+.{digits}f}"


def _render_results(v: Variant, rows: list[dict], index: ModelIndex) -> str:
    lines = ["| dataset | metric | value | attention |", "|---|---|---|---|"]
    for row in rows:
        missing = [k for k in ("dataset", "metric", "value") if k not in row]
        if missing:
            raise ValueError(f"measurement {row} lacks {missing}")
        impl = row.get("attn_impl", "softmax")
        result = _result(v, str(row["dataset"]).lower(), str(row["dataset"]), str(row["metric"]).lower(),
                         f"{row['metric']} ({impl})", row["value"])
        result.dataset_split = row.get("split")
        index.add(result)
        lines.append(f"| {row['dataset']} | {row['metric']} | {row['value']} | {impl} |")
    return "\n".join(lines)


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _is_gpu(report: dict) -> bool:
    return str(report["settings"]["device"]).startswith("cuda")


def _machine(report: dict) -> str:
    env, settings = report["environment"], report["settings"]
    if _is_gpu(report):
        return (f"{env.get('device_name')} (CUDA {env.get('cuda')}), torch {env.get('torch')}, "
                f"{settings['dtype']}, batch {settings['batch']}")
    return (f"{env.get('cpu_model')} ({env.get('cpu_count')} logical cores), {settings['threads']} torch "
            f"threads, torch {env.get('torch')}, {settings['dtype']}, batch {settings['batch']}")


def _shape(result: dict) -> str:
    return "×".join(str(d) for d in result["input_shape"][2:])


def numbered(keys: list) -> list[str]:
    """A suffix per key that makes repeated keys distinct: "" for a key seen once, ", run i of n" otherwise."""
    totals = {k: keys.count(k) for k in keys}
    seen: dict = {}
    suffixes = []
    for key in keys:
        seen[key] = seen.get(key, 0) + 1
        suffixes.append("" if totals[key] == 1 else f", run {seen[key]} of {totals[key]}")
    return suffixes


BENCH_INTRO = (
    "Every arm of a table ran in one process, interleaved round-robin, after warm-up; times are medians. Speedups "
    "are ratios of medians against three baselines, named in each column: **(a)** this checkpoint as trained "
    "(exact softmax attention at the trained window, in nystra_hub's code), **(f)** the same checkpoint run through "
    "spandrel, i.e. the official code path most users run today (a ratio against it measures the code path, not "
    "the approximation), and **(c)** exact attention at the enlarged window with bias and masks dropped, the "
    "baseline of the paper's speedups. The reference arms (a), (f), (c) are the exact models; (d), (e), (e') "
    "approximate attention (quality below). The random-weight input does not change the timing of these models. "
    "Tables of one input size from separate runs are numbered: compare ratios within a table, not times across "
    "runs.")


def _render_bench(v: Variant, reports: list[dict], index: ModelIndex, gpu_elsewhere: bool = False) -> str:
    out = ["### Speed", BENCH_INTRO]
    machines = list(dict.fromkeys(_machine(report) for report in reports))
    runs = sorted(((report, result) for report in reports for result in report["results"]),
                  key=lambda run: (machines.index(_machine(run[0])), run[1]["size"]))  # stable: runs keep order
    suffixes = numbered([(_machine(report), _shape(result)) for report, result in runs])
    machine = None
    for (report, result), suffix in zip(runs, suffixes):
        if _machine(report) != machine:
            machine = _machine(report)
            out.append(f"#### {'GPU' if _is_gpu(report) else 'CPU'}: {machine}")
        out.append(_bench_result(v, report, result, suffix, index))
    if not any(_is_gpu(r) for r in reports) and not gpu_elsewhere:
        out.append("#### GPU: not measured on GPU\n\nNo GPU was available where these numbers were taken; "
                   "`benchmarks/gpu.sh` measures it.")
    return "\n\n".join(out)


def _bench_result(v: Variant, report: dict, result: dict, suffix: str, index: ModelIndex) -> str:
    """One input size of one bench run: heading, command, table, the split of nystra's speedup over spandrel."""
    refs, settings = report.get("references", {}), report["settings"]
    shape, device = _shape(result), ("GPU" if _is_gpu(report) else "CPU")
    out = [f"##### Input {shape}{suffix}",
           f"Command: `{report['command']}` ({settings['warmup']} warm-up + {settings['runs']} timed rounds, "
           f"{settings['protocol']} protocol, {report['created']}, nystra_hub "
           f"{report['environment'].get('git_commit', '')}).",
           _bench_table(report, result)]
    if report.get("roofline"):
        out.append(f"GFLOP/s = counted FLOPs (matmuls, convolutions; a runtime arm: those of the eager arm of the "
                   f"same function) / median time; the GEMM roofline of this machine is "
                   f"{report['roofline']['best_gflops_per_s']:.0f} GFLOP/s ({report['roofline']['method']}).")
    split = _speed_split(result, refs)
    if split:
        out.append(split)
    value = result["arms"].get("nystra", {}).get("speedup", {}).get(f"a:{refs.get('a')}")
    if value:
        index.add(_result(v, "random-input", f"{device} {shape} random input", "speedup",
                          f"nystra speedup vs exact ({device}, {shape})", value),
                  weight=len(result["arms"]["nystra"].get("times_s") or []))
    return "\n\n".join(out)


def _bench_table(report: dict, result: dict) -> str:
    refs = report.get("references", {})
    letters = [k for k in ("a", "f", "c", "o") if refs.get(k)]
    heads = ["arm", "median ms", *(f"speedup vs ({k}) {refs[k]}" for k in letters), "peak memory MiB", "GFLOP",
             "GFLOP/s"]
    with_psnr = any("psnr_vs_a_db" in entry for entry in result["arms"].values())
    heads += ["output PSNR vs (a) dB"] if with_psnr else []
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for name, entry in result["arms"].items():
        arm = report["arms"].get(name, {})
        label = f"({arm['letter']}) {name}" if arm.get("letter") else name
        if not entry.get("times_s"):
            lines.append(f"| {label} | not measured: {str(entry.get('error'))[:80]} |" + " |" * (len(heads) - 2))
            continue
        cells = [label, _num(entry["median_s"] * 1e3, ".0f")]
        for k in letters:
            ratio = entry.get("speedup", {}).get(f"{k}:{refs[k]}")
            cells.append(f"{ratio:.2f}×" if ratio else "–")
        peak = entry.get("peak_rss_bytes", entry.get("peak_bytes"))
        cells += [_num(peak / 2**20 if peak else None, ".0f"),
                  _num(entry["flops"] / 1e9 if entry.get("flops") else None, ".1f"),
                  _num(entry.get("gflops_per_s"), ".0f")]
        if with_psnr:
            identical = "psnr_vs_a_db" in entry and entry["psnr_vs_a_db"] is None
            cells.append("identical" if identical else _num(entry.get("psnr_vs_a_db"), ".1f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


GPU_ARM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def render_gpu(v: Variant, report: dict, suffix: str = "") -> str:
    """The GPU section of ``v``'s card from a ``benchmarks/gpu.sh`` report (``nystra_hub.gpu_bench/1``)."""
    env, settings = report["environment"], report["settings"]
    machine = (f"{env.get('device_name')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, torch {env.get('torch')}, "
               f"spandrel {env.get('spandrel')}, TF32 matmul {'on' if settings.get('tf32_matmul') else 'off'}")
    out = [f"### Speed on GPU: {env.get('device_name')}{suffix}",
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
FIDELITY_INTRO = (
    "Approximation quality means little on random weights and the released weights cannot be downloaded where "
    "this card was made, so it is measured on a small **reference model** of the same architecture trained with "
    "`nystra-hub train-reference` (see `reference_models/` in the repository), on held-out images it never saw, "
    "with the official evaluation protocol. *These are not measurements of this variant's released weights.* PSNR "
    "vs exact compares each arm's output with the exact model's own output (higher is closer, ∞ = identical); "
    "ΔPSNR (GT) is the change of the ground-truth PSNR against the exact model.")


def _render_fidelity(v: Variant, reports: list[dict], index: ModelIndex) -> str:
    out = ["### Quality cost", FIDELITY_INTRO]
    suffixes = numbered([(r["model"]["name"], len(r["images"])) for r in reports])
    shown: dict[tuple, set[str]] = {}  # (model, images) -> arms already in a table: not repeated
    model = None
    for report, suffix in zip(reports, suffixes):
        if report["model"]["name"] != model:
            model = report["model"]["name"]
            out.append(_reference_model_heading(report))
        images = (model, tuple(str(i.get("image")) for i in report["images"]))
        out.append(_fidelity_run(v, report, suffix, shown.setdefault(images, set()), index))
    return "\n\n".join(out)


def _reference_model_heading(report: dict) -> str:
    model, training = report["model"], report.get("training", {})
    trained = (f"Trained by `{training['command']}`; held-out PSNR {_num(training.get('heldout_psnr'), '.2f')} dB vs "
               f"{_num(training.get('heldout_input_psnr'), '.2f')} dB for the input baseline "
               f"({report['input_baseline']['description']})." if training.get("command") else
               "No training record (not a trained reference model).")
    return (f"#### Reference model `{model['name']}` ({model['arch']}, {model.get('parameters', '?')} parameters, "
            f"{report['task']['description']})\n\n{trained}{_ablations_sentence(training.get('ablations'))}")


def _ablations_sentence(ablations: dict | None) -> str:
    """Whether the reference model's attention matters (``reference.json``'s ablations), or nothing."""
    if not ablations:
        return ""
    limits = ablations.get("thresholds_db", {})
    parts = []
    for key in ("position_bias_dropped", "window_x2"):
        entry = ablations.get(key)
        if entry:
            size = "at least" if entry.get("matters") else "less than"
            parts.append(f"{entry['what']}: {_signed(entry['change_db'])} dB ({size} the {limits.get(key)} dB "
                         "a model whose attention matters shows)")
    return " Does its attention matter? Held-out PSNR change with " + "; ".join(parts) + "." if parts else ""


def _fidelity_run(v: Variant, report: dict, suffix: str, shown: set[str], index: ModelIndex) -> str:
    """One fidelity run: heading, command, the table of the arms not shown yet for these images."""
    proto, window, n = report["protocol"], report.get("recipe", {}).get("window"), len(report["images"])
    names = [p.format(W=window) for p in _FIDELITY_ROWS] + [a for a in report["arms"] if a.startswith("calibrated-")]
    names = [name for name in dict.fromkeys(names) if name in report["arms"]]
    repeated = [name for name in names if name in shown and name != "exact"]
    lines = ["| arm | PSNR vs exact (dB) | SSIM vs exact | PSNR vs GT (dB) | ΔPSNR (GT) dB | attention rel. error "
             "(mean) |", "|---|---|---|---|---|---|"]
    lines += [_fidelity_row(name, report["arms"][name]) for name in names if name not in repeated]
    out = [f"##### {n} held-out images{suffix}",
           f"Protocol {proto['name']} ({proto.get('channel', '')}, border {proto.get('border_crop', 0)}). "
           f"Command: `{report['command']}`." + (f" Arms already listed above for the same images are not repeated "
                                                 f"({', '.join(repeated)})." if repeated else ""),
           "\n".join(lines)]
    shown.update(names)
    for name in ("nystra", f"nystra-w{window}-paper"):
        arm = report["arms"].get(name, {})
        if arm and not arm.get("error") and arm.get("psnr_vs_exact") is not None:
            dataset = f"held-out ({report['model']['name']} reference model, {n} images)"
            for metric, value in (("PSNR vs exact output", arm["psnr_vs_exact"]),
                                  ("delta PSNR vs GT", arm["delta_psnr_gt"])):
                index.add(_result(v, "reference-heldout", dataset, "psnr", f"{metric} ({name})", value), weight=n,
                          key=(report["model"]["name"], metric, name))
    return "\n\n".join(out)


def _fidelity_row(name: str, arm: dict) -> str:
    cfg = arm["config"]
    label = f"({cfg['letter']}) {name}" if cfg.get("letter") else name
    if arm.get("error"):
        return f"| {label} | error: {arm['error'][:80]} | | | | |"
    vs_exact = "∞ (identical)" if arm.get("psnr_vs_exact") is None else f"{arm['psnr_vs_exact']:.1f}"
    # the per-layer diagnostic runs one implementation in every layer; a per-layer plan has none to show
    diag = None if cfg.get("plan") else (arm.get("layer_diagnostic") or {}).get("rel_error_mean")
    return (f"| {label} | {vs_exact} | {arm['ssim_vs_exact']:.5f} | {arm['psnr_gt']:.3f} | "
            f"{_signed(arm['delta_psnr_gt'])} | {_num(diag, '.4f')} |")


# -- `nystra-hub cards` --------------------------------------------------------------------------------------------
def measurements_from_files(variant: str, bench: list[str] | None, fidelity: list[str] | None,
                            out_dir: Path, gpu: list[str] | None = None) -> dict | None:
    """Read bench/fidelity/GPU JSON and draw their plots next to the card (``<variant>--...png``), from the JSON
    (never a copied PNG, which an older version may have drawn with empty panels)."""
    if not bench and not fidelity and not gpu:
        return None
    measurements: dict = {"bench": [], "fidelity": [], "plots": [], "gpu": []}
    measurements["gpu"] = [_read_report(path, "gpu_bench") for path in map(Path, gpu or [])]
    for path in map(Path, bench or []):
        report = _read_report(path, "bench")
        if report["model"]["name"] != variant:
            raise ValueError(f"{path} measured {report['model']['name']}, not {variant}")
        measurements["bench"].append(report)
    for path in map(Path, fidelity or []):
        report = _read_report(path, "fidelity")
        measurements["fidelity"].append(report)
        target = f"{variant}--{path.stem}.png"
        plot_fidelity([report], out_dir / target)
        measurements["plots"].append({"path": target, "caption": (
            f"Quality vs landmarks and per arm on the reference model {report['model']['name']}, from {path.name}")})
    measurements["plots"][:0] = _speed_plots(variant, [(p, r) for p, r in zip(bench or [], measurements["bench"])],
                                              out_dir)
    return measurements


def _read_report(path: Path, kind: str) -> dict:
    report = json.loads(path.read_text())
    if not str(report.get("schema", "")).startswith(f"nystra_hub.{kind}/"):
        what = "benchmarks/gpu.sh" if kind == "gpu_bench" else kind
        raise ValueError(f"{path}: not a {what} report (schema {report.get('schema')!r})")
    return report


def _speed_plots(variant: str, reports: list[tuple[str, dict]], out_dir: Path) -> list[dict]:
    """One speed plot per bench report, or, with several reports, one speed-vs-size plot per device."""
    if len(reports) == 1:
        path, report = reports[0]
        target = f"{variant}--{Path(path).stem}.png"
        plot_bench([report], out_dir / target)
        device = report["settings"]["device"].split(":")[0]
        return [{"path": target, "caption": f"Median time and speedups vs input size ({device}), from "
                                            f"{Path(path).name}"}]
    by_device: dict[str, list[dict]] = {}
    for _, report in reports:
        by_device.setdefault(report["settings"]["device"].split(":")[0], []).append(report)
    plots = []
    for device, group in by_device.items():
        target = f"{variant}--speed-{device}.png"
        plot_bench([merge_bench_reports(group)], out_dir / target)
        sizes = sorted({r["size"] for rep in group for r in rep["results"]})
        plots.append({"path": target, "caption": (
            f"Median time and speedups vs input size ({device}; sizes {', '.join(map(str, sizes))} from "
            f"{len(group)} bench runs, per size the run with the most arms; arms missing at a size were not run "
            "there)")})
    return plots


def merge_bench_reports(reports: list[dict]) -> dict:
    """One report whose results are all sizes of ``reports`` (same model and device), for a speed-vs-size plot.
    A size measured by several runs is taken from the run with the most timed arms there (the newest on a tie):
    one point per arm and size, never a line joining two runs."""
    merged = dict(reports[0])
    merged["arms"], merged["references"] = {}, {}
    for report in reports:
        for name, arm in report["arms"].items():
            merged["arms"].setdefault(name, arm)
        for letter, name in report.get("references", {}).items():
            merged["references"].setdefault(letter, name)
    chosen: dict[int, tuple[tuple, dict]] = {}
    for report in reports:
        for result in report["results"]:
            rank = (sum(1 for e in result["arms"].values() if e.get("median_s")), report.get("created", ""))
            if result["size"] not in chosen or rank > chosen[result["size"]][0]:
                chosen[result["size"]] = (rank, result)
    merged["results"] = [result for _, (_, result) in sorted(chosen.items())]
    return merged
