"""Run-folder charts: accuracy of the evaluated conditions."""
from __future__ import annotations

from pathlib import Path

NAMES = {"random": "random", "selection_only": "DC3 selection", "dc3": "DC3 + compensation"}


def condition_names(compensated: bool = True) -> dict[str, str]:
    """Display names of the evaluated conditions. With compensator "none" (the presets' default
    since issue 26) the condensed set is the selection itself, and is named so."""
    return NAMES if compensated else {**NAMES, "dc3": "DC3 selection"}


def plot_accuracy(evals: dict, path: str | Path, title: str, names: dict | None = None) -> Path:
    """Bar chart of final and best top-1 per condition ({name: {final_mean, final_std,
    best_mean, best_std}}); error bars are the std over seeds, drawn only when it is > 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = names or NAMES
    names = [k for k in ("random", "selection_only", "dc3") if k in evals] + \
        sorted(k for k in evals if k not in NAMES)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.6), dpi=120)
    for dx, kind, color in ((-0.18, "final", "#4c72b0"), (0.18, "best", "#dd8452")):
        means = [evals[n][f"{kind}_mean"] for n in names]
        stds = [evals[n].get(f"{kind}_std") or 0.0 for n in names]
        bars = ax.bar(x + dx, means, 0.36, color=color, label=f"{kind} top-1",
                      yerr=stds if any(stds) else None, capsize=3)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(x, [labels.get(n, n) for n in names])
    ax.set_ylabel("top-1 on val (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_ylim(0, max(10.0, 1.25 * max(evals[n]["best_mean"] for n in names)))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
