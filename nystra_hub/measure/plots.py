"""The plots of the measurement commands (PNG through matplotlib's Agg backend), redrawn from their JSON.

matplotlib is an optional dependency (``nystra_hub[bench]``): it is imported when a plot is drawn.
"""

from __future__ import annotations

import os
from pathlib import Path


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


def plot_bench(reports: list[dict], path: str | os.PathLike) -> Path:
    """Median time vs size per arm, and speedups vs (a) and (c), one row per report (Agg backend)."""
    fig, axes = _pyplot().subplots(len(reports), 3, figsize=(16, 4.5 * len(reports)), squeeze=False)
    for row, report in zip(axes, reports):
        sizes = [r["size"] for r in report["results"]]
        refs = report.get("references", {})
        for name, arm in report["arms"].items():
            label = f"({arm['letter']}) {name}" if arm.get("letter") else name
            med = [r["arms"].get(name, {}).get("median_s") for r in report["results"]]
            pts = [(s, m * 1e3) for s, m in zip(sizes, med) if m]
            if pts:
                row[0].plot(*zip(*pts), marker="o", label=label)
            for ax, letter in ((row[1], "a"), (row[2], "c")):
                key = f"{letter}:{refs.get(letter)}"
                sp = [(s, r["arms"].get(name, {}).get("speedup", {}).get(key)) for s, r in
                      zip(sizes, report["results"])]
                sp = [(s, v) for s, v in sp if v]
                if sp:
                    ax.plot(*zip(*sp), marker="o", label=label)
        env = report["environment"]
        title = f"{report['model']['name']} on {env.get('device_name')} ({report['settings']['threads']} threads)"
        row[0].set(xscale="log", yscale="log", xlabel="input side (px)", ylabel="median time (ms)", title=title)
        row[1].set(xscale="log", xlabel="input side (px)", ylabel="speedup", title=f"vs (a) {refs.get('a')}")
        row[2].set(xscale="log", xlabel="input side (px)", ylabel="speedup", title=f"vs (c) {refs.get('c')}")
        for ax in row:
            ax.set_xticks(sizes, [str(s) for s in sizes])
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
        row[1].axhline(1.0, color="k", lw=0.8)
        row[2].axhline(1.0, color="k", lw=0.8)
        row[0].legend(fontsize=7)
    return save_figure(fig, path)



def plot_fidelity(reports: list[dict], path: str | os.PathLike) -> Path:
    """Quality vs landmarks (PSNR vs the exact output and vs ground truth), one row per model."""
    fig, axes = _pyplot().subplots(len(reports), 2, figsize=(13, 4.5 * len(reports)), squeeze=False)
    for row, report in zip(axes, reports):
        arms = report["arms"]
        sweep = report["sweep"]
        series = [("trained window, bias pooled, mask exact", sweep["landmarks_trained_window"]),
                  (f"window {sweep['enlarged_window']}, paper form", sweep["landmarks_enlarged_window"])]
        for label, mapping in series:
            pts = sorted((int(m), arms[name]) for m, name in mapping.items() if name in arms)
            pts_exact = [(m, a["psnr_vs_exact"]) for m, a in pts if a.get("psnr_vs_exact") is not None]
            pts_gt = [(m, a["psnr_gt"]) for m, a in pts if a.get("psnr_gt") is not None]
            if pts_exact:
                row[0].plot(*zip(*pts_exact), marker="o", label=label)
            if pts_gt:
                row[1].plot(*zip(*pts_gt), marker="o", label=label)
        for name, style in (("exact", "k-"), ("nystromformer", "C2:"), ("performer", "C3:")):
            if arms.get(name, {}).get("psnr_gt") is not None:
                row[1].axhline(arms[name]["psnr_gt"], ls=style[2:] or "-", color=style[:2] if style[0] == "C"
                               else "k", lw=1, label=f"{name} (trained window)")
            if name != "exact" and arms.get(name, {}).get("psnr_vs_exact") is not None:
                row[0].axhline(arms[name]["psnr_vs_exact"], ls=":", color=style[:2], lw=1,
                               label=f"{name} (trained window)")
        paper_exact = next((n for n, a in arms.items() if a["config"].get("letter") == "c"), None)
        if paper_exact and arms[paper_exact].get("psnr_gt") is not None:
            row[1].axhline(arms[paper_exact]["psnr_gt"], color="0.5", ls="--", lw=1, label=f"{paper_exact}")
        if report["input_baseline"].get("psnr_gt") is not None:
            row[1].axhline(report["input_baseline"]["psnr_gt"], color="0.7", ls="-.", lw=1,
                           label=report["input_baseline"]["description"])
        name = report["model"]["name"]
        proto = report["protocol"]["name"]
        row[0].set(xscale="log", xlabel="landmarks m", ylabel="PSNR vs exact output (dB)",
                   title=f"{name}: fidelity to the exact model ({proto})")
        row[1].set(xscale="log", xlabel="landmarks m", ylabel="PSNR vs ground truth (dB)",
                   title=f"{name}: quality ({len(report['images'])} held-out images)")
        for ax in row:
            ticks = sorted({int(m) for _, mp in series for m in mp})
            if ticks:
                ax.set_xticks(ticks, [str(t) for t in ticks])
                ax.minorticks_off()
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
    return save_figure(fig, path)
