"""Model cards rendered from the committed measurements (benchmarks/*.json): a two-line summary first, no repeated
heading or metric, no -0.0, no spandrel headline, plots without empty panels."""

from __future__ import annotations

import json
import re

import pytest
from conftest import REPO
from huggingface_hub import ModelCard

from nystra_hub.cli import main
from nystra_hub.io.cards import build_model_card, check_card
from nystra_hub.io.plots import draw_bench, draw_fidelity

BENCH = REPO / "benchmarks"
# what benchmarks/make_cards.sh renders (the files that exist)
CARDS = {
    "swinir-x2": (["timing-swinir-x2-128-cpu", "bench-swinir-x2-cpu", "bench-swinir-x2-512-cpu",
                   "bench-swinir-x2-enlarged-cpu", "bench-swinir-x2-routes-cpu"], ["fidelity-swinir-ref-x2"]),
    "swinir-x4": (["bench-swinir-x4-cpu"], ["fidelity-swinir-ref-x2"]),
    "uformer-b-sidd": (["bench-uformer-b-sidd-cpu", "bench-uformer-b-sidd-512-cpu", "bench-uformer-b-sidd-routes-cpu"],
                       ["fidelity-uformer-ref-denoise25"]),
    "dehazeformer-b-indoor": (["bench-dehazeformer-b-indoor-cpu", "bench-dehazeformer-b-indoor-512-cpu",
                               "bench-dehazeformer-b-indoor-routes-cpu"], ["fidelity-dehazeformer-ref-t"]),
}
GPU = BENCH / "gpu" / "gpu-bench-h200.json"
WITH_GPU = {"swinir-x2", "uformer-b-sidd", "dehazeformer-b-indoor"}


def _existing(stems: list[str]) -> list[str]:
    return [str(BENCH / f"{s}.json") for s in stems if (BENCH / f"{s}.json").is_file()]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, ModelCard]:
    out = tmp_path_factory.mktemp("cards")
    cards = {}
    for variant, (bench, fidelity) in CARDS.items():
        argv = ["cards", variant, "--out-dir", str(out)]
        argv += ["--bench", *_existing(bench)] if _existing(bench) else []
        argv += ["--fidelity", *_existing(fidelity)] if _existing(fidelity) else []
        argv += ["--gpu", str(GPU)] if variant in WITH_GPU and GPU.is_file() else []
        assert main(argv) == 0
        cards[variant] = ModelCard.load(out / f"{variant}.md")
        cards[variant].folder = out
    return cards


def _body_after_title(card: ModelCard) -> list[str]:
    lines = card.text.splitlines()
    title = next(i for i, line in enumerate(lines) if line.startswith("# "))
    return [line for line in lines[title + 1:] if line.strip()]


@pytest.mark.parametrize("variant", sorted(CARDS))
def test_card_opens_with_what_was_measured(rendered, variant):
    first, second, third = _body_after_title(rendered[variant])[:3]
    assert first.startswith("**Speed, PnP-Nystra vs exact attention:**") and "× on CPU" in first
    assert ("on GPU (NVIDIA" in first) if variant in WITH_GPU and GPU.is_file() else ("GPU not measured" in first)
    assert second.startswith("**Quality:** PnP-Nystra changes PSNR") and "held-out images" in second
    assert third.startswith("**Fastest exact route measured on CPU:**") and "largest output difference" in third


@pytest.mark.parametrize("variant", sorted(CARDS))
def test_card_has_no_duplicate_contradictory_or_broken_entries(rendered, variant):
    card = rendered[variant]
    keys = [(r.dataset_name, r.metric_name) for r in card.data.eval_results]
    assert len(keys) == len(set(keys))
    names = [r.metric_name for r in card.data.eval_results]
    assert len(names) == len(set(names))  # one value per metric, whatever the runs
    assert not any("spandrel" in name for name in names)  # the code path's ratio is no headline
    for result in card.data.eval_results:  # each metric under its own dataset (size, run), as reloaded
        size = re.search(r"\d+×\d+|\d+ images", result.dataset_name).group()
        assert result.metric_type == "psnr" or size in result.metric_name, (result.dataset_name, result.metric_name)
    assert not re.search(r"(?<![\w.-])-0(\.0+)?(?![\d.])", card.content)
    check_card(card.text, card.data.eval_results)  # headings unique
    for image in re.findall(r"\]\(([^)]+\.png)\)", card.text):
        assert (card.folder / image).is_file()
    assert "None" not in "".join(re.findall(r"^#+ .*$", card.text, flags=re.M))


PREVIOUS = BENCH / "previous-reference-models"  # runs on the reference models before their retraining


def test_repeated_measurements_keep_the_larger_run():
    def report(name):
        return json.loads((PREVIOUS / f"{name}.json").read_text())

    card = build_model_card("uformer-b-sidd", {"fidelity": [report("fidelity-uformer-ref-denoise25"),
                                                            report("fidelity-uformer-ref-denoise25-calibrated")]})
    metrics = {r.metric_name: r for r in card.data.eval_results}
    nystra = metrics["PSNR vs exact output (nystra)"]
    assert "19 images" in nystra.dataset_name and nystra.metric_value == 44.862  # not the 5-image run's 45.044
    assert "5 images" in metrics["PSNR vs exact output (nystra-w64-paper)"].dataset_name  # only that run has it
    assert "##### 5 held-out images" in card.text and "##### 19 held-out images" in card.text
    swinir = build_model_card("swinir-x2", {"fidelity": [report("fidelity-swinir-ref-x2"),
                                                         report("fidelity-swinir-ref-x2-enlarged")]}).text
    assert "not repeated (nystra-w32-paper, nystra-w32)" in swinir


def test_repeated_input_sizes_are_numbered(rendered):
    swinir = rendered["swinir-x2"].text
    assert "##### Input 256×256, run 1 of 3" in swinir and "##### Input 256×256, run 3 of 3" in swinir


def test_unmeasured_card_says_so_in_its_first_lines():
    first, second = _body_after_title(build_model_card("swinir-x4"))[:2]
    assert first.endswith("not measured.") and second.startswith("**Quality:** not measured")


def test_check_card_refuses_what_must_not_happen():
    with pytest.raises(ValueError, match="repeated heading"):
        check_card("#### CPU\n\ntext\n\n#### CPU\n", None)
    with pytest.raises(ValueError, match="negative zero"):
        check_card("| (d) nystra | -0.000 |", None)
    check_card("```python\n# a comment\n# a comment\n```\n| -0.002 | 2026-01-05 |", None)


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.json")), ids=lambda p: p.stem)
def test_plots_have_no_empty_or_unnamed_panels(path):
    report = json.loads(path.read_text())
    kind = str(report.get("schema", ""))
    if kind.startswith("nystra_hub.bench/"):
        fig = draw_bench([report])
    elif kind.startswith("nystra_hub.fidelity/"):
        fig = draw_fidelity([report])
    else:
        pytest.skip(f"{path.name} is not a bench or fidelity report")
    assert fig.axes
    for ax in fig.axes:
        assert ax.has_data(), ax.get_title()
        assert "None" not in ax.get_title()


def test_summary_takes_the_gpu_run_when_given():
    gpu = json.loads((BENCH / "gpu" / "gpu-bench-h200.json").read_text())
    cpu = json.loads((BENCH / "bench-swinir-x2-cpu.json").read_text())
    card = build_model_card("swinir-x2", {"bench": [cpu], "gpu": [gpu, gpu]})
    first = _body_after_title(card)[0]
    assert "on GPU (NVIDIA H200, bfloat16)" in first and "GPU not measured" not in first
    check_card(card.text, card.data.eval_results)  # two reports of one GPU: numbered headings
