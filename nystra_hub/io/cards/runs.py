"""The page of one run (``benchmarks/*.md``, next to its JSON): its settings and every table of a bench, GPU or
fidelity report, which the cards link instead of repeating them."""

from __future__ import annotations

from pathlib import Path

from nystra_hub.io.cards.format import (
    NOT_MEASURED,
    attention_verdict,
    fmt_ratio,
    image_sets,
    is_gpu,
    num,
    public_command,
    run_commit,
    run_date,
    run_machine,
    run_timing,
    signed,
    timed,
)


def render_run_page(report: dict, json_name: str) -> str:
    """The page of one run: its settings and every table of the JSON ``json_name`` (a bench, GPU or fidelity
    report), for the cards to link instead of repeating them."""
    schema = str(report.get("schema", ""))
    commit, dirty = run_commit(report)
    env = report.get("environment", {})
    facts = [("Date", report.get("created", "not recorded")),
             ("Machine", run_machine(report) + f", torch {env.get('torch')}"
              + (f", CUDA {env.get('cuda')}, spandrel {env.get('spandrel')}" if is_gpu(report) else "")),
             ("nystra_hub commit", commit + (" (the tree had uncommitted changes)" if dirty else "")),
             ("Command", f"`{public_command(report.get('command', ''))}`")]
    if schema.startswith("nystra_hub.fidelity/"):
        title, body = f"Fidelity run on `{report['model']['name']}`", _fidelity_page(report)
    elif schema.startswith("nystra_hub.gpu_bench/"):
        title, body = f"GPU run on one {env.get('device_name')}", _gpu_page(report)
    elif schema.startswith("nystra_hub.bench/"):
        title, body = f"Bench run of `{report['model']['name']}` on {'GPU' if is_gpu(report) else 'CPU'}", \
            _bench_page(report)
        facts.append(("Timing", f"{run_timing(report)} Arms interleaved round-robin in one process; protocol "
                                f"{report['settings'].get('protocol')}"))
        facts.append(("Weights, input", f"{report['model'].get('weights')}; {report['settings'].get('input')}"))
    else:
        raise ValueError(f"{json_name}: no page for a {schema or 'schema-less'} report")
    table = "\n".join(["| | |", "|---|---|", *(f"| {k} | {val} |" for k, val in facts)])
    return (f"# {title}, {run_date(report)}\n\nRendered by `nystra-hub cards` from [`{json_name}`]({json_name}), "
            f"which holds every timed round and setting.\n\n{table}\n\n{body}\n")


def write_run_page(path: str | Path, report: dict) -> Path:
    """Write the page of the run whose JSON is at ``path`` next to it (``x.json`` -> ``x.md``)."""
    page = Path(path).with_suffix(".md")
    page.write_text(render_run_page(report, Path(path).name))
    return page


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
        cells = [label, num(entry["median_s"] * 1e3, ".0f")]
        for k in letters:
            cells.append(fmt_ratio(entry.get("speedup", {}).get(f"{k}:{refs[k]}")))
        peak = entry.get("peak_rss_bytes", entry.get("peak_bytes"))
        cells += [num(peak / 2**20 if peak else None, ".0f"),
                  num(entry["flops"] / 1e9 if entry.get("flops") else None, ".1f"),
                  num(entry.get("gflops_per_s"), ".0f")]
        if with_psnr:
            identical = "psnr_vs_a_db" in entry and entry["psnr_vs_a_db"] is None
            cells.append("identical" if identical else num(entry.get("psnr_vs_a_db"), ".1f"))
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
    if report.get("roofline"):
        ceilings = ", ".join(f"{dtype} {r['best_gflops_per_s'] / 1e3:.1f}" for dtype, r in report["roofline"].items())
        out.append(f"Rates: the exact float32 forward's FLOPs (torch's FLOP counter) over each arm's median, an "
                   f"exact-equivalent rate (an approximation doing less work scores higher), against the matmul "
                   f"ceiling measured on this device for the arm's dtype (TFLOP/s: {ceilings}; "
                   f"{next(iter(report['roofline'].values()))['method'].rsplit(',', 1)[0]}).")
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
                   f"{num(stress['ours_fp16_psnr_vs_fp32'], '.1f')} dB against float32.")
    out.append("Peak memory is not listed: the run measured the process peak with every arm's model resident and "
               "the masks of earlier arms cached, which is not a per-arm figure.")
    return "\n\n".join(out)


def _gpu_table(case: dict, arms: dict) -> str:
    ref = timed(arms.get("spandrel-fp32"))
    exact = timed(arms.get("exact-fp32"))
    rates = any(row.get("gflops_per_s") for row in arms.values())  # runs since the roofline columns were added
    header = "| arm | dtype | median ms | vs spandrel fp32 | vs our exact fp32 | PSNR vs our fp32 (dB) | non-finite |"
    lines = [header + (" exact-equivalent TFLOP/s (% of the dtype's GEMM ceiling) |" if rates else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if rates else "")]
    for name, row in arms.items():
        dtype = case["arms"].get(name, {}).get("dtype") or GPU_ARM_DTYPES.get(name.rsplit("-", 1)[-1], "?")
        t = timed(row)
        if t is None:
            lines.append(f"| {name} | {dtype} | {NOT_MEASURED} | | | | |" + (" |" if rates else ""))
            continue
        quality = row.get("psnr_vs_exact_fp32")
        quality = quality if isinstance(quality, str) else num(quality, ".1f")
        line = (f"| {name} | {dtype} | {t * 1e3:.1f} | {fmt_ratio(ref / t if ref else None)} | "
                f"{fmt_ratio(exact / t if exact else None)} | {quality} | {row.get('nonfinite_values')} |")
        if rates:
            fraction = row.get("roofline_fraction")
            line += (f" {num(row.get('gflops_per_s', 0) / 1e3, '.1f')}"
                     + (f" ({fraction * 100:.0f} %)" if fraction else "") + " |")
        lines.append(line)
    return "\n".join(lines)


def _gpu_paper_claim(case: dict, arms: dict) -> str | None:
    window = case["recipe"]["window"]
    parts = []
    for tag in ("fp32", "bf16"):
        exact = timed(arms.get(f"exact-w{window}-paper-{tag}"))
        nystra = timed(arms.get(f"nystra-w{window}-paper-{tag}"))
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
               f"{num(training.get('heldout_psnr'), '.2f')} dB vs {num(training.get('heldout_input_psnr'), '.2f')} "
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
           f"{len(report['images'])} held-out images ({image_sets(i['image'] for i in report['images'])}); protocol "
           f"{proto['name']} ({proto.get('channel', '')}, border {proto.get('border_crop', 0)}). PSNR vs exact "
           "compares each arm's output with the exact model's own output (higher is closer, ∞ = identical); "
           "ΔPSNR (GT) is the change of the ground-truth PSNR against the exact model.",
           "## Arms", "\n".join(lines)]
    sweep = report.get("sweep") or {}
    for key, label in (("landmarks_trained_window", "at the trained window"),
                       ("landmarks_enlarged_window", f"at window {sweep.get('enlarged_window')}, paper form")):
        points = sorted((int(k), n) for k, n in (sweep.get(key) or {}).items() if n in report["arms"])
        if points:
            rows = [f"| {k} | {num(report['arms'][n].get('psnr_vs_exact'), '.1f')} | "
                    f"{signed(report['arms'][n].get('delta_psnr_gt'))} |" for k, n in points]
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
            f"{signed(arm['delta_psnr_gt'])} | {num(diag, '.4f')} |")
