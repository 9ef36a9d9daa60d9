"""Model cards rendered from the committed measurements (benchmarks/*.json, reference_models/*/reference.json):
valid Hub front matter without speed in the model-index, at most 150 lines, the summary table first, no dirty
hashes, machine paths or error dumps, every summary number equal to its JSON, the committed cards and run pages
equal to what the renderer makes of today's JSON, plots of one run each in one palette."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from conftest import REPO
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from matplotlib.colors import to_hex

from nystra_hub.cli import main
from nystra_hub.io.cards import MAX_CARD_LINES, PNP_NYSTRA_ARXIV, build_model_card, check_card, render_run_page
from nystra_hub.io.cards.measurements import summary_rows
from nystra_hub.io.plots import PALETTE, arm_colour, draw_bench, draw_fidelity, draw_gpu_bars, draw_route_bars
from nystra_hub.io.variants import get_variant

BENCH = REPO / "benchmarks"
GPU = "benchmarks/gpu/gpu-bench-h200.json"
# what benchmarks/make_cards.sh renders: variant -> (bench runs, fidelity runs, reference model)
CARDS = {
    "swinir-x2": (["timing-swinir-x2-128-cpu", "bench-swinir-x2-cpu", "bench-swinir-x2-512-cpu",
                   "bench-swinir-x2-default-route-cpu"],
                  ["fidelity-swinir-ref-denoise50", "fidelity-swinir-ref-denoise50-calibrated"],
                  "swinir-ref-denoise50"),
    "swinir-x4": (["bench-swinir-x4-cpu", "bench-swinir-x4-default-route-cpu"],
                  ["fidelity-swinir-ref-denoise50", "fidelity-swinir-ref-denoise50-calibrated"],
                  "swinir-ref-denoise50"),
    "uformer-b-sidd": (["bench-uformer-b-sidd-cpu", "bench-uformer-b-sidd-512-cpu",
                        "bench-uformer-b-sidd-default-route-cpu"],
                       ["fidelity-uformer-ref-denoise25", "fidelity-uformer-ref-denoise25-calibrated"],
                       "uformer-ref-denoise25"),
    "dehazeformer-b-indoor": (["bench-dehazeformer-b-indoor-cpu", "bench-dehazeformer-b-indoor-512-cpu",
                               "bench-dehazeformer-b-indoor-default-route-cpu"],
                              ["fidelity-dehazeformer-ref-t"],
                              "dehazeformer-ref-t"),
}
REFERENCES = {"swinir-ref-x2": ["fidelity-swinir-ref-x2"],
              "swinir-ref-denoise50": ["fidelity-swinir-ref-denoise50", "fidelity-swinir-ref-denoise50-calibrated"],
              "uformer-ref-denoise25": ["fidelity-uformer-ref-denoise25", "fidelity-uformer-ref-denoise25-calibrated"],
              "dehazeformer-ref-t": ["fidelity-dehazeformer-ref-t"]}
# the summary's CPU run, its input side, our fastest exported route there, the GPU input side (None: no GPU case)
SUMMARY = {"swinir-x2": ("bench-swinir-x2-default-route-cpu", 256, "openvino-bf16", 512),
           "swinir-x4": ("bench-swinir-x4-default-route-cpu", 128, "openvino-bf16", None),
           "uformer-b-sidd": ("bench-uformer-b-sidd-default-route-cpu", 256, "openvino-bf16", 512),
           "dehazeformer-b-indoor": ("bench-dehazeformer-b-indoor-default-route-cpu", 256, "openvino-bf16", 512)}
COMMITTED = [REPO / "model_cards" / f"{v}.md" for v in CARDS] + \
            [REPO / "reference_models" / r / "README.md" for r in REFERENCES]
MACHINE_PATH = re.compile(r"(?<![\w.])/(tmp|work|root|home)/")
ERROR_DUMP = re.compile(r"Error\b|Traceback|not measured: ")


def _json(stem: str) -> dict:
    return json.loads((BENCH / f"{stem}.json").read_text())


def _paths(stems: list[str]) -> list[str]:
    return [f"benchmarks/{s}.json" for s in stems]


def _run_pages() -> list[Path]:
    stems = {s for bench, fidelity, _ in CARDS.values() for s in (*bench, *fidelity)}
    return [BENCH / f"{s}.md" for s in sorted(stems)] + [REPO / Path(GPU).with_suffix(".md")]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, str]:
    """Every card as the renderer makes it today from the committed JSON (written under a temporary folder, the
    paths it records made relative to the repository, as make_cards.sh runs it)."""
    out = tmp_path_factory.mktemp("cards")
    texts, cwd = {}, os.getcwd()
    os.chdir(REPO)
    try:
        for variant, (bench, fidelity, reference) in CARDS.items():
            assert main(["cards", variant, "--out-dir", str(out), "--gpu", GPU, "--bench", *_paths(bench),
                         "--fidelity", *_paths(fidelity), "--reference", f"reference_models/{reference}"]) == 0
            texts[variant] = (out / f"{variant}.md").read_text()
        for reference, fidelity in REFERENCES.items():
            assert main(["cards", "--reference-model", f"reference_models/{reference}", "--out-dir",
                         str(out / reference), "--fidelity", *_paths(fidelity)]) == 0
            texts[reference] = (out / reference / "README.md").read_text()
    finally:
        os.chdir(cwd)
    texts["folder"] = str(out)
    return texts


def _first_lines(text: str) -> list[str]:
    lines = text.split("\n---\n", 1)[1].splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("# "))
    return [line for line in lines[title + 1:] if line.strip()]


# -- 1. the committed cards are today's rendering of today's JSON -------------------------------------------------
def _without_inputs(text: str, folder: str) -> str:
    """A card without the options naming where it was written (the only difference of a test rendering)."""
    text = re.sub(r" --out-dir \S+", "", text.replace(folder, "OUT"))
    return text.replace(" --run-pages", "")


@pytest.mark.parametrize("name", [*CARDS, *REFERENCES])
def test_committed_cards_are_what_the_renderer_makes_of_the_json(rendered, name):
    path = REPO / ("model_cards" if name in CARDS else f"reference_models/{name}") / \
        (f"{name}.md" if name in CARDS else "README.md")
    folder = rendered["folder"]
    assert _without_inputs(path.read_text(), folder) == _without_inputs(rendered[name], folder), \
        f"{path.relative_to(REPO)} is stale: run benchmarks/make_cards.sh"


@pytest.mark.parametrize("page", _run_pages(), ids=lambda p: p.stem)
def test_committed_run_pages_are_what_the_renderer_makes_of_the_json(page):
    report = json.loads(page.with_suffix(".json").read_text())
    assert page.read_text() == render_run_page(report, page.with_suffix(".json").name), \
        f"{page.relative_to(REPO)} is stale: run benchmarks/make_cards.sh"


# -- 2. valid Hub metadata -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name if p.name == "README.md" else p.stem)
def test_front_matter_loads_with_huggingface_hub(path):
    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "nystra_hub" and data.pipeline_tag == "image-to-image" and data.license
    arch = data.architecture
    paper = {"swinir": "2108.10257", "uformer": "2106.03106", "dehazeformer": "2204.03883"}[arch]
    assert {f"arxiv:{paper}", f"arxiv:{PNP_NYSTRA_ARXIV}"} <= set(data.tags)
    index = data.to_dict().get("model-index")
    if path.name != "README.md":  # a variant card: no quality of its own weights exists, so no model-index
        assert index is None and data.eval_results is None
        return
    name, results = model_index_to_eval_results(index)
    info = json.loads((path.parent / "reference.json").read_text())
    assert name == info["name"] and {r.metric_type for r in results} == {"psnr", "ssim"}
    for result in results:
        assert result.metric_value == round(info["heldout"][result.metric_type], 3)
        assert result.dataset_name == "Set5 + Set14 (held out)" and result.task_type == "image-to-image"


def test_no_speed_metric_in_a_model_index():
    speed = EvalResult(task_type="image-to-image", dataset_type="random-input", dataset_name="CPU 256",
                       metric_type="speedup", metric_value=0.9, metric_name="nystra speedup vs exact")
    with pytest.raises(ValueError, match="speed figure"):
        check_card("# card\n", [speed])
    for path in COMMITTED:
        for result in ModelCard.load(path).data.eval_results or []:
            assert result.metric_type in ("psnr", "ssim") and not re.search("speed|time", result.metric_name)


# -- 3. short, clean --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name if p.name == "README.md" else p.stem)
def test_cards_fit_in_150_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_CARD_LINES


@pytest.mark.parametrize("path", COMMITTED + _run_pages(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_dirty_hashes_machine_paths_or_error_dumps(path):
    text = path.read_text()
    assert "+dirty" not in text and not re.search(r"[0-9a-f]{40}", text)
    assert not MACHINE_PATH.search(text), MACHINE_PATH.search(text)
    assert not ERROR_DUMP.search(text), ERROR_DUMP.search(text)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name if p.name == "README.md" else p.stem)
def test_links_of_the_cards_resolve(path):
    for target in re.findall(r"\]\(([^)]+)\)", path.read_text()):
        if not target.startswith("http"):
            assert (path.parent / target).is_file(), target


# -- 4. the first screen answers ---------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(CARDS))
def test_summary_table_comes_first_then_quality_install_usage(variant):
    text = (REPO / "model_cards" / f"{variant}.md").read_text()
    lines = _first_lines(text)
    assert lines[0] == "| route | how | device | input | median time | vs spandrel | vs our exact |"
    rows = [line.split(" | ")[0].lstrip("| ") for line in lines[2:] if line.startswith("| ")]
    assert rows[:3] == ["our exact, eager", rows[1], "`nystra` (PnP-Nystra)"] and rows[1].startswith("our fastest")
    assert rows[3] == "our exact, bfloat16"
    order = [text.index(key) for key in ("| route |", "**Quality:**", "**Install**", "nystra-hub convert",
                                         f'nystra_hub.load("{variant}/")', "## PnP-Nystra against exact")]
    assert order == sorted(order)
    assert f"`nystra/{variant}` (**not published yet**" in text
    assert f"--variant {variant} --out {variant}/" in text


def _cell(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


@pytest.mark.parametrize("variant", sorted(CARDS))
def test_summary_numbers_equal_the_json(variant):
    text = (REPO / "model_cards" / f"{variant}.md").read_text()
    stem, size, route, gpu_size = SUMMARY[variant]
    run = _json(stem)
    result = next(r for r in run["results"] if r["size"] == size)
    spandrel = "f" in run["references"]
    for label, arm in (("our exact, eager", "exact"), ("`nystra` (PnP-Nystra)", "nystra"),
                       *([(f"our fastest CPU route: `{route}`", route)] if route else [])):
        entry = result["arms"][arm]
        vs_f = f"{entry['speedup']['f:spandrel']:.2f}×" if spandrel else "–"
        assert (f"| {label} | " in text and f"| {size}² | {_cell(entry['median_s'])} | {vs_f} | "
                f"{entry['speedup']['a:exact']:.2f}× |" in text), (label, arm)
    if gpu_size is None:
        assert "not measured on GPU (the NVIDIA H200 run of 2026-11-27 did not include" in text
        return
    gpu = json.loads((REPO / GPU).read_text())
    arms = next(r for c in gpu["cases"] if c["variant"] == variant for r in c["results"] if "arms" in r)["arms"]
    for label, arm in (("our exact, bfloat16", "exact-bf16"), ("`nystra`, bfloat16", "nystra-bf16")):
        t = arms[arm]["median_s"]
        vs_f = f"{arms['spandrel-fp32']['median_s'] / t:.2f}×" if "spandrel-fp32" in arms else "–"
        assert (f"| {label} | " in text and f"| {gpu_size}² | {_cell(t)} | {vs_f} | "
                f"{arms['exact-fp32']['median_s'] / t:.2f}× |" in text), (label, arm)


def test_run_by_run_rows_equal_the_json():
    text = (REPO / "model_cards" / "swinir-x2.md").read_text()
    for stem in CARDS["swinir-x2"][0]:
        for result in _json(stem)["results"]:
            arms = result["arms"]
            if "nystra" in arms and arms["exact"].get("median_s"):
                assert (f"| {result['size']}² | {_cell(arms['exact']['median_s'])} | "
                        f"{_cell(arms['nystra']['median_s'])} | {arms['nystra']['speedup']['a:exact']:.2f}× |") in text


@pytest.mark.parametrize("variant", sorted(CARDS))
def test_quality_line_names_the_reference_model_and_its_caveat(variant):
    text = (REPO / "model_cards" / f"{variant}.md").read_text()
    _, fidelity, reference = CARDS[variant]
    info = json.loads((REPO / "reference_models" / reference / "reference.json").read_text())
    line = next(line for line in text.splitlines() if line.startswith("**Quality:**"))
    report = max((_json(s) for s in fidelity if "nystra" in _json(s)["arms"]), key=lambda r: len(r["images"]))
    delta = round(report["arms"]["nystra"]["delta_psnr_gt"], 3)
    assert f"`{reference}`" in line and f"{len(report['images'])} held-out images" in line
    assert (f"by {delta:+.3f} dB" if delta else "by less than 0.001 dB") in line
    passed = sum(info["ablations"][k]["matters"] for k in ("position_bias_dropped", "window_x2"))
    expected = {0: "fails both attention-matters checks", 1: "fails 1 of 2 attention-matters checks",
                2: "attention matters by both checks"}[passed]
    assert expected in line
    window_gain = info["ablations"]["window_x2"]["change_db"]
    assert ("**Its window limits it:**" in line) == (window_gain > 0.3), window_gain
    if window_gain > 0.3:  # and says plainly why: how much training it had
        assert f"raises its held-out PSNR by {window_gain:.2f} dB" in line
        assert f"(all its training: {info['training']['steps']} steps of batch {info['training']['batch']}," in line
        cost_file = REPO / "reference_models" / reference / "training-cost.json"
        if cost_file.is_file():  # and why it has not had more: what more would cost where it could run
            cost = json.loads(cost_file.read_text())
            assert (f"the {cost['planned_steps']} further steps planned (`benchmarks/gpu_session.sh`) would take "
                    f"{cost['cpu']['planned_hours']:.0f} hours on this project's 2-core CPU "
                    f"({cost['cpu']['seconds_per_step']:.1f} s a step of batch {cost['cpu']['batch']}") in line
            assert cost["recipe"] == reference and cost["kind"] == "training_cost"
    if report["task"]["name"] != "sr" and get_variant(variant).scale > 1:  # a denoiser standing in for a super-resolver
        assert "not a super-resolver" in line


def test_spandrel_and_gpu_gaps_are_said_in_words():
    dehaze = (REPO / "model_cards" / "dehazeformer-b-indoor.md").read_text()
    assert "spandrel does not support DehazeFormer" in dehaze
    x4 = (REPO / "model_cards" / "swinir-x4.md").read_text()
    assert "No GPU was available" not in x4 and "not measured on GPU" in x4
    # a run of exported arms slower than the eager path, or of none, says so instead of naming a route
    run = _json("bench-swinir-x4-cpu")
    rows = summary_rows(get_variant("swinir-x4"), {"bench": [run]})
    assert "no compiled or exported route was run for this variant" in rows[1]["device"]
    # a newer run without exported arms does not push the run that has them out of the summary
    routes = _json("bench-swinir-x4-default-route-cpu")
    newer = {**run, "created": max(run["created"], routes["created"]) + "Z"}
    rows = summary_rows(get_variant("swinir-x4"), {"bench": [newer, routes]})
    assert rows[1]["run"] is routes and rows[1]["route"] == "our fastest CPU route: `openvino-bf16`"


def test_unmeasured_card_says_so_first():
    card = build_model_card("swinir-x4")
    first = _first_lines(str(card))[0]
    assert first.startswith("**Speed:** not measured.") and "**Quality:** not measured" in first
    assert card.data.eval_results is None


def test_check_card_refuses_what_must_not_happen():
    with pytest.raises(ValueError, match="repeated heading"):
        check_card("#### CPU\n\ntext\n\n#### CPU\n", None)
    with pytest.raises(ValueError, match="negative zero"):
        check_card("| (d) nystra | -0.000 |", None)
    check_card("```python\n# a comment\n# a comment\n```\n| -0.002 | 2026-01-05 |", None)


# -- 5. plots: one run each, one colour per arm ----------------------------------------------------------------------
def test_one_colour_per_arm_everywhere():
    assert len(set(PALETTE.values())) == len(PALETTE)
    assert arm_colour("nystra-w32-paper") == arm_colour("nystra-w64-paper") == PALETTE["nystra-wW-paper"]
    assert arm_colour("nystra-m8") == arm_colour("nystra") and arm_colour("calibrated-x") == PALETTE["calibrated"]
    fig = draw_route_bars(_json("bench-swinir-x2-routes-cpu"))
    bars = fig.axes[0].patches
    assert to_hex(bars[0].get_facecolor()) == PALETTE["exact"] and to_hex(bars[1].get_facecolor()) == PALETTE["nystra"]


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.json")), ids=lambda p: p.stem)
def test_plots_have_no_empty_or_unnamed_panels(path):
    report = json.loads(path.read_text())
    kind = str(report.get("schema", ""))
    if kind.startswith("nystra_hub.bench/"):
        figs = [draw_bench([report]), draw_route_bars(report)]
    elif kind.startswith("nystra_hub.fidelity/"):
        figs = [draw_fidelity([report])]
    else:
        pytest.skip(f"{path.name} is not a bench or fidelity report")
    for fig in figs:
        assert fig.axes
        for ax in fig.axes:
            assert ax.has_data(), ax.get_title()
            assert "None" not in ax.get_title()
        plt.close(fig)


def test_gpu_plot_shows_one_variant_of_one_run():
    fig = draw_gpu_bars(json.loads((REPO / GPU).read_text()), "uformer-b-sidd")
    title = fig.axes[0].get_title().replace("\n", " ")
    assert len(fig.axes) == 1 and "uformer-b-sidd on NVIDIA H200, run of 2026-11-27: input 512×512" == title
    with pytest.raises(ValueError, match="no timed arm"):
        draw_gpu_bars(json.loads((REPO / GPU).read_text()), "swinir-x4")


# -- 6. the README's "Measured" figures come from the same JSON ------------------------------------------------------
README_TABLE = {"SwinIR-M x2, 128²": "timing-swinir-x2-128-cpu", "SwinIR-M x2, 256²": "bench-swinir-x2-cpu",
                "SwinIR-M x2, 512² (3 runs, no warm-up)": "bench-swinir-x2-512-cpu",
                "Uformer-T, 256²": "timing-uformer-t-256-cpu", "Uformer-B, 256²": "bench-uformer-b-sidd-cpu",
                "Uformer-B, 512²": "bench-uformer-b-sidd-512-cpu",
                "DehazeFormer-t, 256²": "timing-dehazeformer-t-256-cpu",
                "DehazeFormer-B, 256²": "bench-dehazeformer-b-indoor-cpu",
                "DehazeFormer-B, 512²": "bench-dehazeformer-b-indoor-512-cpu"}
ROUTES = ("bench-swinir-x2-routes-cpu", "bench-uformer-b-sidd-routes-cpu", "bench-dehazeformer-b-indoor-routes-cpu")


def _measured_section() -> str:
    text = (REPO / "README.md").read_text()
    return re.sub(r"\s+", " ", text[text.index("## Measured, not assumed"):text.index("### Reference models")])


def _span(values, digits: int = 2) -> str:
    low, high = (f"{f(values):.{digits}f}" for f in (min, max))
    return low if low == high else f"{low}–{high}"


def _arm(arms: dict, pattern: str) -> dict:
    return next((a for n, a in arms.items() if re.fullmatch(pattern, n) and a.get("median_s")), {})


def _ms(arms: dict, pattern: str, missing: str = "not run") -> str:
    arm = _arm(arms, pattern)
    return f"{arm['median_s'] * 1e3:.0f} ms" if arm else missing


def test_readme_measured_table_equals_the_json():
    readme = (REPO / "README.md").read_text()
    for label, stem in README_TABLE.items():
        arms = _json(stem)["results"][0]["arms"]
        cells = [_ms(arms, p) for p in ("exact", "sdpa", "nystra", r"nystra-w[0-9]+-paper")]
        cells.append(_ms(arms, "spandrel", "no spandrel model" if label.startswith("Dehaze") else "not run"))
        row = f"| {label} | " + " | ".join(cells) + " |"
        assert row in readme, row


def test_readme_measured_sentences_equal_the_json():
    table = [_json(stem)["results"][0]["arms"] for stem in README_TABLE.values()]
    routes = [(r["size"], r["arms"]) for stem in ROUTES for r in _json(stem)["results"]]
    swinir_256 = _json("bench-swinir-x2-cpu")["results"][0]["arms"]
    paper = [a for arms in table for n, a in arms.items() if re.fullmatch(r"nystra-w[0-9]+-paper", n)]
    fidelity = _json("fidelity-uformer-ref-denoise25")["arms"]
    claims = [
        f"our exact path is {_span([a['exact']['speedup']['f:spandrel'] for a in table if 'spandrel' in a])}× "
        "faster than the official code path",
        f"({_span([a['nystra']['speedup']['a:exact'] for a in table])}× in these runs, "
        f"{_span([a['nystra']['speedup']['a:exact'] for _, a in routes])}× in the route runs",
        f"{swinir_256['nystra']['flops'] / 1e9:.0f} vs {swinir_256['exact']['flops'] / 1e9:.0f} GFLOP for SwinIR-M",
        f"recipe is {_span([a['speedup'][k] for a in paper for k in a['speedup'] if k.startswith('c:')], 1)}× faster "
        "than exact attention at the same enlarged window",
        f"at most {max(a['speedup']['a:exact'] for a in paper):.2f}× faster than the model as trained "
        f"({_json('bench-swinir-x2-enlarged-cpu')['results'][0]['arms']['nystra-w32-paper']['speedup']['a:exact']:.2f}×",
        f"costs {-fidelity['nystra-w64-paper']['delta_psnr_gt']:.1f} dB on the Uformer reference model",
    ]
    (_, swinir), (_, uformer_256), (_, uformer), (_, _), (_, dehaze) = routes
    claims += [
        f"SwinIR-M x2 at 256² {swinir['openvino']['median_s']:.1f} s against spandrel's "
        f"{swinir['spandrel']['median_s']:.1f} s ({swinir['openvino']['speedup']['f:spandrel']:.2f}×) and our eager "
        f"{swinir['exact']['median_s']:.1f} s",
        f"Uformer-B at 512² {uformer['openvino']['median_s']:.2f} s against {uformer['spandrel']['median_s']:.1f} s "
        f"({uformer['openvino']['speedup']['f:spandrel']:.2f}×)",
        f"DehazeFormer-B at 512² {dehaze['openvino']['median_s']:.2f} s against our eager "
        f"{dehaze['exact']['median_s']:.2f} s ({dehaze['openvino']['speedup']['a:exact']:.2f}×)",
        f"(ours {swinir['openvino']['speedup']['o:openvino-official']:.2f}× on SwinIR-M, "
        f"{_span([a['openvino']['speedup']['o:openvino-official'] for a in (uformer_256, uformer)])}× on Uformer-B)",
    ]
    gpu = {c["variant"]: r["arms"] for c in json.loads((REPO / GPU).read_text())["cases"] for r in c["results"]
           if "arms" in r}
    sw, uf = gpu["swinir-x2"], gpu["uformer-b-sidd"]

    def t(arms, name):
        return arms[name]["median_s"]
    paper_gpu = {v: [t(a, f"exact-w{w}-paper-{p}") / t(a, f"nystra-w{w}-paper-{p}") for p in ("fp32", "bf16")]
                 for v, a, w in (("swinir-x2", sw, 32), ("uformer-b-sidd", uf, 64),
                                 ("dehazeformer-b-indoor", gpu["dehazeformer-b-indoor"], 32))}
    claims += [
        f"our exact path is {t(sw, 'spandrel-fp32') / t(sw, 'exact-fp32'):.2f}× spandrel on SwinIR-M x2 in float32 "
        f"({t(sw, 'exact-fp32') * 1e3:.0f} vs {t(sw, 'spandrel-fp32') * 1e3:.0f} ms) and "
        f"{t(sw, 'spandrel-fp32') / t(sw, 'exact-fp16'):.2f}× in float16",
        f"on Uformer-B {t(uf, 'spandrel-fp32') / t(uf, 'exact-fp32'):.2f}× ({t(uf, 'exact-fp32') * 1e3:.1f} vs "
        f"{t(uf, 'spandrel-fp32') * 1e3:.1f} ms)",
        f"gives {_span(paper_gpu['swinir-x2'])}× on SwinIR-M but "
        f"{_span(paper_gpu['uformer-b-sidd'] + paper_gpu['dehazeformer-b-indoor'])}× on Uformer-B and DehazeFormer-B",
    ]
    section = _measured_section()
    missing = [claim for claim in claims if claim not in section]
    assert not missing, missing
