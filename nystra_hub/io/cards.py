"""Model cards (``README.md`` of a hub folder, ``model_cards/``, ``reference_models/*/``) and the pages of the runs
they cite (``benchmarks/*.md``), rendered with huggingface_hub's ModelCard from the measurement JSON.

A variant's card answers on its first screen (:func:`summary_table`): the routes a user would pick (our eager exact
path, our fastest CPU route, bfloat16 on a GPU, ``nystra``) with their device, time at a stated input and ratios
against spandrel (the usual way to run the checkpoint) and our exact path, each row saying which run it comes from
(date, machine, commit), then one line on what PnP-Nystra costs in quality (on which reference model, and whether
that model's attention matters at all), one install line and one usage block that runs offline from a converted
folder. Details follow: PnP-Nystra against exact attention run by run, the quality table, the plots (one run on one
machine each), the base model, the list of runs. The raw per-run tables are not in the card: each JSON gets its
own page next to it (:func:`render_run_page`), linked from the card.

Front matter: ``license``, ``library_name: nystra_hub``, ``pipeline_tag: image-to-image``, tags with both papers
as ``arxiv:`` tags, the original release. ``model-index`` only for quality measured on the card's own weights on a
named dataset: a variant card has one only when such ``results`` are given (none are measured yet), never for
speed ratios, random inputs or a stand-in model's numbers; a reference model's card carries its held-out PSNR and
SSIM (:func:`build_reference_card`). No number is printed that the JSON does not hold (ratios of two medians of
one run excepted); a route that failed is "not measured on this device", never an error dump; commands lose their
machine paths and commits their "+dirty" (the run pages say in words that the tree had uncommitted changes).

``nystra-hub cards VARIANT ... [--all] [--out-dir model_cards]`` (:mod:`nystra_hub.cli.cards`) writes
``<out-dir>/<variant>.md``; ``benchmarks/make_cards.sh`` renders every committed card and page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from nystra_hub.io.plots import plot_fidelity, plot_gpu_bars, plot_route_bars
from nystra_hub.io.variants import Variant, get_variant
from nystra_hub.models import ARCHITECTURES

LIBRARY_NAME = "nystra_hub"
PIPELINE_TAG = "image-to-image"
PNP_NYSTRA_ARXIV = "2506.08520"
REFERENCE_LICENSE = "mit"  # the reference models are this repository's work, under its licence (pyproject.toml)
MAX_CARD_LINES = 150

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
INSTALL = ("**Install** (from a clone of the nystra_hub repository; it is not on PyPI yet): "
           "`pip install \".[openvino]\"` (`[openvino]` adds the exported CPU route).")
NOT_MEASURED = "not measured on this device"
# a machine's own folders in a recorded command (the output of a run written to /tmp, a GPU machine's /root/out)
_MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:tmp|work|root|home|mnt|scratch|var)/\S*")


def _title(arch: str) -> str:
    return ARCHITECTURES[arch].spec.title


def _variant(variant: str | Variant) -> Variant:
    return variant if isinstance(variant, Variant) else get_variant(variant)


def arch_arxiv(arch: str) -> str | None:
    """The arXiv id of the architecture's paper, as its spec cites it."""
    found = re.search(r"arXiv (\d{4}\.\d{4,5})", ARCHITECTURES[arch].spec.paper)
    return found.group(1) if found else None


def _paper_tags(arch: str) -> list[str]:
    return [f"arxiv:{i}" for i in (arch_arxiv(arch), PNP_NYSTRA_ARXIV) if i]


def _papers(arch: str) -> str:
    spec = ARCHITECTURES[arch].spec
    paper = re.sub(r"arXiv (\d{4}\.\d{4,5})", r"[arXiv \1](https://arxiv.org/abs/\1)", spec.paper)
    return (f"Papers: {paper}; PnP-Nystra, [arXiv {PNP_NYSTRA_ARXIV}](https://arxiv.org/abs/{PNP_NYSTRA_ARXIV}) "
            "(training-free Nyström approximation of window attention).")


def card_tags(v: Variant) -> list[str]:
    return ["image-restoration", "pnp-nystra", "window-attention", v.arch, v.task, *_TASK_TAGS.get(v.task, []),
            *v.tags, "timm", "transformers", *_paper_tags(v.arch)]


def public_command(command: str) -> str:
    """A recorded command without the machine's own paths (``/tmp/bench/x.json`` -> ``…/x.json``)."""
    return _MACHINE_PATH.sub(lambda m: "…/" + m.group().rstrip("/").rsplit("/", 1)[-1], command)


# -- the card of a catalogue variant --------------------------------------------------------------------------------
def build_model_card(variant: str | Variant, measurements: dict | None = None, *,
                     converted_from: str | None = None, sha256: str | None = None,
                     origin_unrecorded: bool = False) -> ModelCard:
    """The card of a catalogue variant. ``measurements`` (see :func:`render_measurements` for the accepted form)
    fills the summary table and the detail sections. ``converted_from`` (a file name) and its ``sha256``: the card
    of a folder ``nystra-hub convert`` wrote from a user's file, which it calls the released weights only when
    ``sha256`` is the one the catalogue records for the release. ``origin_unrecorded``: the weights were not read
    from a file (built or changed in memory), so the card cannot say where they come from."""
    v = _variant(variant)
    eval_results, sections = render_measurements(v, measurements)
    origin = (UNRECORDED_ORIGIN, "") if origin_unrecorded else _origin(v, converted_from, sha256)
    body = _card_body(v, measurements or {}, sections, *origin)
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


def _usage(v: Variant) -> str:
    """One block that runs offline from a converted folder, then the hub id the folder will have."""
    folder = f"{v.name}/"
    source = f", from {v.source}" if v.source else ""
    return f"""```python
# once, in a shell (the released file{source}):
#   nystra-hub convert {Path(v.official_file).name} --variant {v.name} --out {folder}
import nystra_hub
from PIL import Image

model = nystra_hub.load("{folder}")         # offline, exact attention; attn_impl="nystra" for PnP-Nystra
restored = nystra_hub.restore(model, Image.open("input.png"))   # PIL in, PIL out (padding, tiling inside)
```

Hub id once published: `nystra/{v.name}` (**not published yet**; `nystra_hub.load("nystra/{v.name}")` will
then read it). The folder also loads as `AutoModel.from_pretrained("{folder}")` (transformers) and
`timm.create_model("local-dir:{folder}", pretrained=True)`."""


def _card_body(v: Variant, m: dict, sections: dict, origin: str, origin_note: str = "") -> str:
    """The card's markdown: the first screen (summary table, quality, install, usage), the details, the model."""
    note = f"\n\n{origin_note}" if origin_note else ""
    low, high = ARCHITECTURES[v.arch].spec.value_range
    first = sections.get("summary") or ("**Speed:** not measured. **Quality:** not measured (PnP-Nystra changes "
                                        "the output; no quality measurement is included in this card).")
    details = "\n\n".join(sections[k] for k in ("speed", "quality", "results") if sections.get(k))
    measured = ("" if sections.get("summary") or sections.get("results") else
                f"\n\n## Measurements\n\n{NO_MEASUREMENTS}")
    runs = f"\n\n{sections['runs']}" if sections.get("runs") else ""
    footer = f"\n\nRendered from the JSON of these runs by `{m['command']}`." if m.get("command") else ""
    return f"""
# {v.name}: {_title(v.arch)}, {v.task_description}

{first}

{INSTALL}

{_usage(v)}
{(chr(10) + details + chr(10)) if details else ""}
## The model

{origin}, packaged for `nystra_hub`, 🤗 transformers and timm, with a switch between exact attention and
training-free PnP-Nystra (Nyström) window attention.{note} `model(x)` is the network's forward on a float batch in
[{low:g}, {high:g}]; `nystra_hub.restore(...)` adds the official padding, tiling and image conversion.

{_base_model_table(v)}

{_papers(v.arch)}{measured}{runs}{footer}
"""


def build_custom_card(arch: str, official_kwargs: dict, *, converted_from: str | None = None,
                      sha256: str | None = None) -> ModelCard:
    """A short card for a configuration that is not in the catalogue (e.g. a converted test model);
    ``converted_from`` (a file name) and its ``sha256`` say which file ``nystra-hub convert`` read."""
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG,
                         tags=["image-restoration", "pnp-nystra", arch, *_paper_tags(arch)], architecture=arch)
    source = ""
    if converted_from is not None:
        data.converted_from, data.converted_from_sha256 = converted_from, sha256
        source = f" from `{converted_from}`" + (f" (sha256 `{sha256}`)" if sha256 else "")
    body = f"""
# Custom {_title(arch)} configuration

**Speed:** not measured. **Quality:** not measured.

A {_title(arch)} model converted with `nystra-hub convert`{source}, built from explicit constructor arguments;
it is not one of the catalogued releases.

```json
{json.dumps(official_kwargs, indent=2)}
```

{_papers(arch)}

## Measurements

{NO_MEASUREMENTS}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


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
    """Raise ValueError when a card repeats a heading, names a model-index metric of one dataset twice, prints a
    negative zero or puts a speed figure into the model-index: what the renderer guarantees (see the module doc)."""
    headings = _headings(markdown)
    problems = [f"repeated heading {h!r}" for h in sorted({h for h in headings if headings.count(h) > 1})]
    keys = [(r.dataset_name, r.metric_name) for r in eval_results or []]
    problems += [f"model-index lists {k} twice" for k in sorted({k for k in keys if keys.count(k) > 1})]
    problems += [f"model-index holds the speed figure {r.metric_name!r}" for r in eval_results or []
                 if re.search(r"speed|latency|time|throughput", f"{r.metric_type} {r.metric_name}", re.I)]
    problems += [f"negative zero {z!r}" for z in re.findall(r"(?<![\w.-])-0(?:\.0+)?(?![\d.])", markdown)]
    if problems:
        raise ValueError("inconsistent model card: " + "; ".join(problems))


# -- measurements -> the card's sections ------------------------------------------------------------------------------
def render_measurements(v: Variant, measurements: dict | None) -> tuple[list[EvalResult] | None, dict[str, str]]:
    """(model-index entries, {section: markdown}) for ``measurements``; ``(None, {})`` when there are none.

    Keys (all optional, unknown keys raise so that nothing is silently left out of a card):

    - ``results``: ``[{"dataset": "Set5", "metric": "PSNR", "value": 38.1, "attn_impl": "softmax", ...}]``: quality
      of these weights on a named dataset, the only entries of the ``model-index``;
    - ``bench``: ``nystra-hub bench`` reports (JSON dicts); the newest CPU run that timed our exact path and
      ``nystra`` gives the summary's CPU rows, every run a row of the PnP-Nystra-vs-exact table;
    - ``gpu``: ``benchmarks/gpu.sh`` reports; the variant's case of the first that has one gives the GPU rows;
    - ``fidelity``: ``nystra-hub fidelity`` reports of the trained reference models standing in for the variant;
    - ``references``: ``{name: reference.json}`` of those reference models (their ablations say whether their
      attention matters; without it the copy inside the fidelity report is used);
    - ``plots``: ``[{"path": "x.png", "caption": "...", "section": "speed"|"quality"}]`` (paths relative to the card);
    - ``command``: the command that rendered the card.

    A report may carry ``_page``, the link of its run page (:func:`render_run_page`) from the card.
    """
    if not measurements:
        return None, {}
    unknown = sorted(set(measurements) - {"results", "bench", "fidelity", "gpu", "plots", "command", "references"})
    if unknown:
        raise NotImplementedError(f"rendering of measurement section(s) {unknown} is not implemented yet")
    m = measurements
    sections: dict[str, str] = {}
    eval_results = None
    if m.get("results"):
        eval_results, sections["results"] = _render_results(v, m["results"])
    if m.get("bench") or m.get("gpu") or m.get("fidelity"):
        sections["summary"] = "\n\n".join(part for part in (summary_table(v, m), quality_line(v, m)) if part)
        sections["speed"] = _speed_section(v, m)
        sections["quality"] = _quality_section(m)
        sections["runs"] = _runs_section(v, m)
    return eval_results, sections


def _render_results(v: Variant, rows: list[dict]) -> tuple[list[EvalResult], str]:
    results, lines = [], ["## Measured quality of these weights", "", "| dataset | metric | value | attention |",
                          "|---|---|---|---|"]
    for row in rows:
        missing = [k for k in ("dataset", "metric", "value") if k not in row]
        if missing:
            raise ValueError(f"measurement {row} lacks {missing}")
        impl = row.get("attn_impl", "softmax")
        result = _result(v.task_description, str(row["dataset"]).lower(), str(row["dataset"]),
                         str(row["metric"]).lower(), f"{row['metric']} ({impl})", row["value"])
        result.dataset_split = row.get("split")
        results.append(result)
        lines.append(f"| {row['dataset']} | {row['metric']} | {row['value']} | {impl} |")
    return results, "\n".join(lines)


def _result(task_name: str, dataset_type: str, dataset: str, metric_type: str, name: str, value: float) -> EvalResult:
    # the dataset name is also its config: huggingface_hub groups a model-index by type and config
    return EvalResult(task_type=PIPELINE_TAG, task_name=task_name, dataset_type=dataset_type, dataset_name=dataset,
                      dataset_config=dataset, metric_type=metric_type, metric_name=name, metric_value=_rounded(value))


def _rounded(value: float, digits: int = 3) -> float:
    """``round`` without negative zero (a -0.0004 dB change is 0.0, not -0.0)."""
    return round(value, digits) + 0.0


def _signed(value: float | None, digits: int = 3) -> str:
    """A change with its sign; one that rounds to zero is printed as 0 (never -0.000)."""
    if value is None:
        return "–"
    value = _rounded(value, digits)
    return f"{value:.{digits}f}" if value == 0 else f"{value:+.{digits}f}"


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def fmt_time(seconds: float) -> str:
    """A median as the cards print it: seconds with 2 decimals from 1 s, else milliseconds with 1."""
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


def fmt_ratio(ratio: float | None) -> str:
    return "–" if not ratio else f"{ratio:.2f}×"


# -- facts of one run ------------------------------------------------------------------------------------------------
def _is_gpu(report: dict) -> bool:
    return str(report.get("settings", {}).get("device", "")).startswith("cuda") or "cases" in report


def run_date(report: dict) -> str:
    return str(report.get("created", ""))[:10] or "date not recorded"


def run_commit(report: dict) -> tuple[str, bool]:
    """(short commit, whether the tree had uncommitted changes). A GPU report's own ``git_commit`` (written by
    gpu.sh) is the one of its run; its environment's may be the machine's stale checkout."""
    commit = str(report.get("git_commit") or report.get("environment", {}).get("git_commit") or "")
    return (commit.split("+")[0][:7] or "not recorded"), commit.endswith("+dirty")


def run_machine(report: dict) -> str:
    env = report.get("environment", {})
    if _is_gpu(report):
        return f"one {env.get('device_name')}"
    threads = report.get("settings", {}).get("threads", env.get("torch_threads"))
    return (f"{env.get('cpu_model')} ({env.get('cpu_count')} logical cores), {threads} torch "
            f"thread{'' if threads == 1 else 's'}")


def run_page_link(report: dict, fallback: str = "") -> str:
    return report.get("_page") or fallback


def run_name(report: dict) -> str:
    return report.get("_name") or f"{report.get('schema', 'run').split('/')[0].split('.')[-1]} run"


def run_reference(report: dict) -> str:
    """``[name](page) (date, machine, commit abc1234)``: which run a number comes from."""
    name, link = run_name(report), run_page_link(report)
    label = f"[{name}]({link})" if link else f"`{name}`"
    return f"{label} ({run_date(report)}, {run_machine(report)}, commit {run_commit(report)[0]})"


def _timed(entry: dict | None) -> float | None:
    return (entry or {}).get("median_s") or None


def _gpu_results(report: dict, variant: str) -> list[dict]:
    """The timed input sizes of ``variant`` in a GPU report (a variant may have several cases: one per budget)."""
    return [r for c in report.get("cases", []) if c.get("variant") == variant for r in c.get("results", [])
            if r.get("arms")]


def _our_exact_routes(report: dict, result: dict) -> list[str]:
    """The arms of a bench run computing the model as trained in float32 through our code: eager, compiled or
    exported (not the approximation, not the enlarged window, not spandrel's graph, not half precision)."""
    names = []
    for name, arm in report["arms"].items():
        if (arm.get("attn_impl") in ("softmax", "sdpa", "flex") and arm.get("window") is None and not arm.get("plan")
                and arm.get("backend", "nystra_hub") == "nystra_hub" and arm.get("dtype") in (None, "float32")
                and arm.get("runtime_precision", "float32") in (None, "float32")
                and _timed(result["arms"].get(name))):
            names.append(name)
    return names


def _how(name: str, arm: dict) -> str:
    runtime = arm.get("runtime") or "torch"
    if runtime != "torch":
        return f'`backend="{runtime}"`'
    if arm.get("attn_impl") in ("sdpa", "flex"):
        return f'`attn_impl="{arm["attn_impl"]}"`'
    return "default"


# -- the first screen --------------------------------------------------------------------------------------------------
def primary_cpu_run(m: dict) -> dict | None:
    """The newest CPU bench run that timed both our exact path and ``nystra``: the summary's CPU rows."""
    runs = [r for r in m.get("bench") or [] if not _is_gpu(r) and r.get("references", {}).get("a")
            and any(_timed(res["arms"].get(r["references"]["a"])) and _timed(res["arms"].get("nystra"))
                    for res in r["results"])]
    return max(runs, key=lambda r: r.get("created", "")) if runs else None


def primary_gpu_run(v: Variant, m: dict) -> dict | None:
    return next((r for r in m.get("gpu") or [] if _gpu_results(r, v.name)), None)


def summary_size(v: Variant, m: dict) -> tuple[int | None, int | None]:
    """(CPU size, GPU size) of the summary: the size both measured if any, else each run's largest."""
    cpu, gpu = primary_cpu_run(m), primary_gpu_run(v, m)
    cpu_sizes = {res["size"] for res in cpu["results"] if _timed(res["arms"].get(cpu["references"]["a"]))
                 and _timed(res["arms"].get("nystra"))} if cpu else set()
    gpu_sizes = {res["size"] for res in _gpu_results(gpu, v.name)} if gpu else set()
    common = cpu_sizes & gpu_sizes
    if common:
        return max(common), max(common)
    return (max(cpu_sizes) if cpu_sizes else None), (max(gpu_sizes) if gpu_sizes else None)


def summary_rows(v: Variant, m: dict) -> list[dict]:
    """The summary table's rows: {route, how, device, input, time_s, vs_spandrel, vs_exact, run}; a row that was
    not measured has ``time_s`` None and says why in ``device``."""
    spec = ARCHITECTURES[v.arch].spec
    cpu_size, gpu_size = summary_size(v, m)
    rows: list[dict] = []
    cpu = primary_cpu_run(m)
    if cpu is None:
        rows.append(dict(route="our exact, eager", how="default", device="CPU: not measured", input="", time_s=None,
                         vs_spandrel=None, vs_exact=None, run=None))
    else:
        refs = cpu["references"]
        result = next(res for res in cpu["results"] if res["size"] == cpu_size)
        device = f"CPU, {cpu['environment'].get('cpu_model')}, {cpu['settings']['threads']} threads, float32"

        def cpu_row(route: str, name: str, how: str) -> dict:
            entry = result["arms"][name]
            return dict(route=route, how=how, device=device, input=f"{cpu_size}²", time_s=entry["median_s"],
                        vs_spandrel=entry.get("speedup", {}).get(f"f:{refs['f']}") if refs.get("f") else None,
                        vs_exact=entry.get("speedup", {}).get(f"a:{refs['a']}"), run=cpu)
        rows.append(cpu_row("our exact, eager", refs["a"], "default"))
        routes = [n for n in _our_exact_routes(cpu, result) if n != refs["a"]]
        fastest = min(routes, key=lambda n: result["arms"][n]["median_s"], default=None)
        if fastest is not None and result["arms"][fastest]["median_s"] < result["arms"][refs["a"]]["median_s"]:
            rows.append(cpu_row(f"our fastest CPU route: `{fastest}`", fastest, _how(fastest, cpu["arms"][fastest])))
        else:
            exported = [n for n in routes if (cpu["arms"][n].get("runtime") or "torch") != "torch"]
            rows.append(dict(route="our fastest CPU route", how="", input="", time_s=None, vs_spandrel=None,
                             vs_exact=None, run=cpu, device="none faster than the eager path measured" if exported
                             else "not measured (no compiled or exported route was run for this variant)"))
        rows.append(cpu_row("`nystra` (PnP-Nystra)", "nystra", '`attn_impl="nystra"`'))
    gpu = primary_gpu_run(v, m)
    if gpu is None:
        other = m["gpu"][0] if m.get("gpu") else None
        why = "GPU: not measured on GPU" + (f" (the {other['environment'].get('device_name')} run of "
                                            f"{run_date(other)} did not include {v.name})" if other else "")
        rows.append(dict(route="our exact, bfloat16", how="", device=why, input="", time_s=None, vs_spandrel=None,
                         vs_exact=None, run=None))
    else:
        result = next(res for res in _gpu_results(gpu, v.name) if res["size"] == gpu_size)
        arms = result["arms"]
        spandrel, exact = _timed(arms.get("spandrel-fp32")), _timed(arms.get("exact-fp32"))
        device = f"GPU, {gpu['environment'].get('device_name')}, bfloat16"
        for route, name, how in (("our exact, bfloat16", "exact-bf16", '`dtype="bfloat16"` (default on a GPU)'),
                                 ("`nystra`, bfloat16", "nystra-bf16", '`attn_impl="nystra"`')):
            t = _timed(arms.get(name))
            rows.append(dict(route=route, how=how if t else "", device=device if t else f"GPU: {NOT_MEASURED}",
                             input=f"{gpu_size}²" if t else "", time_s=t,
                             vs_spandrel=spandrel / t if t and spandrel else None,
                             vs_exact=exact / t if t and exact else None, run=gpu))
    for row in rows:
        if row["time_s"] is not None and not spec.spandrel:
            row["vs_spandrel"] = None
    return rows


def summary_table(v: Variant, m: dict) -> str:
    rows = summary_rows(v, m)
    spec = ARCHITECTURES[v.arch].spec
    lines = ["| route | how | device | input | median time | vs spandrel | vs our exact |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["time_s"] is None:
            lines.append(f"| {row['route']} | {row['how']} | {row['device']} | | | | |")
            continue
        lines.append(f"| {row['route']} | {row['how']} | {row['device']} | {row['input']} | {fmt_time(row['time_s'])} "
                     f"| {fmt_ratio(row['vs_spandrel'])} | {fmt_ratio(row['vs_exact'])} |")
    notes = []
    for run in dict.fromkeys(id(r["run"]) for r in rows if r["run"] is not None):
        report = next(r["run"] for r in rows if id(r["run"]) == run)
        kind = "GPU rows" if _is_gpu(report) else "CPU rows"
        notes.append(f"{kind}: {run_reference(report)}, {_timing(report)}")
    spandrel = ("spandrel, the usual way to run the checkpoint, in float32" if spec.spandrel else
                f"spandrel does not support {spec.title}, so there is no spandrel baseline")
    notes.append(f"Ratios: medians of one run, above 1× is faster; vs spandrel: {spandrel}; vs our exact: our "
                 "eager exact path in float32 on the same device and input. Random weights (the time does not "
                 "depend on them)" + ("; the input is the low-resolution image." if v.scale > 1 else "."))
    return "\n".join(lines) + "\n\n" + "\n".join(f"{n}  " if i < len(notes) - 1 else n for i, n in enumerate(notes))


def _timing(report: dict) -> str:
    settings = report.get("settings", {})
    if _is_gpu(report):
        return f"{settings.get('runs')} timed rounds after a warm-up round, medians."
    warmup = settings.get("warmup")
    return (f"{'no warm-up' if not warmup else f'{warmup} warm-up'} + {settings.get('runs')} timed rounds, "
            "medians.")


def _best_fidelity(m: dict) -> dict | None:
    runs = [r for r in m.get("fidelity") or [] if r["arms"].get("nystra") and not r["arms"]["nystra"].get("error")
            and r["arms"]["nystra"].get("delta_psnr_gt") is not None]
    return max(runs, key=lambda r: len(r["images"])) if runs else None  # the first of the largest runs


def _ablations(m: dict, report: dict) -> dict | None:
    info = (m.get("references") or {}).get(report["model"]["name"])
    return (info or {}).get("ablations") or report.get("training", {}).get("ablations")


def _image_sets(names: Iterable[str]) -> str:
    return " + ".join(dict.fromkeys(str(n).split("/")[0] for n in names))


def attention_verdict(ablations: dict | None) -> tuple[int, int, str]:
    """(checks passed, checks run, the checks in words) of a reference model's attention-matters ablations."""
    if not ablations:
        return 0, 0, ""
    limits = ablations.get("thresholds_db", {})
    parts, passed, run = [], 0, 0
    for key in ("position_bias_dropped", "window_x2"):
        entry = ablations.get(key)
        if not entry:
            continue
        run += 1
        passed += bool(entry.get("matters"))
        parts.append(f"{entry['what']}: {_signed(entry['change_db'])} dB, "
                     f"{'at least' if entry.get('matters') else 'under'} {limits.get(key)} dB")
    return passed, run, "; ".join(parts)


def _reference_link(m: dict, name: str, prefix: str = "../") -> str:
    return (f"[`{name}`]({prefix}reference_models/{name}/README.md)" if name in (m.get("references") or {}) else
            f"`{name}`")


def quality_line(v: Variant, m: dict) -> str:
    report = _best_fidelity(m)
    if report is None:
        return ("**Quality:** not measured (PnP-Nystra changes the output; no quality measurement is included in "
                "this card).")
    arm, model = report["arms"]["nystra"], report["model"]
    delta = arm["delta_psnr_gt"]
    change = "by less than 0.001 dB" if abs(delta) < 0.0005 else f"by {_signed(delta)} dB"
    vs_exact = ("" if arm.get("psnr_vs_exact") is None else
                f"; its output is {arm['psnr_vs_exact']:.1f} dB PSNR from the exact model's")
    passed, run, checks = attention_verdict(_ablations(m, report))
    if not run:
        caveat = " Whether that model's attention matters was not checked."
    elif passed == run:
        caveat = f" That model's attention matters by both checks ({checks})."
    else:
        caveat = (f" **Caveat: that model fails {'both' if passed == 0 and run == 2 else f'{run - passed} of {run}'} "
                  f"attention-matters checks** ({checks}), so this says little about released weights.")
    scale = model.get("scale", v.scale)
    other = ("" if scale == v.scale else
             f" The reference model is x{scale}: no x{v.scale} {_title(v.arch)} reference model exists.")
    return (f"**Quality:** PnP-Nystra (`attn_impl=\"nystra\"`) changes held-out PSNR {change}{vs_exact}, on the "
            f"reference model {_reference_link(m, model['name'])} ({model.get('parameters', '?')} parameters, "
            f"{report['task']['description']}; {len(report['images'])} held-out images of "
            f"{_image_sets(i['image'] for i in report['images'])}), not on these weights.{caveat}{other}")


# -- details ---------------------------------------------------------------------------------------------------------
def nystra_rows(v: Variant, m: dict) -> list[dict]:
    """PnP-Nystra against our exact path, one row per run and input size (CPU float32, GPU bfloat16)."""
    rows = []
    for report in sorted((r for r in m.get("bench") or [] if not _is_gpu(r)), key=lambda r: r.get("created", "")):
        a = report.get("references", {}).get("a")
        for result in report["results"]:
            exact, nystra = result["arms"].get(a), result["arms"].get("nystra")
            if _timed(exact) and _timed(nystra):
                rows.append(dict(run=report, device="CPU, float32", size=result["size"], exact_s=exact["median_s"],
                                 nystra_s=nystra["median_s"], ratio=nystra["speedup"][f"a:{a}"]))
    for report in m.get("gpu") or []:
        for result in _gpu_results(report, v.name):
            exact, nystra = _timed(result["arms"].get("exact-bf16")), _timed(result["arms"].get("nystra-bf16"))
            if exact and nystra:
                rows.append(dict(run=report, device=f"{report['environment'].get('device_name')}, bfloat16",
                                 size=result["size"], exact_s=exact, nystra_s=nystra, ratio=exact / nystra))
    return rows


def _paper_comparison(v: Variant, m: dict) -> str | None:
    """The paper's comparison (both at the enlarged window, bias and masks dropped) wherever a run timed it."""
    parts = []
    for report in m.get("bench") or []:
        refs = report.get("references", {})
        if _is_gpu(report) or not refs.get("c"):
            continue
        for result in report["results"]:
            e = next((n for n in result["arms"] if re.fullmatch(r"nystra-w\d+-paper", n)), None)
            entry = result["arms"].get(e or "", {})
            if _timed(entry):
                vs_c, vs_a = (entry["speedup"][f"{k}:{refs[k]}"] for k in ("c", "a"))
                parts.append(f"{fmt_ratio(vs_c)} on CPU against `{refs['c']}` (`{e}` vs the model as trained: "
                             f"{fmt_ratio(vs_a)}; {run_name(report)}, {result['size']}²)")
    for report in m.get("gpu") or []:
        for result in _gpu_results(report, v.name):
            arms = result["arms"]
            for tag, precision in (("fp32", "float32"), ("bf16", "bfloat16")):
                exact = next((n for n in arms if re.fullmatch(rf"exact-w\d+-paper-{tag}", n)), None)
                nystra = next((n for n in arms if re.fullmatch(rf"nystra-w\d+-paper-{tag}", n)), None)
                c, e = _timed(arms.get(exact or "")), _timed(arms.get(nystra or ""))
                if c and e:
                    parts.append(f"{fmt_ratio(c / e)} in {precision} on the {report['environment'].get('device_name')}"
                                 f" (vs the model as trained in {precision}: "
                                 f"{fmt_ratio((_timed(arms.get(f'exact-{tag}')) or 0) / e)}; {result['size']}²)")
    if not parts:
        return None
    return ("The paper's comparison, PnP-Nystra against exact attention both at an enlarged window with the position "
            "bias and masks dropped (both then compute another function than the trained model): "
            + "; ".join(parts) + ".")


def _speed_section(v: Variant, m: dict) -> str:
    out = ["## PnP-Nystra against exact attention, run by run"]
    rows = nystra_rows(v, m)
    if rows:
        lines = ["| run | device | input | our exact | `nystra` | nystra vs exact |", "|---|---|---|---|---|---|"]
        for row in rows:
            report = row["run"]
            link = run_page_link(report)
            name = f"[{run_name(report)}]({link})" if link else run_name(report)
            lines.append(f"| {name} ({run_date(report)}, commit {run_commit(report)[0]}) | {row['device']} | "
                         f"{row['size']}² | {fmt_time(row['exact_s'])} | {fmt_time(row['nystra_s'])} | "
                         f"{fmt_ratio(row['ratio'])} |")
        low, high = (f"{f(row['ratio'] for row in rows):.2f}" for f in (min, max))
        span = low if low == high else f"{low}–{high}"
        out.append(f"At the trained window {v.window}, `nystra` ran at {span}× our exact path in these runs "
                   "(above 1× is faster; each row is one run: compare times within a row only).")
        out.append("\n".join(lines))
    else:
        out.append("No run timed `nystra` and our exact path together.")
    paper = _paper_comparison(v, m)
    if paper:
        out.append(paper)
    for plot in m.get("plots") or []:
        if plot.get("section") == "speed":
            out.append(f"![{plot['caption']}]({plot['path']})")
    return "\n\n".join(out)


_QUALITY_ARMS = ("nystra", "nystromformer", "performer", "exact-w{W}-paper", "nystra-w{W}-paper")


def _quality_section(m: dict) -> str | None:
    report = _best_fidelity(m)
    if report is None:
        return None
    window, arms = report.get("recipe", {}).get("window"), report["arms"]
    names = [n.format(W=window) for n in _QUALITY_ARMS if n.format(W=window) in arms]
    lines = ["| arm | what it is | ΔPSNR vs ground truth (dB) | PSNR vs the exact output (dB) |", "|---|---|---|---|"]
    shown = [(report, n) for n in names]
    for other in m.get("fidelity") or []:  # a calibrated plan measured on the same model and images
        if other is not report and other["model"]["name"] == report["model"]["name"]:
            shown += [(other, n) for n in other["arms"] if n.startswith("calibrated-")]
    for run, name in shown:
        arm = run["arms"][name]
        what = arm.get("config", {}).get("description") or ""
        if arm.get("error"):
            lines.append(f"| `{name}` | {what} | {NOT_MEASURED} | |")
            continue
        where = "" if run is report else f" ({run_name(run)})"
        lines.append(f"| `{name}`{where} | {what} | {_signed(arm['delta_psnr_gt'])} | "
                     f"{_num(arm.get('psnr_vs_exact'), '.1f')} |")
    exact, baseline = arms["exact"], report["input_baseline"]
    link = run_page_link(report)
    out = ["## Quality cost, measured on a reference model",
           f"On `{report['model']['name']}`, {len(report['images'])} held-out images, protocol "
           f"{report['protocol']['name']} ({report['protocol'].get('channel', '')}): the exact model scores "
           f"{exact['psnr_gt']:.3f} dB against the ground truth, the input ({baseline['description']}) "
           f"{baseline['psnr_gt']:.3f} dB. From " + (f"[{run_name(report)}]({link})" if link else run_name(report))
           + f" ({run_date(report)}, commit {run_commit(report)[0]}); every arm is on its run page.",
           "\n".join(lines)]
    for plot in m.get("plots") or []:
        if plot.get("section") == "quality":
            out.append(f"![{plot['caption']}]({plot['path']})")
    return "\n\n".join(out)


def _runs_section(v: Variant, m: dict) -> str:
    reports = [*(m.get("bench") or []), *(m.get("gpu") or []), *(m.get("fidelity") or [])]
    lines = ["## Runs this card is drawn from", ""]
    for report in reports:
        what = ("GPU" if _is_gpu(report) else "fidelity" if "fidelity" in str(report.get("schema")) else "CPU")
        lines.append(f"- {run_reference(report)}: {what}" + ("" if what == "fidelity" else f", {_timing(report)}"))
    return "\n".join(lines)


# -- the pages of the runs (benchmarks/*.md) --------------------------------------------------------------------------
def render_run_page(report: dict, json_name: str) -> str:
    """The page of one run: its settings and every table of the JSON ``json_name`` (a bench, GPU or fidelity
    report), for the cards to link instead of repeating them."""
    schema = str(report.get("schema", ""))
    commit, dirty = run_commit(report)
    env = report.get("environment", {})
    facts = [("Date", report.get("created", "not recorded")),
             ("Machine", run_machine(report) + f", torch {env.get('torch')}"
              + (f", CUDA {env.get('cuda')}, spandrel {env.get('spandrel')}" if _is_gpu(report) else "")),
             ("nystra_hub commit", commit + (" (the tree had uncommitted changes)" if dirty else "")),
             ("Command", f"`{public_command(report.get('command', ''))}`")]
    if schema.startswith("nystra_hub.fidelity/"):
        title, body = f"Fidelity run on `{report['model']['name']}`", _fidelity_page(report)
    elif schema.startswith("nystra_hub.gpu_bench/"):
        title, body = f"GPU run on one {env.get('device_name')}", _gpu_page(report)
    elif schema.startswith("nystra_hub.bench/"):
        title, body = f"Bench run of `{report['model']['name']}` on {'GPU' if _is_gpu(report) else 'CPU'}", \
            _bench_page(report)
        facts.append(("Timing", f"{_timing(report)} Arms interleaved round-robin in one process; protocol "
                                f"{report['settings'].get('protocol')}"))
        facts.append(("Weights, input", f"{report['model'].get('weights')}; {report['settings'].get('input')}"))
    else:
        raise ValueError(f"{json_name}: no page for a {schema or 'schema-less'} report")
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {val} |" for k, val in facts)])
    return (f"# {title}, {run_date(report)}\n\nRendered by `nystra-hub cards` from [`{json_name}`]({json_name}), "
            f"which holds every timed round and setting.\n\n{table}\n\n{body}\n")


def _arm_label(name: str, arm: dict) -> str:
    return f"({arm['letter']}) {name}" if arm.get("letter") else name


def _bench_page(report: dict) -> str:
    refs = report.get("references", {})
    out = ["## Arms", "\n".join(["| arm | what it is |", "|---|---|", *(
        f"| {_arm_label(n, a)} | {a.get('description', '')} |" for n, a in report["arms"].items())])]
    for result in report["results"]:
        out.append(f"## Input {'×'.join(map(str, result['input_shape'][2:]))}")
        out.append(_bench_table(report, result))
        split = _speed_split(result, refs)
        if split:
            out.append(split)
    if report.get("roofline"):
        out.append(f"GFLOP/s = counted FLOPs (matmuls, convolutions; a runtime arm: those of the eager arm of the "
                   f"same function) / median time; the GEMM roofline of this machine is "
                   f"{report['roofline']['best_gflops_per_s']:.0f} GFLOP/s ({report['roofline']['method']}).")
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
        label = _arm_label(name, report["arms"].get(name, {}))
        if not entry.get("times_s"):
            lines.append(f"| {label} | {NOT_MEASURED} |" + " |" * (len(heads) - 2))
            continue
        cells = [label, _num(entry["median_s"] * 1e3, ".0f")]
        for k in letters:
            cells.append(fmt_ratio(entry.get("speedup", {}).get(f"{k}:{refs[k]}")))
        peak = entry.get("peak_rss_bytes", entry.get("peak_bytes"))
        cells += [_num(peak / 2**20 if peak else None, ".0f"),
                  _num(entry["flops"] / 1e9 if entry.get("flops") else None, ".1f"),
                  _num(entry.get("gflops_per_s"), ".0f")]
        if with_psnr:
            identical = "psnr_vs_a_db" in entry and entry["psnr_vs_a_db"] is None
            cells.append("identical" if identical else _num(entry.get("psnr_vs_a_db"), ".1f"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


GPU_ARM_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def _gpu_page(report: dict) -> str:
    settings = report["settings"]
    out = [f"{settings['weights']}; {settings['input']}; {settings['order']}; {settings['runs']} timed rounds, "
           "medians; TF32 matmul " + ("on" if settings.get("tf32_matmul") else "off") + ". Every arm takes a float32 "
           "input and returns float32; ours keep float32 weights and run half precision under autocast (residual "
           "stream, norms and softmax in float32, a non-finite call redone in float32), spandrel's are cast whole. "
           "PSNR is against our float32 exact output on the same input."]
    for case in report["cases"]:
        for result in case.get("results", []):
            if "arms" not in result:
                out.append(f"## {case.get('variant') or case.get('model')}, input {result['size']}²\n\nNot measured "
                           f"({result.get('skipped') or NOT_MEASURED}).")
                continue
            out.append(f"## {case.get('variant') or case.get('model')}, input "
                       f"{'×'.join(map(str, result['input_shape'][2:]))}")
            out.append(_gpu_table(case, result["arms"]))
            claim = _gpu_paper_claim(case, result["arms"])
            if claim:
                out.append(claim)
    stress = report.get("fp16_stress")
    if stress:
        out.append(f"## float16 overflow check\n\n{stress['model']}, {stress['inflation']}, so that the residual "
                   f"stream passes 65504: a plain float16 cast gave {stress['plain_fp16_nonfinite']} non-finite output "
                   f"values; ours {stress['ours_fp16_nonfinite']} ({stress['ours_fp32_fallbacks']} float32 redos), "
                   f"{_num(stress['ours_fp16_psnr_vs_fp32'], '.1f')} dB against float32.")
    out.append("Peak memory is not listed: the run measured the process peak with every arm's model resident and "
               "the masks of earlier arms cached, which is not a per-arm figure.")
    return "\n\n".join(out)


def _gpu_table(case: dict, arms: dict) -> str:
    ref = _timed(arms.get("spandrel-fp32"))
    exact = _timed(arms.get("exact-fp32"))
    lines = ["| arm | dtype | median ms | vs spandrel fp32 | vs our exact fp32 | PSNR vs our fp32 (dB) | non-finite |",
             "|---|---|---|---|---|---|---|"]
    for name, row in arms.items():
        dtype = case["arms"].get(name, {}).get("dtype") or GPU_ARM_DTYPES.get(name.rsplit("-", 1)[-1], "?")
        t = _timed(row)
        if t is None:
            lines.append(f"| {name} | {dtype} | {NOT_MEASURED} | | | | |")
            continue
        quality = row.get("psnr_vs_exact_fp32")
        quality = quality if isinstance(quality, str) else _num(quality, ".1f")
        lines.append(f"| {name} | {dtype} | {t * 1e3:.1f} | {fmt_ratio(ref / t if ref else None)} | "
                     f"{fmt_ratio(exact / t if exact else None)} | {quality} | {row.get('nonfinite_values')} |")
    return "\n".join(lines)


def _gpu_paper_claim(case: dict, arms: dict) -> str | None:
    window = case["recipe"]["window"]
    parts = []
    for tag in ("fp32", "bf16"):
        exact = _timed(arms.get(f"exact-w{window}-paper-{tag}"))
        nystra = _timed(arms.get(f"nystra-w{window}-paper-{tag}"))
        if exact and nystra:
            parts.append(f"{exact / nystra:.2f}× in {GPU_ARM_DTYPES[tag]}")
    if not parts:
        return None
    return (f"The paper's comparison (PnP-Nystra vs exact attention, both at window {window} with bias and masks "
            f"dropped): {', '.join(parts)}.")


_FIDELITY_ROWS = ("exact", "sdpa", "spandrel", "nystra", "exact-w{W}-paper", "exact-w{W}", "nystra-w{W}-paper",
                  "nystra-w{W}", "nystra-w{W}-maskdrop", "nystromformer", "performer", "nystromformer-w{W}-paper",
                  "performer-w{W}-paper", "nystra-biaspooled-maskdrop", "nystra-biasdrop-maskexact",
                  "nystra-biasdrop-maskdrop")


def _fidelity_page(report: dict) -> str:
    model, training, proto = report["model"], report.get("training", {}), report["protocol"]
    window = report.get("recipe", {}).get("window")
    trained = (f"Trained by `{public_command(training['command'])}`; held-out PSNR "
               f"{_num(training.get('heldout_psnr'), '.2f')} dB vs {_num(training.get('heldout_input_psnr'), '.2f')} "
               f"dB for the input baseline ({report['input_baseline']['description']})." if training.get("command")
               else "No training record (not a trained reference model).")
    passed, run, checks = attention_verdict(training.get("ablations"))
    matters = f" Does its attention matter? {passed} of {run} checks pass ({checks})." if run else ""
    names = [p.format(W=window) for p in _FIDELITY_ROWS] + [a for a in report["arms"] if a not in _swept(report)]
    names = [name for name in dict.fromkeys(names) if name in report["arms"]]
    lines = ["| arm | PSNR vs exact (dB) | SSIM vs exact | PSNR vs GT (dB) | ΔPSNR (GT) dB | attention rel. error "
             "(mean) |", "|---|---|---|---|---|---|"]
    lines += [_fidelity_row(name, report["arms"][name]) for name in names]
    out = [f"Reference model `{model['name']}` ({model['arch']}, {model.get('parameters', '?')} parameters, "
           f"{report['task']['description']}). {trained}{matters}",
           f"{len(report['images'])} held-out images ({_image_sets(i['image'] for i in report['images'])}); protocol "
           f"{proto['name']} ({proto.get('channel', '')}, border {proto.get('border_crop', 0)}). PSNR vs exact "
           "compares each arm's output with the exact model's own output (higher is closer, ∞ = identical); "
           "ΔPSNR (GT) is the change of the ground-truth PSNR against the exact model.",
           "## Arms", "\n".join(lines)]
    sweep = report.get("sweep") or {}
    for key, label in (("landmarks_trained_window", "at the trained window"),
                       ("landmarks_enlarged_window", f"at window {sweep.get('enlarged_window')}, paper form")):
        points = sorted((int(k), n) for k, n in (sweep.get(key) or {}).items() if n in report["arms"])
        if points:
            rows = [f"| {k} | {_num(report['arms'][n].get('psnr_vs_exact'), '.1f')} | "
                    f"{_signed(report['arms'][n].get('delta_psnr_gt'))} |" for k, n in points]
            out += [f"## Landmarks {label}", "\n".join(["| landmarks m | PSNR vs exact (dB) | ΔPSNR (GT) dB |",
                                                          "|---|---|---|", *rows])]
    return "\n\n".join(out)


def _swept(report: dict) -> set[str]:
    sweep = report.get("sweep") or {}
    return {*(sweep.get("landmarks_trained_window") or {}).values(),
            *(sweep.get("landmarks_enlarged_window") or {}).values()}


def _fidelity_row(name: str, arm: dict) -> str:
    cfg = arm.get("config", {})
    label = f"({cfg['letter']}) {name}" if cfg.get("letter") else name
    if arm.get("error"):
        return f"| {label} | {NOT_MEASURED} | | | | |"
    vs_exact = "∞ (identical)" if arm.get("psnr_vs_exact") is None else f"{arm['psnr_vs_exact']:.1f}"
    # the per-layer diagnostic runs one implementation in every layer; a per-layer plan has none to show
    diag = None if cfg.get("plan") else (arm.get("layer_diagnostic") or {}).get("rel_error_mean")
    return (f"| {label} | {vs_exact} | {arm['ssim_vs_exact']:.5f} | {arm['psnr_gt']:.3f} | "
            f"{_signed(arm['delta_psnr_gt'])} | {_num(diag, '.4f')} |")


# -- the card of a shipped reference model --------------------------------------------------------------------------
def build_reference_card(info: dict, fidelity: list[dict] | None = None, *, command: str | None = None) -> ModelCard:
    """The card (``README.md``) of a reference model folder from its ``reference.json`` (``info``): model-index
    with its held-out PSNR and SSIM on the named test images, the attention-matters ablations, the training
    command, and what PnP-Nystra costs on it when ``fidelity`` reports of it are given (their ``_page`` links are
    relative to the model's folder)."""
    arch, heldout, proto = info["arch"], info["heldout"], info["heldout"]["protocol"]
    sets = _image_sets(info["heldout_images"])
    protocol = f"{proto['name']}: {proto.get('channel')}, border {proto.get('border_crop', 0)}"
    task = info["degradation"]["description"]
    results = [_result(task, "-".join(sets.lower().split(" + ")), f"{sets} (held out)", metric,
                       f"{label} ({protocol})", heldout[metric])
               for metric, label in (("psnr", "PSNR"), ("ssim", "SSIM"))]
    data = ModelCardData(library_name=LIBRARY_NAME, pipeline_tag=PIPELINE_TAG, license=REFERENCE_LICENSE,
                         tags=["image-restoration", "pnp-nystra", "window-attention", arch, info["task"],
                               *_TASK_TAGS.get(info["task"], []), "reference-model", *_paper_tags(arch)],
                         model_name=info["name"], eval_results=results, architecture=arch, task=info["task"],
                         scale=info["scale"], training_window=info["window"])
    body = f"""
# {info['name']}: a small {_title(arch)} trained by nystra_hub (reference model)

| held-out images | protocol | PSNR | SSIM | input ({heldout['input_baseline']}) |
|---|---|---|---|---|
| {len(info['heldout_images'])} of {sets} | {protocol} | {heldout['psnr']:.3f} dB | {heldout['ssim']:.4f} | \
{heldout['input_psnr']:.3f} dB, SSIM {heldout['input_ssim']:.4f} |

A {info.get('parameters', '?')}-parameter {_title(arch)} for {task}, trained by this repository so that the
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

{_papers(arch)}
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
    rows = [f"| {e['what']} | {e['psnr']:.3f} | {_signed(e['change_db'])} | ≥ {limits.get(k)} | "
            f"{'passes' if e.get('matters') else 'fails'} |"
            for k, e in ((k, ablations.get(k)) for k in ("position_bias_dropped", "window_x2")) if e]
    trained = ablations.get("trained_psnr", info["heldout"]["psnr"])
    return "\n".join([f"**Does its attention matter?** {verdict} Held-out PSNR when part of its attention is "
                      f"changed ({trained:.3f} dB as trained):", "",
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
        f"{len(info['train_images'])} images of {_image_sets(info['train_images'])}; the "
        f"{len(info['heldout_images'])} held-out images of {_image_sets(info['heldout_images'])} were never seen in "
        "training.",
        (f"Fine-tuned from the weights trained by `{public_command(init['command'])}` ({init.get('git', '')})."
         if init else ""),
        notes if not notes or notes.endswith(".") else notes + "."] if part)


def _reference_fidelity(reports: list[dict]) -> str:
    if not reports:
        return "**PnP-Nystra on it:** not measured."
    report = max(reports, key=lambda r: len(r["images"]))
    window, arms = report.get("recipe", {}).get("window"), report["arms"]
    names = [n.format(W=window) for n in _QUALITY_ARMS]
    parts = [f"`{n}` {_signed(arms[n]['delta_psnr_gt'])} dB" for n in names if n in arms and not arms[n].get("error")]
    link = run_page_link(report)
    page = f"[{run_name(report)}]({link})" if link else run_name(report)
    return (f"**PnP-Nystra on it** (change of held-out PSNR against exact attention, {len(report['images'])} "
            f"images; {page}, {run_date(report)}, commit {run_commit(report)[0]}): " + ", ".join(parts) + ".")


# -- `nystra-hub cards` ------------------------------------------------------------------------------------------------
def repo_link(path: str | Path, prefix: str = "../") -> str:
    """The link from a card to the page of the JSON at ``path``: through ``prefix`` to the repository root when the
    JSON lies under ``benchmarks/``, else its page's file name."""
    parts = Path(path).with_suffix(".md").parts
    if "benchmarks" in parts:
        i = len(parts) - 1 - parts[::-1].index("benchmarks")
        return prefix + "/".join(parts[i:])
    return parts[-1]


def read_report(path: Path, kind: str) -> dict:
    report = json.loads(Path(path).read_text())
    if not str(report.get("schema", "")).startswith(f"nystra_hub.{kind}/"):
        what = "benchmarks/gpu.sh" if kind == "gpu_bench" else kind
        raise ValueError(f"{path}: not a {what} report (schema {report.get('schema')!r})")
    report["_name"], report["_page"] = Path(path).stem, repo_link(path)
    return report


def write_run_page(path: str | Path, report: dict) -> Path:
    """Write the page of the run whose JSON is at ``path`` next to it (``x.json`` -> ``x.md``)."""
    page = Path(path).with_suffix(".md")
    page.write_text(render_run_page(report, Path(path).name))
    return page


def read_reference(folder: str | Path) -> dict:
    return json.loads((Path(folder) / "reference.json").read_text())


def measurements_from_files(variant: str, bench: list[str] | None, fidelity: list[str] | None,
                            out_dir: Path, gpu: list[str] | None = None,
                            references: list[str] | None = None) -> dict | None:
    """Read bench/fidelity/GPU JSON (and the reference models' ``reference.json``) and draw the card's plots next
    to it from the JSON: the newest CPU run's times (``<variant>--speed-cpu.png``), the GPU run's
    (``<variant>--speed-gpu.png``), the fidelity run's (``<variant>--<stem>.png``), one run on one machine each."""
    if not bench and not fidelity and not gpu:
        return None
    v = get_variant(variant)
    m: dict = {"bench": [], "fidelity": [], "plots": [], "gpu": [], "references": {}}
    for folder in references or []:
        info = read_reference(folder)
        m["references"][info["name"]] = info
    m["gpu"] = [read_report(Path(p), "gpu_bench") for p in gpu or []]
    for path in map(Path, bench or []):
        report = read_report(path, "bench")
        if report["model"]["name"] != variant:
            raise ValueError(f"{path} measured {report['model']['name']}, not {variant}")
        m["bench"].append(report)
    cpu = primary_cpu_run(m)
    if cpu is not None:
        target = f"{variant}--speed-cpu.png"
        plot_route_bars(cpu, out_dir / target)
        m["plots"].append({"path": target, "section": "speed", "caption": (
            f"Median time per arm, {run_name(cpu)} ({run_date(cpu)}, {run_machine(cpu)})")})
    gpu_run = primary_gpu_run(v, m)
    if gpu_run is not None:
        target = f"{variant}--speed-gpu.png"
        plot_gpu_bars(gpu_run, variant, out_dir / target)
        m["plots"].append({"path": target, "section": "speed", "caption": (
            f"Median time per arm, {run_name(gpu_run)} ({run_date(gpu_run)}, {run_machine(gpu_run)})")})
    for path in map(Path, fidelity or []):
        m["fidelity"].append(read_report(path, "fidelity"))
    best = _best_fidelity(m)
    if best is not None:
        target = f"{variant}--{best['_name']}.png"
        plot_fidelity([best], out_dir / target)
        m["plots"].append({"path": target, "section": "quality", "caption": (
            f"Quality per landmark count and per arm on {best['model']['name']}, {run_name(best)}")})
    return m
