"""The plots of the measurement commands and the model cards (PNG through matplotlib's Agg backend), redrawn from
their JSON.

Every figure shows one run on one machine: a row of :func:`draw_bench` is one bench report, :func:`draw_route_bars`
one bench report and :func:`draw_gpu_bars` one case of one GPU report; no line joins points of different runs. Every
arm has one colour wherever it is drawn (:data:`PALETTE`, through :func:`arm_colour`), titles are wrapped to their
panel instead of cut, and legends sit below the axes, never on the data. Every panel is drawn only when the JSON
has data for it (a run without the enlarged-window baseline (c) gets no "speedup vs (c)" panel, a fidelity run
without a landmark sweep gets only its per-arm panel), so no figure has an empty or mislabelled axis; the
``draw_*`` functions return the figure for such checks.

matplotlib is an optional dependency (``nystra_hub[bench]``): it is imported when a plot is drawn.
"""

from __future__ import annotations

import os
import re
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path

# a panel: (title, draw(ax)); only panels with data are made
Panel = tuple[str, Callable]

# One colour per arm in every plot of every card. Windows are spelled W (nystra-w32-paper and nystra-w64-paper are
# one arm: the paper's recipe at the enlarged window of each architecture); a landmark sweep's points take their
# arm's colour; GPU arms are named without their precision suffix (fp32/bf16/fp16: told apart by hatching).
PALETTE = {
    "exact": "#1f77b4",
    "sdpa": "#aec7e8",
    "flex": "#393b79",
    "nystra": "#ff7f0e",
    "spandrel": "#555555",
    "compile": "#9467bd",
    "onnxruntime": "#8c564b",
    "openvino": "#d62728",
    "onnxruntime-official": "#c49c94",
    "openvino-official": "#ff9896",
    "openvino-bf16": "#e377c2",
    "openvino-official-bf16": "#f7b6d2",
    "exact-wW-paper": "#17becf",
    "exact-wW": "#9edae5",
    "nystra-wW-paper": "#bcbd22",
    "nystra-wW": "#dbdb8d",
    "nystra-wW-maskdrop": "#ffbb78",
    "nystromformer": "#2ca02c",
    "performer": "#98df8a",
    "nystromformer-wW-paper": "#637939",
    "performer-wW-paper": "#c5b0d5",
    "nystra-biaspooled-maskdrop": "#fdae6b",
    "nystra-biasdrop-maskexact": "#e6550d",
    "nystra-biasdrop-maskdrop": "#a63603",
    "calibrated": "#6b6ecf",
}
_SPARE = ("#843c39", "#7b4173", "#8ca252", "#bd9e39", "#e7969c", "#de9ed6", "#cedb9c", "#e7cb94")
GPU_PRECISIONS = ("fp32", "bf16", "fp16")
_HATCH = {"fp32": "", "bf16": "//", "fp16": ".."}


def arm_family(name: str) -> str:
    """The palette key of an arm: windows as W, a landmark-sweep point as its arm, a calibrated plan as one."""
    if name.startswith("calibrated-"):
        return "calibrated"
    family = re.sub(r"-w\d+", "-wW", name)
    return re.sub(r"-m\d+$", "", family)


def arm_colour(name: str) -> str:
    """The arm's colour in every plot (an arm outside :data:`PALETTE` gets a fixed spare colour from its name)."""
    family = arm_family(name)
    return PALETTE.get(family) or _SPARE[zlib.crc32(family.encode()) % len(_SPARE)]


def wrap_title(title: str, width: int = 48) -> str:
    """A title broken into lines of at most ``width`` characters: never cut at the panel's edge."""
    return "\n".join(textwrap.wrap(title, width, break_on_hyphens=False))


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG (parent folders created) and close it; the saved area grows to hold the
    legends below the axes."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _pyplot():
    """pyplot on the Agg backend (files only: no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(rows: list[list[Panel]], width: float, height: float = 4.5):
    """A figure with one row per entry of ``rows`` and one axis per panel (unused grid cells removed)."""
    columns = max(1, max(len(panels) for panels in rows))
    fig, axes = _pyplot().subplots(len(rows), columns, figsize=(width * columns, height * len(rows)), squeeze=False)
    for row_axes, panels in zip(axes, rows):
        for ax, (_, draw) in zip(row_axes, panels):
            draw(ax)
        for ax in row_axes[len(panels):]:
            ax.remove()
    return fig


def _legend_below(ax) -> None:
    """The legend under the axis (below its x label), never over the data."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), borderaxespad=0.0, ncol=2, frameon=False)


# -- bench -------------------------------------------------------------------------------------------------------
def _arm_label(name: str, arm: dict) -> str:
    return f"({arm['letter']}) {name}" if arm.get("letter") else name


def _bench_series(report: dict, value: Callable[[dict], float | None]) -> list[tuple[str, str, list]]:
    """(arm name, arm label, [(size, value)...]) for every arm with at least one value."""
    series = []
    for name, arm in report["arms"].items():
        points = [(r["size"], value(r["arms"].get(name, {}))) for r in report["results"]]
        points = [(s, v) for s, v in points if v]
        if points:
            series.append((name, _arm_label(name, arm), points))
    return series


def _size_axis(ax, sizes: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("input side (px)")
    ax.grid(True, alpha=0.3)


def _line_panel(series: list[tuple[str, str, list]], sizes: list[int], ylabel: str, title: str, unity: bool,
                legend: bool) -> Callable:
    def draw(ax) -> None:
        for name, label, points in series:
            ax.plot(*zip(*points), marker="o", label=label, color=arm_colour(name))
        values = [v for _, _, points in series for _, v in points]
        if not unity and max(values) >= 10 * min(values):  # log only over a decade: else no tick is labelled
            ax.set_yscale("log")
        if unity:
            ax.axhline(1.0, color="k", lw=0.8)
        _size_axis(ax, sizes)
        ax.set(ylabel=ylabel)
        ax.set_title(wrap_title(title), fontsize=10)
        if legend:
            _legend_below(ax)
    return draw


def _run_title(report: dict) -> str:
    env, settings = report["environment"], report["settings"]
    return (f"{report['model']['name']} on {env.get('device_name')} ({settings['threads']} threads), run of "
            f"{str(report.get('created', ''))[:10]}")


def bench_panels(report: dict) -> list[Panel]:
    """Median time per arm, then the speedups vs the references (a) and (c) the report has data for."""
    sizes = [r["size"] for r in report["results"]]
    refs = report.get("references", {})
    title = _run_title(report)
    panels: list[Panel] = []
    times = _bench_series(report, lambda e: e.get("median_s") and e["median_s"] * 1e3)
    if times:
        panels.append((title, _line_panel(times, sizes, "median time (ms)", title, unity=False, legend=True)))
    for letter in ("a", "c"):  # the model as trained, and the paper's baseline (spandrel's ratios are in the tables)
        if not refs.get(letter):
            continue
        key = f"{letter}:{refs[letter]}"
        speedups = _bench_series(report, lambda e, key=key: e.get("speedup", {}).get(key))
        if speedups:
            heading = f"speedup vs ({letter}) {refs[letter]}"
            panels.append((heading, _line_panel(speedups, sizes, "speedup", heading, unity=True, legend=not times)))
    return panels


def draw_bench(reports: list[dict]):
    """The bench figure: one row per report, i.e. per run (see :func:`bench_panels`)."""
    return _grid([bench_panels(report) for report in reports], width=6.5)


def plot_bench(reports: list[dict], path: str | os.PathLike) -> Path:
    """Median time vs size per arm and the speedups vs the reference arms, one row per report (Agg backend)."""
    return save_figure(draw_bench(reports), path)


def _bar_rows(ax, rows: list[tuple[str, str, float, str]], xlabel: str, title: str) -> None:
    """Horizontal bars (label, arm colour, value, hatch), top to bottom, each with its value written beside it."""
    positions = range(len(rows))
    ax.barh(positions, [v for _, _, v, _ in rows], color=[c for _, c, _, _ in rows],
            hatch=[h for *_, h in rows], edgecolor="white")
    ax.set_yticks(list(positions), ["\n".join(textwrap.wrap(label, 30)) for label, *_ in rows], fontsize=8)
    ax.invert_yaxis()
    top = max(v for _, _, v, _ in rows)
    for y, (_, _, value, _) in enumerate(rows):
        ax.text(value + top * 0.01, y, _seconds(value), va="center", fontsize=7)
    ax.set_xlim(0, top * 1.22)  # room for the value of the longest bar
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_title(wrap_title(title), fontsize=10)


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1e3:.0f} ms" if value >= 0.01 else f"{value * 1e3:.1f} ms"


def route_bar_panels(report: dict) -> list[Panel]:
    """One panel per input size of one bench run: the median time of every arm timed there."""
    panels: list[Panel] = []
    for result in report["results"]:
        rows = [(_arm_label(name, report["arms"].get(name, {})), arm_colour(name), entry["median_s"], "")
                for name, entry in result["arms"].items() if entry.get("median_s")]
        if not rows:
            continue
        title = f"{_run_title(report)}: input {result['size']}×{result['size']}"

        def draw(ax, rows=rows, title=title) -> None:
            _bar_rows(ax, rows, "median time (s, lower is faster)", title)
        panels.append((title, draw))
    return panels


def draw_route_bars(report: dict):
    """Median time per arm of one bench run, one panel per input size (the cards' CPU speed plot)."""
    panels = route_bar_panels(report)
    height = 0.8 + 0.32 * max(len(r["arms"]) for r in report["results"])
    return _grid([panels], width=6.0, height=max(2.6, height))


def plot_route_bars(report: dict, path: str | os.PathLike) -> Path:
    return save_figure(draw_route_bars(report), path)


def gpu_bar_panels(report: dict, variant: str) -> list[Panel]:
    """One panel per input size of ``variant``'s case of one GPU report: the median time of every arm that ran,
    coloured by arm, hatched by precision (fp32 plain, bf16 //, fp16 ..)."""
    case = next((c for c in report["cases"] if c.get("variant") == variant), None)
    panels: list[Panel] = []
    for result in (case or {}).get("results", []):
        rows = []
        for name, entry in result.get("arms", {}).items():
            if not entry.get("median_s"):
                continue
            base, _, precision = name.rpartition("-")
            if precision not in GPU_PRECISIONS:
                base, precision = name, "fp32"
            rows.append((f"{base} ({precision})", arm_colour(base), entry["median_s"], _HATCH[precision]))
        if not rows:
            continue
        title = (f"{variant} on {report['environment'].get('device_name')}, run of {str(report['created'])[:10]}: "
                 f"input {result['size']}×{result['size']}")

        def draw(ax, rows=rows, title=title) -> None:
            _bar_rows(ax, rows, "median time (s, lower is faster)", title)
        panels.append((title, draw))
    return panels


def draw_gpu_bars(report: dict, variant: str):
    panels = gpu_bar_panels(report, variant)
    if not panels:
        raise ValueError(f"the GPU report has no timed arm of {variant}")
    rows = max(len(r.get("arms", {})) for c in report["cases"] if c.get("variant") == variant for r in c["results"])
    return _grid([panels], width=6.0, height=max(2.6, 0.8 + 0.32 * rows))


def plot_gpu_bars(report: dict, variant: str, path: str | os.PathLike) -> Path:
    return save_figure(draw_gpu_bars(report, variant), path)


# -- fidelity ----------------------------------------------------------------------------------------------------
def _sweep_points(report: dict, key: str) -> list[tuple[str, str, list]]:
    """(arm colour key, label, [(m, value)]) of the landmark sweeps the report ran."""
    arms, sweep = report["arms"], report.get("sweep", {})
    trained = sweep.get("landmarks_trained_window") or {}
    series = [("nystra", "nystra: trained window, bias pooled, mask exact", trained),
              ("nystra-wW-paper", f"nystra-w{sweep.get('enlarged_window')}-paper: window "
               f"{sweep.get('enlarged_window')}, paper form", sweep.get("landmarks_enlarged_window") or {})]
    out = []
    for family, label, mapping in series:
        pts = sorted((int(m), arms[name]) for m, name in mapping.items() if name in arms)
        values = [(m, a[key]) for m, a in pts if a.get(key) is not None]
        if values:
            out.append((family, label, values))
    return out


def _sweep_panel(report: dict, key: str, ylabel: str, title: str) -> Callable:
    arms = report["arms"]

    def draw(ax) -> None:
        ticks = set()
        for family, label, points in _sweep_points(report, key):
            ax.plot(*zip(*points), marker="o", label=label, color=arm_colour(family))
            ticks.update(m for m, _ in points)
        for name, style in (("exact", "-"), ("nystromformer", ":"), ("performer", ":")):
            value = arms.get(name, {}).get(key)
            if value is not None and not (name == "exact" and key == "psnr_vs_exact"):
                ax.axhline(value, ls=style, color=arm_colour(name), lw=1.2, label=f"{name} (trained window)")
        if key == "psnr_gt":
            paper_exact = next((n for n, a in arms.items() if a["config"].get("letter") == "c"), None)
            if paper_exact and arms[paper_exact].get("psnr_gt") is not None:
                ax.axhline(arms[paper_exact]["psnr_gt"], color=arm_colour(paper_exact), ls="--", lw=1.2,
                           label=paper_exact)
            baseline = report["input_baseline"]
            if baseline.get("psnr_gt") is not None:
                ax.axhline(baseline["psnr_gt"], color="0.6", ls="-.", lw=1, label=baseline["description"])
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.set(xlabel="landmarks m", ylabel=ylabel)
        ax.set_title(wrap_title(title), fontsize=10)
        _legend_below(ax)
    return draw


def _per_arm_deltas(report: dict) -> list[tuple[str, str, float]]:
    """(arm name, label, ΔPSNR vs GT) of every arm outside the landmark sweeps, exact excluded (0 by definition)."""
    sweep = report.get("sweep", {})
    swept = {*(sweep.get("landmarks_trained_window") or {}).values(),
             *(sweep.get("landmarks_enlarged_window") or {}).values()}
    rows = []
    for name, arm in report["arms"].items():
        if name == report.get("reference_arm", "exact") or name in swept or arm.get("delta_psnr_gt") is None:
            continue
        rows.append((name, _arm_label(name, arm.get("config", {})), arm["delta_psnr_gt"]))
    return rows


def _bar_panel(rows: list[tuple[str, str, float]], title: str) -> Callable:
    def draw(ax) -> None:
        names, labels, values = zip(*rows)
        # long arm names (a calibrated plan is named after its file) wrap instead of squeezing the panel
        labels = ["\n".join(textwrap.wrap(label, 28, break_on_hyphens=True)) for label in labels]
        positions = range(len(rows))
        ax.barh(positions, values, color=[arm_colour(name) for name in names])
        ax.set_yticks(list(positions), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0.0, color="k", lw=0.8)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlabel("ΔPSNR vs ground truth against the exact model (dB)")
        ax.set_title(wrap_title(title), fontsize=10)
    return draw


def fidelity_panels(report: dict) -> list[Panel]:
    """The landmark sweeps (PSNR vs the exact output, vs the ground truth) when the report ran them, and the
    per-arm quality change."""
    name, proto, n = report["model"]["name"], report["protocol"]["name"], len(report["images"])
    panels: list[Panel] = []
    if _sweep_points(report, "psnr_vs_exact"):
        title = f"{name}: fidelity to the exact model ({proto})"
        panels.append((title, _sweep_panel(report, "psnr_vs_exact", "PSNR vs exact output (dB)", title)))
    if _sweep_points(report, "psnr_gt"):
        title = f"{name}: quality ({n} held-out images)"
        panels.append((title, _sweep_panel(report, "psnr_gt", "PSNR vs ground truth (dB)", title)))
    deltas = _per_arm_deltas(report)
    if deltas:
        title = f"{name}: quality change per arm ({n} images, {proto})"
        panels.append((title, _bar_panel(deltas, title)))
    return panels


def draw_fidelity(reports: list[dict]):
    """The fidelity figure: one row per report (see :func:`fidelity_panels`)."""
    return _grid([fidelity_panels(report) for report in reports], width=6.5)


def plot_fidelity(reports: list[dict], path: str | os.PathLike) -> Path:
    """Quality vs landmarks (PSNR vs the exact output and vs ground truth) and per arm, one row per model."""
    return save_figure(draw_fidelity(reports), path)
