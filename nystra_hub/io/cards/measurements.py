"""A variant card's measurements: :func:`measurements_from_files` reads the bench, GPU and fidelity JSON (and the
reference models' ``reference.json``) and draws the card's plots; :func:`render_measurements` turns them into the
card's sections: its first screen (:func:`summary_table` of the routes a user would pick, :func:`quality_line`) and
the details (PnP-Nystra against exact attention run by run, the quality table, the runs the card is drawn from)."""

from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import EvalResult

from nystra_hub.io.cards.format import (
    NOT_MEASURED,
    QUALITY_ARMS,
    arch_title,
    attention_verdict,
    eval_result,
    fmt_ratio,
    fmt_time,
    image_sets,
    is_gpu,
    num,
    read_reference,
    read_report,
    run_commit,
    run_date,
    run_machine,
    run_name,
    run_page_link,
    run_reference,
    run_timing,
    signed,
    timed,
    window_limits,
)
from nystra_hub.io.plots import plot_fidelity, plot_gpu_bars, plot_route_bars
from nystra_hub.io.variants import Variant, get_variant
from nystra_hub.models import ARCHITECTURES


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

    A report may carry ``_page``, the link of its run page (:func:`nystra_hub.io.cards.render_run_page`) from the card.
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
        result = eval_result(v.task_description, str(row["dataset"]).lower(), str(row["dataset"]),
                         str(row["metric"]).lower(), f"{row['metric']} ({impl})", row["value"])
        result.dataset_split = row.get("split")
        results.append(result)
        lines.append(f"| {row['dataset']} | {row['metric']} | {row['value']} | {impl} |")
    return results, "\n".join(lines)


# -- the first screen ------------------------------------------------------------------------------------------------
def _gpu_results(report: dict, variant: str) -> list[dict]:
    """The timed input sizes of ``variant`` in a GPU report (a variant may have several cases: one per budget)."""
    return [r for c in report.get("cases", []) if c.get("variant") == variant for r in c.get("results", [])
            if r.get("arms")]


def _our_exact_routes(report: dict, result: dict, bfloat16_default: bool = False) -> list[str]:
    """The arms of a bench run computing the model as trained through our code: eager, compiled or exported, in
    float32, or OpenVINO in bfloat16 where that is the architecture's default on a CPU (``bfloat16_default``); not
    the approximation, not the enlarged window, not spandrel's graph."""
    names = []
    for name, arm in report["arms"].items():
        precision = arm.get("runtime_precision") or "float32"
        if (arm.get("attn_impl") in ("softmax", "sdpa", "flex") and arm.get("window") is None and not arm.get("plan")
                and arm.get("backend", "nystra_hub") == "nystra_hub" and arm.get("dtype") in (None, "float32")
                and (precision == "float32" or (bfloat16_default and precision == "bfloat16"
                                                and arm.get("runtime") == "openvino"))
                and timed(result["arms"].get(name))):
            names.append(name)
    return names


def _how(name: str, arm: dict) -> str:
    runtime = arm.get("runtime") or "torch"
    if runtime != "torch" and arm.get("runtime_precision") == "bfloat16":
        return f'`backend="{runtime}"`, `dtype="bfloat16"` (what `dtype="auto"` picks on a CPU with native bfloat16)'
    if runtime != "torch":
        return f'`backend="{runtime}"`'
    if arm.get("attn_impl") in ("sdpa", "flex"):
        return f'`attn_impl="{arm["attn_impl"]}"`'
    return "default"


def _has_exported_route(run: dict) -> bool:
    return any((arm.get("runtime") or "torch") != "torch" for arm in run["arms"].values())


def primary_cpu_run(m: dict) -> dict | None:
    """The summary's CPU rows: among the CPU bench runs that timed both our exact path and ``nystra``, the newest
    that also timed an exported route (the route a user is steered to), else the newest."""
    runs = [r for r in m.get("bench") or [] if not is_gpu(r) and r.get("references", {}).get("a")
            and any(timed(res["arms"].get(r["references"]["a"])) and timed(res["arms"].get("nystra"))
                    for res in r["results"])]
    return max(runs, key=lambda r: (_has_exported_route(r), r.get("created", ""))) if runs else None


def primary_gpu_run(v: Variant, m: dict) -> dict | None:
    return next((r for r in m.get("gpu") or [] if _gpu_results(r, v.name)), None)


def summary_size(v: Variant, m: dict) -> tuple[int | None, int | None]:
    """(CPU size, GPU size) of the summary: the size both measured if any, else each run's largest."""
    cpu, gpu = primary_cpu_run(m), primary_gpu_run(v, m)
    cpu_sizes = {res["size"] for res in cpu["results"] if timed(res["arms"].get(cpu["references"]["a"]))
                 and timed(res["arms"].get("nystra"))} if cpu else set()
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
        device = f"CPU, {cpu['environment'].get('cpu_model')}, {cpu['settings']['threads']} threads"

        def cpu_row(route: str, name: str, how: str) -> dict:
            entry, precision = result["arms"][name], cpu["arms"][name].get("runtime_precision") or "float32"
            return dict(route=route, how=how, device=f"{device}, {precision}", input=f"{cpu_size}²",
                        time_s=entry["median_s"],
                        vs_spandrel=entry.get("speedup", {}).get(f"f:{refs['f']}") if refs.get("f") else None,
                        vs_exact=entry.get("speedup", {}).get(f"a:{refs['a']}"), run=cpu)
        rows.append(cpu_row("our exact, eager", refs["a"], "default"))
        routes = [n for n in _our_exact_routes(cpu, result, spec.cpu_bfloat16_within_budget) if n != refs["a"]]
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
        spandrel, exact = timed(arms.get("spandrel-fp32")), timed(arms.get("exact-fp32"))
        device = f"GPU, {gpu['environment'].get('device_name')}, bfloat16"
        for route, name, how in (("our exact, bfloat16", "exact-bf16", '`dtype="bfloat16"` (default on a GPU)'),
                                 ("`nystra`, bfloat16", "nystra-bf16", '`attn_impl="nystra"`')):
            t = timed(arms.get(name))
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
        kind = "GPU rows" if is_gpu(report) else "CPU rows"
        notes.append(f"{kind}: {run_reference(report)}, {run_timing(report)}")
    spandrel = ("spandrel, the usual way to run the checkpoint, in float32" if spec.spandrel else
                f"spandrel does not support {spec.title}, so there is no spandrel baseline")
    notes.append(f"Ratios: medians of one run, above 1× is faster; vs spandrel: {spandrel}; vs our exact: our "
                 "eager exact path in float32 on the same device and input. Random weights (the time does not "
                 "depend on them)" + ("; the input is the low-resolution image." if v.scale > 1 else "."))
    return "\n".join(lines) + "\n\n" + "\n".join(f"{n}  " if i < len(notes) - 1 else n for i, n in enumerate(notes))


def _best_fidelity(m: dict) -> dict | None:
    runs = [r for r in m.get("fidelity") or [] if r["arms"].get("nystra") and not r["arms"]["nystra"].get("error")
            and r["arms"]["nystra"].get("delta_psnr_gt") is not None]
    return max(runs, key=lambda r: len(r["images"])) if runs else None  # the first of the largest runs


def _ablations(m: dict, report: dict) -> dict | None:
    info = (m.get("references") or {}).get(report["model"]["name"])
    return (info or {}).get("ablations") or report.get("training", {}).get("ablations")


def _training(m: dict, report: dict) -> dict | None:
    info = (m.get("references") or {}).get(report["model"]["name"])
    return (info or {}).get("training") or report.get("training")


def _reference_link(m: dict, name: str) -> str:
    return (f"[`{name}`](../reference_models/{name}/README.md)" if name in (m.get("references") or {}) else
            f"`{name}`")


def quality_line(v: Variant, m: dict) -> str:
    report = _best_fidelity(m)
    if report is None:
        return ("**Quality:** not measured (PnP-Nystra changes the output; no quality measurement is included in "
                "this card).")
    arm, model = report["arms"]["nystra"], report["model"]
    delta = arm["delta_psnr_gt"]
    change = "by less than 0.001 dB" if abs(delta) < 0.0005 else f"by {signed(delta)} dB"
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
    caveat += window_limits(_ablations(m, report), _training(m, report))
    task = report["task"]
    other = ""
    if task.get("name") != "sr" and v.scale > 1:
        other = f" The reference model is a {arch_title(v.arch)} for {task['description']}, not a super-resolver."
    elif task.get("scale", v.scale) != v.scale:
        other = (f" The reference model is x{task['scale']}: no x{v.scale} {arch_title(v.arch)} reference model "
                 "exists.")
    return (f"**Quality:** PnP-Nystra (`attn_impl=\"nystra\"`) changes held-out PSNR {change}{vs_exact}, on the "
            f"reference model {_reference_link(m, model['name'])} ({model.get('parameters', '?')} parameters, "
            f"{report['task']['description']}; {len(report['images'])} held-out images of "
            f"{image_sets(i['image'] for i in report['images'])}), not on these weights.{caveat}{other}")


# -- details ---------------------------------------------------------------------------------------------------------
def nystra_rows(v: Variant, m: dict) -> list[dict]:
    """PnP-Nystra against our exact path, one row per run and input size (CPU float32, GPU bfloat16)."""
    rows = []
    for report in sorted((r for r in m.get("bench") or [] if not is_gpu(r)), key=lambda r: r.get("created", "")):
        a = report.get("references", {}).get("a")
        for result in report["results"]:
            exact, nystra = result["arms"].get(a), result["arms"].get("nystra")
            if timed(exact) and timed(nystra):
                rows.append(dict(run=report, device="CPU, float32", size=result["size"], exact_s=exact["median_s"],
                                 nystra_s=nystra["median_s"], ratio=nystra["speedup"][f"a:{a}"]))
    for report in m.get("gpu") or []:
        for result in _gpu_results(report, v.name):
            exact, nystra = timed(result["arms"].get("exact-bf16")), timed(result["arms"].get("nystra-bf16"))
            if exact and nystra:
                rows.append(dict(run=report, device=f"{report['environment'].get('device_name')}, bfloat16",
                                 size=result["size"], exact_s=exact, nystra_s=nystra, ratio=exact / nystra))
    return rows


def _paper_comparison(v: Variant, m: dict) -> str | None:
    """The paper's comparison (both at the enlarged window, bias and masks dropped) wherever a run timed it."""
    parts = []
    for report in m.get("bench") or []:
        refs = report.get("references", {})
        if is_gpu(report) or not refs.get("c"):
            continue
        for result in report["results"]:
            e = next((n for n in result["arms"] if re.fullmatch(r"nystra-w\d+-paper", n)), None)
            entry = result["arms"].get(e or "", {})
            if timed(entry):
                vs_c, vs_a = (entry["speedup"][f"{k}:{refs[k]}"] for k in ("c", "a"))
                parts.append(f"{fmt_ratio(vs_c)} on CPU against `{refs['c']}` (`{e}` vs the model as trained: "
                             f"{fmt_ratio(vs_a)}; {run_name(report)}, {result['size']}²)")
    for report in m.get("gpu") or []:
        for result in _gpu_results(report, v.name):
            arms = result["arms"]
            for tag, precision in (("fp32", "float32"), ("bf16", "bfloat16")):
                exact = next((n for n in arms if re.fullmatch(rf"exact-w\d+-paper-{tag}", n)), None)
                nystra = next((n for n in arms if re.fullmatch(rf"nystra-w\d+-paper-{tag}", n)), None)
                c, e = timed(arms.get(exact or "")), timed(arms.get(nystra or ""))
                if c and e:
                    parts.append(f"{fmt_ratio(c / e)} in {precision} on the {report['environment'].get('device_name')}"
                                 f" (vs the model as trained in {precision}: "
                                 f"{fmt_ratio((timed(arms.get(f'exact-{tag}')) or 0) / e)}; {result['size']}²)")
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


def _quality_section(m: dict) -> str | None:
    report = _best_fidelity(m)
    if report is None:
        return None
    window, arms = report.get("recipe", {}).get("window"), report["arms"]
    names = [n.format(W=window) for n in QUALITY_ARMS if n.format(W=window) in arms]
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
        lines.append(f"| `{name}`{where} | {what} | {signed(arm['delta_psnr_gt'])} | "
                     f"{num(arm.get('psnr_vs_exact'), '.1f')} |")
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
        what = ("GPU" if is_gpu(report) else "fidelity" if "fidelity" in str(report.get("schema")) else "CPU")
        lines.append(f"- {run_reference(report)}: {what}" + ("" if what == "fidelity" else f", {run_timing(report)}"))
    return "\n".join(lines)
