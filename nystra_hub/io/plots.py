"""The plots of the measurement commands (PNG through matplotlib's Agg backend), redrawn from their JSON.

Every panel is drawn only when the JSON has data for it (a run without the enlarged-window baseline (c) gets no
"speedup vs (c)" panel, a fidelity run without a landmark sweep gets only its per-arm panel), so no figure has an
empty or mislabelled axis; :func:`draw_bench` and :func:`draw_fidelity` return the figure for such checks.

matplotlib is an optional dependency (``nystra_hub[bench]``): it is imported when a plot is drawn.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

# a panel: (title, draw(ax)); only panels with data are made
Panel = tuple[str, Callable]


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure as PNG (parent folders created) and close it; shared by bench and fidelity."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pyplot():
    """pyplot on the Agg backend (files only: no display is needed or used)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(rows: list[list[Panel]], width: float):
    """A figure with one row per entry of ``rows`` and one axis per panel (unused grid cells removed)."""
    columns = max(1, max(len(panels) for panels in rows))
    fig, axes = _pyplot().subplots(len(rows), columns, figsize=(width * columns, 4.5 * len(rows)), squeeze=False)
    for row_axes, panels in zip(axes, rows):
        for ax, (_, draw) in zip(row_axes, panels):
            draw(ax)
        for ax in row_axes[len(panels):]:
            ax.remove()
    return fig


# -- bench -------------------------------------------------------------------------------------------------------
def _arm_label(name: str, arm: dict) -> str:
    return f"({arm['letter']}) {name}" if arm.get("letter") else name


def _bench_series(report: dict, value: Callable[[dict], float | None]) -> list[tuple[str, list]]:
    """(arm label, [(size, value)...]) for every arm with at least one value."""
    series = []
    for name, arm in report["arms"].items():
        points = [(r["size"], value(r["arms"].get(name, {}))) for r in report["results"]]
        points = [(s, v) for s, v in points if v]
        if points:
            series.append((_arm_label(name, arm), points))
    return series


def _size_axis(ax, sizes: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("input side (px)")
    ax.grid(True, alpha=0.3)


def _line_panel(series: list[tuple[str, list]], sizes: list[int], ylabel: str, title: str, unity: bool,
                legend: bool) -> Callable:
    def draw(ax) -> None:
        import matplotlib  # optional dependency, imported by _grid before any panel is drawn

        colors = matplotlib.colormaps["tab20"].colors  # dark shades first, then light: 20 arms, 20 colours
        for i, (label, points) in enumerate(series):
            ax.plot(*zip(*points), marker="o", label=label, color=colors[(2 * i) % 20 + (i // 10) % 2])
        values = [v for _, points in series for _, v in points]
        if not unity and max(values) >= 10 * min(values):  # log only over a decade: else no tick is labelled
            ax.set_yscale("log")
        if unity:
            ax.axhline(1.0, color="k", lw=0.8)
        _size_axis(ax, sizes)
        ax.set(ylabel=ylabel, title=title)
        if legend:
            ax.legend(fontsize=7)
    return draw


def bench_panels(report: dict) -> list[Panel]:
    """Median time per arm, then the speedups vs the references (a) and (c) the report has data for."""
    sizes = [r["size"] for r in report["results"]]
    refs = report.get("references", {})
    env = report["environment"]
    title = f"{report['model']['name']} on {env.get('device_name')} ({report['settings']['threads']} threads)"
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
    """The bench figure: one row per report (see :func:`bench_panels`)."""
    return _grid([bench_panels(report) for report in reports], width=5.5)


def plot_bench(reports: list[dict], path: str | os.PathLike) -> Path:
    """Median time vs size per arm and the speedups vs the reference arms, one row per report (Agg backend)."""
    return save_figure(draw_bench(reports), path)


# -- fidelity ----------------------------------------------------------------------------------------------------
def _sweep_points(report: dict, key: str) -> list[tuple[str, list, list]]:
    """(label, [(m, PSNR vs exact)], [(m, PSNR vs GT)]) of the landmark sweeps the report ran."""
    arms, sweep = report["arms"], report.get("sweep", {})
    series = [("trained window, bias pooled, mask exact", sweep.get("landmarks_trained_window") or {}),
              (f"window {sweep.get('enlarged_window')}, paper form", sweep.get("landmarks_enlarged_window") or {})]
    out = []
    for label, mapping in series:
        pts = sorted((int(m), arms[name]) for m, name in mapping.items() if name in arms)
        values = [(m, a[key]) for m, a in pts if a.get(key) is not None]
        if values:
            out.append((label, values))
    return out


def _sweep_panel(report: dict, key: str, ylabel: str, title: str) -> Callable:
    arms = report["arms"]

    def draw(ax) -> None:
        ticks = set()
        for label, points in _sweep_points(report, key):
            ax.plot(*zip(*points), marker="o", label=label)
            ticks.update(m for m, _ in points)
        for name, style in (("exact", "k-"), ("nystromformer", "C2:"), ("performer", "C3:")):
            value = arms.get(name, {}).get(key)
            if value is not None and not (name == "exact" and key == "psnr_vs_exact"):
                ax.axhline(value, ls=style[2:] or "-", color=style[:2] if style[0] == "C" else "k", lw=1,
                           label=f"{name} (trained window)")
        if key == "psnr_gt":
            paper_exact = next((n for n, a in arms.items() if a["config"].get("letter") == "c"), None)
            if paper_exact and arms[paper_exact].get("psnr_gt") is not None:
                ax.axhline(arms[paper_exact]["psnr_gt"], color="0.5", ls="--", lw=1, label=paper_exact)
            baseline = report["input_baseline"]
            if baseline.get("psnr_gt") is not None:
                ax.axhline(baseline["psnr_gt"], color="0.7", ls="-.", lw=1, label=baseline["description"])
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
        ax.minorticks_off()
        ax.grid(True, alpha=0.3)
        ax.set(xlabel="landmarks m", ylabel=ylabel, title=title)
        ax.legend(fontsize=7)
    return draw


def _per_arm_deltas(report: dict) -> list[tuple[str, float]]:
    """(arm label, ΔPSNR vs GT) of every arm outside the landmark sweeps, exact excluded (0 by definition)."""
    sweep = report.get("sweep", {})
    swept = {*(sweep.get("landmarks_trained_window") or {}).values(),
             *(sweep.get("landmarks_enlarged_window") or {}).values()}
    rows = []
    for name, arm in report["arms"].items():
        if name == report.get("reference_arm", "exact") or name in swept or arm.get("delta_psnr_gt") is None:
            continue
        rows.append((_arm_label(name, arm.get("config", {})), arm["delta_psnr_gt"]))
    return rows


def _bar_panel(rows: list[tuple[str, float]], title: str) -> Callable:
    def draw(ax) -> None:
        labels, values = zip(*rows)
        # long arm names (a calibrated plan is named after its file) wrap instead of squeezing the panel
        labels = ["\n".join(textwrap.wrap(label, 28, break_on_hyphens=True)) for label in labels]
        positions = range(len(rows))
        ax.barh(positions, values, color=["C3" if v < 0 else "C2" for v in values])
        ax.set_yticks(list(positions), labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0.0, color="k", lw=0.8)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set(xlabel="ΔPSNR vs ground truth against the exact model (dB)", title=title)
    return draw


def fidelity_panels(report: dict) -> list[Panel]:
    """The landmark sweeps (PSNR vs the exact output, vs the ground truth) when the report ran them, and the
    per-arm quality change."""
    name, proto = report["model"]["name"], report["protocol"]["name"]
    panels: list[Panel] = []
    if _sweep_points(report, "psnr_vs_exact"):
        title = f"{name}: fidelity to the exact model ({proto})"
        panels.append((title, _sweep_panel(report, "psnr_vs_exact", "PSNR vs exact output (dB)", title)))
    if _sweep_points(report, "psnr_gt"):
        title = f"{name}: quality ({len(report['images'])} held-out images)"
        panels.append((title, _sweep_panel(report, "psnr_gt", "PSNR vs ground truth (dB)", title)))
    deltas = _per_arm_deltas(report)
    if deltas:
        title = f"{name}: quality change per arm ({len(report['images'])} images, {proto})"
        panels.append((title, _bar_panel(deltas, title)))
    return panels


def draw_fidelity(reports: list[dict]):
    """The fidelity figure: one row per report (see :func:`fidelity_panels`)."""
    return _grid([fidelity_panels(report) for report in reports], width=6.5)


def plot_fidelity(reports: list[dict], path: str | os.PathLike) -> Path:
    """Quality vs landmarks (PSNR vs the exact output and vs ground truth) and per arm, one row per model."""
    return save_figure(draw_fidelity(reports), path)
